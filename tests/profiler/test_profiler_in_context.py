"""In-context timing: ops timed inside whole forward passes, a valid profile, the mode
recorded; the timing-mode switches; the closed-loop engine's operator spans and overhead
calibration."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch

from llmsim.cluster.parallel import ParallelConfig
from llmsim.costmodel.base import PrefillChunk, StepBatch
from llmsim.costmodel.decompose import step_ops
from llmsim.costmodel.profile_model import ProfileCostModel
from llmsim.errors import ConfigError
from llmsim.model.config import load_model_config
from llmsim.profile import read_profile
from llmsim.trace.record import Request
from llmsim.v1 import profile_pb2 as pb
from profiler import in_context, ops
from profiler.__main__ import main as profiler_main
from profiler.closed_loop.engine import Engine, EngineConfig
from profiler.closed_loop.run import fit_cpu_overheads
from profiler.grid import GridSpec
from profiler.sweep import SweepConfig, context_groups, run_sweep
from profiler.timing import TimingMode

TP1 = ParallelConfig(tensor_parallel_size=1)

FIXTURES = Path(__file__).parents[1] / "fixtures" / "profiler"
TINY_LLAMA = FIXTURES / "tiny-llama.json"
TINY_MOE = FIXTURES / "tiny-qwen3-moe.json"
GRID = GridSpec(name="tiny", tokens=(1, 8, 32), sequences=(1, 4), prefill_chunks=(0, 16),
                kv_prefill=(0, 32), n_decode=(0, 2), kv_decode=(16, 48), max_context=64,
                moe_tokens=(1, 4), active_experts=(2, 4), skew_n_decode=(2,))
LAYER_OPS = ["layernorm", "qkv_proj", "rotary_emb", "attention", "o_proj", "layernorm",
             "gate_up_proj", "act_fn", "down_proj"]


class _OrderClock(in_context.OpClock):
    """An OpClock on a fake clock (1 us per read) that also keeps the call order."""

    def __init__(self) -> None:
        ticks = itertools.count(0, 1000)
        super().__init__(lambda: next(ticks))
        self.order: list[str] = []

    def __call__(self, name, fn, *args):
        self.order.append(name)
        return super().__call__(name, fn, *args)


def test_forward_times_every_op_in_execution_order() -> None:
    model = load_model_config(TINY_LLAMA)
    runner = in_context.ContextRunner(model, 1, dtype=torch.float32,
                                      device=torch.device("cpu"), max_positions=64,
                                      num_layer_copies=3)
    # distinct weights per copy: the working set of a real multi-layer pass
    assert not torch.equal(runner.layers[0].qkv, runner.layers[1].qkv)
    s = runner.shapes
    meta = ops.build_attention_meta([(torch.arange(5), 5)], [torch.arange(8, 11)],
                                    torch.device("cpu"))
    caches = [torch.zeros(16, s.kv_heads, s.head_dim) for _ in range(3)]
    clock = _OrderClock()
    tokens = in_context.forward(s, runner.layers, runner.step_w, caches,
                                [c.clone() for c in caches], torch.arange(6),
                                torch.tensor([0, 1, 2, 3, 4, 2]), meta,
                                torch.tensor([4, 5]), clock=clock)
    assert tokens.shape == (2,)
    assert clock.order == (["embedding"] + LAYER_OPS * 3
                           + ["final_layernorm", "lm_head", "sampler"])
    # one span per call, each exactly one fake tick long
    assert len(clock.samples_ns["layernorm"]) == 6 and len(clock.samples_ns["lm_head"]) == 1
    assert all(v == 1000 for vals in clock.samples_ns.values() for v in vals)
    # untimed, the same call gives the same tokens
    again = in_context.forward(s, runner.layers, runner.step_w, caches,
                               [c.clone() for c in caches], torch.arange(6),
                               torch.tensor([0, 1, 2, 3, 4, 2]), meta, torch.tensor([4, 5]))
    assert torch.equal(tokens, again)


def test_layer_copies_follow_model_depth_capped_by_budget() -> None:
    model = load_model_config(TINY_LLAMA)  # 2 layers
    shapes = ops.layer_shapes(model, 1)
    per = in_context.layer_bytes(shapes, 4)
    # hidden 256, qkv 256x512, o 256x256, gate_up 256x1024, down 512x256, two norms
    assert per == 4 * (256 * 512 + 256 * 256 + 2 * 256 + 3 * 256 * 512)
    assert in_context.layer_copies(model, shapes, 4, budget_bytes=10 * per) == 2
    assert in_context.layer_copies(model, shapes, 4, budget_bytes=per) == 1
    assert in_context.layer_copies(model, shapes, 4, budget_bytes=1) == 1


@pytest.fixture(scope="module")
def ic_profile(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pb.Profile]:
    out = tmp_path_factory.mktemp("ic") / "ic.pb"
    cfg = SweepConfig(model=load_model_config(TINY_LLAMA), grid=GRID, warmup=1,
                      repetitions=5, energy=False)
    assert cfg.timing_mode() == TimingMode.IN_CONTEXT  # the CPU default
    run_sweep(cfg, out, progress=False)
    return out, read_profile(out)


def test_in_context_profile_has_every_op_and_pooled_samples(
        ic_profile: tuple[Path, pb.Profile]) -> None:
    _, prof = ic_profile
    model = load_model_config(TINY_LLAMA)
    want = [s.name for s in step_ops(model, TP1) if s.name != "all_reduce"]
    tables = {o.op: o for o in prof.tp[0].ops}
    assert list(tables) == want
    for o in tables.values():
        assert len(o.median_ns) > 0 and all(v > 0 for v in o.median_ns)
        assert all(lo <= med <= p90 <= hi for lo, med, p90, hi in
                   zip(o.min_ns, o.median_ns, o.p90_ns, o.max_ns, strict=True))
        assert all(lo <= mean <= hi for lo, mean, hi in zip(o.min_ns, o.mean_ns, o.max_ns, strict=True))
    # 5 timed passes x 2 layer copies per per-layer op (x2 calls for layernorm); 5 per step op
    assert set(tables["qkv_proj"].num_samples) == {10}
    assert set(tables["attention"].num_samples) == {10}
    assert set(tables["layernorm"].num_samples) == {20}
    assert set(tables["embedding"].num_samples) == {5}
    assert set(tables["lm_head"].num_samples) == {5}
    assert list(tables["qkv_proj"].axes[0].values) == [1, 8, 32]
    att = tables["attention"]
    assert sorted(zip(*(a.values for a in att.axes), strict=True)) == sorted(GRID.attention_points())
    assert len(prof.tp[0].skew.n) > 0


def test_in_context_mode_recorded_in_provenance(ic_profile: tuple[Path, pb.Profile]) -> None:
    _, prof = ic_profile
    p = prof.provenance
    assert p.method.timer == "perf_counter_ns (in-context)"
    assert "in-context" in p.method.notes and "layer copies" in p.method.notes
    assert p.attributes["timing_mode"] == "in-context"
    assert p.attributes["context_layer_copies"] == "tp1:2"
    assert int(p.attributes["context_budget_bytes"]) == in_context.DEFAULT_BUDGET_BYTES
    assert 0.0 < float(p.attributes["context_cpu_share_last_session"]) <= 1.05
    assert p.attributes["flush_cache_bytes"] == "0"
    assert int(p.attributes["context_preempted_spans_dropped_last_session"]) >= 0


def test_in_context_profile_replays(ic_profile: tuple[Path, pb.Profile]) -> None:
    path, _ = ic_profile
    cm = ProfileCostModel.from_path(path, model=load_model_config(TINY_LLAMA), )
    small = cm.step_cost(StepBatch(decode_context_lens=(20, 40)))
    big = cm.step_cost(StepBatch(prefills=(PrefillChunk(num_new_tokens=30),),
                                 decode_context_lens=(20, 40)))
    assert 0 < small.duration_ns < big.duration_ns
    assert big.breakdown_ns["attention"] > 0


def test_context_groups_cover_the_grid_once() -> None:
    model = load_model_config(TINY_MOE)  # qk_norm, moe_gate, moe
    cfg = SweepConfig(model=model, grid=GRID, energy=False)
    groups = context_groups(cfg, 1)
    keys = [(t.op, p) for _, pts in groups for t, p in pts]
    assert len(keys) == len(set(keys))
    ops_seen = {op for op, _ in keys}
    assert {"qk_norm", "moe_gate", "moe", "attention", "lm_head"} <= ops_seen
    for batch, pts in groups:
        for target, point in pts:
            if target.kind == pb.OP_KIND_DENSE:
                assert batch.num_tokens == point[0]
            elif target.kind == pb.OP_KIND_PER_SEQUENCE:
                assert len(batch.decode_lens) == point[0]
            elif target.op == "moe":
                assert (batch.num_tokens, batch.moe_active) == point
            else:
                pc, kvp, nd, kvd = point
                assert batch.prefills == (((pc, kvp),) if pc else ())
                assert batch.decode_lens == (kvd,) * nd


def test_in_context_moe_sweep(tmp_path: Path) -> None:
    grid = GridSpec(name="tiny", tokens=(1, 4), sequences=(1,), prefill_chunks=(0,),
                    kv_prefill=(0,), n_decode=(1,), kv_decode=(16,), max_context=32,
                    moe_tokens=(1, 4), active_experts=(2, 4))
    cfg = SweepConfig(model=load_model_config(TINY_MOE), grid=grid, warmup=0,
                      repetitions=2, energy=False)
    prof = run_sweep(cfg, tmp_path / "moe.pb", progress=False)
    moe = next(o for o in prof.tp[0].ops if o.op == "moe")
    assert list(zip(moe.axes[0].values, moe.axes[1].values, strict=True)) == [(1, 2), (4, 2), (4, 4)]
    assert all(v > 0 for v in moe.median_ns)


def test_timing_mode_switches(tmp_path: Path) -> None:
    model = load_model_config(TINY_LLAMA)
    with pytest.raises(ConfigError, match="CPU-only"):
        SweepConfig(model=model, grid=GRID, device="cuda",
                    timing=TimingMode.IN_CONTEXT).validate()
    with pytest.raises(ConfigError, match="flush_cache_bytes"):
        SweepConfig(model=model, grid=GRID, timing=TimingMode.COLD).validate()
    with pytest.raises(ConfigError, match="flushes no cache"):
        SweepConfig(model=model, grid=GRID, timing=TimingMode.HOT,
                    flush_cache_bytes=1024).validate()
    # defaults: cold when a flush size is given, hot on CUDA, in-context on the CPU
    assert SweepConfig(model=model, grid=GRID, flush_cache_bytes=1).timing_mode() == "cold"
    assert SweepConfig(model=model, grid=GRID, device="cuda").timing_mode() == "hot"
    args = ["run", str(TINY_LLAMA), "--preset", "ci", "--no-progress", "--no-energy",
            "--max-tokens", "4", "--max-seqs", "2", "--max-context", "32",
            "--repetitions", "2", "--warmup", "0"]
    for mode, flush in (("hot", "0"), ("cold", str(4 * 2 ** 20))):
        out = tmp_path / f"{mode}.pb"
        extra = ["--flush-cache-mib", "4"] if mode == "cold" else []
        assert profiler_main([*args, "--timing", mode, *extra, "--out", str(out)]) == 0
        p = read_profile(out).provenance
        assert p.method.timer == f"perf_counter_ns ({mode})"
        assert p.attributes["timing_mode"] == mode
        assert p.attributes["flush_cache_bytes"] == flush
        assert "context_layer_copies" not in p.attributes
    # a flush size contradicts in-context timing
    assert profiler_main([*args, "--timing", "in-context", "--flush-cache-mib", "4",
                          "--out", str(tmp_path / "bad.pb")]) == 2


def test_engine_op_spans_and_overhead_calibration() -> None:
    model = load_model_config(TINY_LLAMA)
    engine = Engine(model, EngineConfig(max_num_seqs=4, max_num_batched_tokens=32,
                                        num_blocks=64), max_positions=128)
    reqs = [Request(request_id=str(i), arrival_ns=0, input_tokens=20 + 5 * i,
                    output_tokens=4) for i in range(3)]
    result = engine.run(reqs, time_ops=True)
    assert [len(t) for t in result.token_times_s] == [4, 4, 4]
    for s in result.steps:
        assert 0 < s.op_ns <= s.forward_ns <= s.step_ns
        assert 0 < s.step_cpu_ns
        assert sum(n for n, _, _ in s.prefills) + len(s.decode_lens) == (
            s.num_prefill_tokens + s.num_decodes)
    assert 0.0 < result.cpu_share() <= 1.05
    step_ns, per_seq_ns = fit_cpu_overheads(result)
    assert step_ns >= 0 and per_seq_ns >= 0 and step_ns + per_seq_ns > 0
    with pytest.raises(ValueError, match="time_ops"):
        fit_cpu_overheads(engine.run([Request(request_id="x", arrival_ns=0, input_tokens=8,
                                              output_tokens=2)]))


def _fake_pass(spans: list[tuple[int, int]]):
    """A pass whose op ``a`` had these ``(wall, cpu)`` spans, one pass per call in turn."""
    it = iter(spans)

    def one_pass() -> in_context.OpClock:
        clock = in_context.OpClock()
        wall, cpu = next(it)
        clock.samples_ns["a"] = [wall]
        clock.cpu_ns["a"] = [cpu]
        return clock
    return one_pass


def test_preempted_calls_are_dropped_and_replaced() -> None:
    assert not in_context.preempted(100_000, 96_000)   # within 10 us + 5 %
    assert in_context.preempted(100_000, 80_000)
    assert in_context.preempted(4_000_000, 20_000)     # a scheduler slice in a 20 us op
    # warmup 1, then clean (50 us) and preempted (3 ms wall, 50 us CPU) passes alternate
    spans = [(9, 9)] + [(50_000, 50_000), (3_000_000, 50_000)] * 10
    res = in_context.time_passes(_fake_pass(spans), warmup=1, repetitions=3)
    assert res.samples_ns["a"] == [50_000.0] * 3
    assert res.dropped == 2 and res.passes == 5 and res.fallback_ops == ()
    # always preempted: gives up after 4 x repetitions passes and keeps the spans, flagged
    res = in_context.time_passes(_fake_pass([(3_000_000, 1)] * 12), warmup=0,
                                 repetitions=3)
    assert res.passes == 12 and res.dropped == 12 and res.fallback_ops == ("a",)
    assert res.samples_ns["a"] == [3_000_000.0] * 3
