"""Factories and fakes for the runtime-bounds tests (tests/reliability/test_bounds_*.py)."""

from __future__ import annotations

from collections.abc import Callable

from llmsim.costmodel.base import StepBatch, StepCost
from llmsim.instance import CheckLevel, Instance, StepOverheads, StepTimeModel
from llmsim.kvcache import KVCacheManager
from llmsim.metrics import Recorder
from llmsim.router import RoundRobin
from llmsim.scheduler import Scheduler, SchedulerConfig
from llmsim.sim import Simulation
from llmsim.trace.record import Request

MS = 1_000_000
S = 1_000_000_000
DAY_NS = 86_400 * S


class FnCost:
    """A cost model from a plain function ``StepBatch -> duration_ns`` (any value, so tests
    can return NaN, floats, negative or huge numbers)."""

    def __init__(self, fn: Callable[[StepBatch], object]) -> None:
        self.fn = fn

    def step_cost(self, batch: StepBatch) -> StepCost:
        return StepCost(duration_ns=self.fn(batch))  # type: ignore[arg-type]


def make_request(rid: str, *, arrival_ns: int = 0, prompt: int = 8, output: int = 4,
                 **kw) -> Request:
    """A request without token ids (unique content)."""
    return Request(request_id=rid, arrival_ns=arrival_ns, input_tokens=prompt,
                   output_tokens=output, **kw)


def make_instance(*, cost=None, num_blocks: int = 64, block_size: int = 4,
                  max_num_seqs: int = 8, budget: int = 64, capture_sizes: tuple[int, ...] = (),
                  async_scheduling: bool = False, instance_id: int = 0) -> Instance:
    """A small instance, constant 10 ms steps by default, full invariant checks."""
    kv = KVCacheManager(num_blocks, block_size, True)
    cfg = SchedulerConfig(max_num_seqs=max_num_seqs, max_num_batched_tokens=budget,
                          block_size=block_size, reserve_full_isl=False)
    over = StepOverheads(cpu_step_ns=0, cpu_per_seq_ns=0, cudagraph_padding=bool(capture_sizes))
    st = StepTimeModel(cost or FnCost(lambda _b: 10 * MS), over,
                       cudagraph_capture_sizes=capture_sizes)
    return Instance(instance_id=instance_id, name="fake", scheduler=Scheduler(cfg, kv),
                    step_time=st, async_scheduling=async_scheduling, check=CheckLevel.FULL)


def simulate(requests: list[Request], instances: list[Instance] | None = None, *,
             router=None) -> tuple[Recorder, Simulation]:
    """Run ``requests`` (default: one fresh instance); returns the recorder and the loop."""
    insts = instances if instances is not None else [make_instance()]
    rec = Recorder(requests, keep_steps=True)
    sim = Simulation(requests, insts, router or RoundRobin(), rec)
    sim.run()
    return rec, sim
