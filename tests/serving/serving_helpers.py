"""Factories and fakes for the serving-loop tests (imported by tests/serving/test_*.py)."""

from __future__ import annotations

import zlib
from collections.abc import Callable

from llmsim.costmodel.base import StepBatch, StepCost
from llmsim.instance import CheckLevel, Instance, StepOverheads, StepTimeModel
from llmsim.kvcache import KVCacheManager
from llmsim.metrics import Recorder
from llmsim.router import RoundRobin
from llmsim.scheduler import Scheduler, SchedulerConfig
from llmsim.sim import Simulation
from llmsim.trace.record import Request, Trace

MS = 1_000_000


class FnCost:
    """A cost model from a plain function ``StepBatch -> duration_ns``."""

    def __init__(self, fn: Callable[[StepBatch], int]) -> None:
        self.fn = fn
        self.calls: list[StepBatch] = []

    def step_cost(self, batch: StepBatch) -> StepCost:
        self.calls.append(batch)
        return StepCost(duration_ns=int(self.fn(batch)))


def const_cost(ns: int = 10 * MS) -> FnCost:
    """Every step takes ``ns``."""
    return FnCost(lambda _b: ns)


def make_request(rid: str, *, arrival_ms: float = 0, prompt: int = 8, output: int = 4,
                 ids: tuple[int, ...] | None = None, **kw) -> Request:
    """A request; ``ids`` are prompt token ids (default: unique per request id)."""
    if ids is None:
        base = 1000 * (zlib.crc32(rid.encode()) % 10_000 + 1)
        ids = tuple(base + i for i in range(prompt))
    return Request(request_id=rid, arrival_ns=int(arrival_ms * MS), input_tokens=prompt,
                   output_tokens=output, input_token_ids=ids, **kw)


def make_requests(n: int, *, gap_ms: float = 0, prompt: int = 8, output: int = 4) -> list[Request]:
    """``n`` requests ``r0..r{n-1}`` arriving ``gap_ms`` apart."""
    return [make_request(f"r{i}", arrival_ms=i * gap_ms, prompt=prompt, output=output)
            for i in range(n)]


def make_instance(*, num_blocks: int = 64, block_size: int = 4, max_num_seqs: int = 8,
                  budget: int = 64, prefix: bool = True, async_scheduling: bool = False,
                  cost=None, cpu_step_ns: int = 0, cpu_per_seq_ns: int = 0,
                  capture_sizes: tuple[int, ...] = (), reserve_full_isl: bool = False,
                  instance_id: int = 0, check: CheckLevel = CheckLevel.FULL) -> Instance:
    """A small instance with a constant-cost fake and full invariant checks."""
    kv = KVCacheManager(num_blocks, block_size, prefix)
    cfg = SchedulerConfig(max_num_seqs=max_num_seqs, max_num_batched_tokens=budget,
                          block_size=block_size, enable_prefix_caching=prefix,
                          reserve_full_isl=reserve_full_isl)
    over = StepOverheads(cpu_step_ns=cpu_step_ns, cpu_per_seq_ns=cpu_per_seq_ns,
                         cudagraph_padding=bool(capture_sizes))
    st = StepTimeModel(cost or const_cost(), over, cudagraph_capture_sizes=capture_sizes)
    return Instance(instance_id=instance_id, name="fake", scheduler=Scheduler(cfg, kv),
                    step_time=st, async_scheduling=async_scheduling, check=check)


class LogRecorder(Recorder):
    """A recorder that also keeps a readable ``(time_ms, event)`` log of every step."""

    def __init__(self, *a, **kw) -> None:
        super().__init__(*a, **kw)
        self.log: list[tuple[float, str]] = []

    def on_step(self, rec) -> None:
        super().on_step(rec)
        plan = rec.plan
        t = rec.end_ns / MS
        for seq in plan.preempted:
            self.log.append((t, f"preempt {seq.request_id}"))
        parts = [f"{s.request_id}+{n}{'*' if e else ''}" for s, n, _c, e, _ep in plan.chunks]
        self.log.append((t, "step " + " ".join(parts)))
        for seq in rec.output.finished:
            self.log.append((t, f"finish {seq.request_id}"))


def simulate(requests: list[Request], instances: list[Instance] | Instance, *, router=None,
             handoff_policy=None) -> tuple[LogRecorder, Simulation]:
    """Run requests through instances; returns the log recorder and the simulation."""
    insts = [instances] if isinstance(instances, Instance) else instances
    rec = LogRecorder(requests, keep_steps=True)
    sim = Simulation(requests, insts, router or RoundRobin(), rec, handoff_policy=handoff_policy)
    sim.run()
    return rec, sim


def trace_of(requests: list[Request], source: str = "") -> Trace:
    """Wrap requests in a Trace."""
    return Trace(requests=tuple(requests), source=source, name="test")
