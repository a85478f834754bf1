"""MoE DP lock-step ranks (llmsim/sim/lockstep.py): event log, DP padding, dummy passes,
the 32-step wave check."""

from __future__ import annotations

import pytest

from llmsim.costmodel.base import StepBatch, StepCost
from llmsim.errors import InvariantError
from llmsim.instance import Instance, StepOverheads, StepTimeModel
from llmsim.kvcache import KVCacheManager
from llmsim.metrics import Recorder
from llmsim.router import RoundRobin
from llmsim.scheduler import Scheduler, SchedulerConfig
from llmsim.sim.lockstep import GLOBAL_IDLE_CHECK_STEPS, LockstepGroup, LockstepSimulation
from llmsim.trace.record import Request

MS = 1_000_000


class TokenCost:
    """1 ms per token computed (prefill tokens + decodes)."""

    def step_cost(self, batch: StepBatch) -> StepCost:
        tokens = sum(p.num_new_tokens for p in batch.prefills) + len(batch.decode_context_lens)
        return StepCost(duration_ns=tokens * MS)


def _instance(i: int, capture: tuple[int, ...] = ()) -> Instance:
    kv = KVCacheManager(64, 4, True)
    cfg = SchedulerConfig(max_num_seqs=8, max_num_batched_tokens=64, block_size=4,
                          enable_prefix_caching=True)
    over = StepOverheads(cpu_step_ns=0, cpu_per_seq_ns=0, cudagraph_padding=bool(capture))
    st = StepTimeModel(TokenCost(), over, cudagraph_capture_sizes=capture)
    return Instance(instance_id=i, name="fake", scheduler=Scheduler(cfg, kv), step_time=st,
                    async_scheduling=False)


def _req(rid: str, t_ms: float, prompt: int, output: int, base: int) -> Request:
    return Request(request_id=rid, arrival_ns=int(t_ms * MS), input_tokens=prompt,
                   output_tokens=output, input_token_ids=tuple(base + k for k in range(prompt)))


def _run(requests: list[Request], capture: tuple[int, ...] = ()
         ) -> tuple[LockstepGroup, Recorder, list[Instance]]:
    insts = [_instance(0, capture), _instance(1, capture)]
    group = LockstepGroup(insts, keep_log=True)
    rec = Recorder(requests, keep_steps=True)
    LockstepSimulation(requests, insts, RoundRobin(), rec, groups=[group]).run()
    return group, rec, insts


def test_two_rank_lockstep_log_with_dummy_passes_until_the_wave_check() -> None:
    # one request on rank 0: rank 1 runs 1-token dummy passes beside it, and both keep
    # running dummies until the global-idle check at group step 32
    group, rec, insts = _run([_req("r0", 0, 8, 3, 100)])
    assert group.log is not None
    log = [(s.start_ns / MS, s.end_ns / MS, s.tokens, s.run_tokens) for s in group.log]
    assert log[:4] == [(0.0, 8.0, (8, 0), (8, 1)), (8.0, 9.0, (1, 0), (1, 1)),
                       (9.0, 10.0, (1, 0), (1, 1)), (10.0, 11.0, (0, 0), (1, 1))]
    assert len(log) == GLOBAL_IDLE_CHECK_STEPS  # steps 3..31 are dummy-only
    assert log[-1][1] == 10.0 + (GLOBAL_IDLE_CHECK_STEPS - 3)
    assert group.num_dummy_passes == 3 + 2 * (GLOBAL_IDLE_CHECK_STEPS - 3)
    assert (insts[0].num_steps, insts[1].num_steps) == (3, 0)
    assert rec.num_finished == 1
    assert not group.wave_active


def test_both_ranks_share_each_step_time_the_slowest_rank_sets_it() -> None:
    # r0 -> rank 0 (prompt 12), r1 -> rank 1 (prompt 4): the prefill step lasts 12 ms on both
    group, rec, insts = _run([_req("r0", 0, 12, 2, 100), _req("r1", 0, 4, 2, 900)])
    assert group.log is not None
    first = group.log[0]
    assert (first.tokens, first.rank_ns, first.end_ns) == ((12, 4), (12 * MS, 4 * MS), 12 * MS)
    steps = rec.tables()[3]  # per-instance step rows: both ranks' steps start and end together
    assert steps["instance_id"].tolist() == [0, 1, 0, 1]
    assert steps.groupby("step")["end_s"].nunique().tolist() == [1, 1]
    assert steps.groupby("step")["start_s"].nunique().tolist() == [1, 1]
    assert steps["end_s"].tolist()[::2] == [0.012, 0.013]
    assert insts[0].num_steps == insts[1].num_steps == 2


def test_dp_padding_to_the_largest_graph_size_and_none_when_a_rank_is_eager() -> None:
    capture = (1, 2, 4, 8, 16)
    # 5 tokens on rank 0 pad to 8; the idle rank's dummy pass pads to 8 as well
    group, _, _ = _run([_req("r0", 0, 5, 2, 100)], capture)
    assert group.log is not None
    assert group.log[0].run_tokens == (8, 8)
    assert group.log[0].rank_ns == (8 * MS, 8 * MS)
    assert group.log[1].run_tokens == (1, 1)  # a decode and a dummy: graph size 1
    # 20 tokens > 16 (largest capture size): no rank is padded, all run eagerly
    group, _, _ = _run([_req("r0", 0, 20, 2, 100)], capture)
    assert group.log is not None
    assert group.log[0].run_tokens == (20, 1)
    assert group.log[0].rank_ns == (20 * MS, 1 * MS)


def test_a_request_after_the_wave_ended_starts_a_new_wave() -> None:
    late = 1000.0  # ms, long after the first wave's 32 steps
    group, rec, insts = _run([_req("r0", 0, 4, 2, 100), _req("r1", late, 4, 2, 900)])
    assert group.log is not None
    starts = [s.start_ns for s in group.log]
    assert starts[GLOBAL_IDLE_CHECK_STEPS] == int(late * MS)
    assert len(group.log) == 2 * GLOBAL_IDLE_CHECK_STEPS
    assert rec.num_finished == 2
    assert (insts[0].num_steps, insts[1].num_steps) == (2, 2)


def test_a_request_no_rank_can_ever_schedule_ends_the_run_with_an_error() -> None:
    # 400 prompt tokens need 100 blocks of 4; each rank has 64: the run must not spin on
    # dummy passes forever, it ends and reports the unfinished request
    with pytest.raises(InvariantError, match="1 unfinished requests"):
        _run([_req("r0", 0, 400, 2, 100)])
