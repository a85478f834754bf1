"""``profile run`` on a tiny Llama-style config: a valid, round-tripping profile."""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import pytest
from profiler_fakes import fake_nvml

from llmsim.cluster.parallel import ParallelConfig
from llmsim.costmodel.decompose import step_ops
from llmsim.model.config import load_model_config
from llmsim.profile import read_profile
from llmsim.v1 import profile_pb2 as pb
from profiler import energy
from profiler.__main__ import main as profiler_main
from profiler.grid import GridSpec, get_preset
from profiler.sweep import SweepConfig, run_sweep

TP1 = ParallelConfig(tensor_parallel_size=1)

FIXTURES = Path(__file__).parents[1] / "fixtures" / "profiler"
TINY_LLAMA = FIXTURES / "tiny-llama.json"
TINY_MOE = FIXTURES / "tiny-qwen3-moe.json"
STATS = ("median_ns", "mean_ns", "p90_ns", "min_ns", "max_ns", "std_ns", "num_samples")


@pytest.fixture(scope="module")
def ci_profile(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pb.Profile]:
    out = tmp_path_factory.mktemp("prof") / "tiny.pb"
    t0 = time.perf_counter()
    rc = profiler_main(["run", str(TINY_LLAMA), "--preset", "ci", "--out", str(out),
                        "--no-progress"])
    elapsed_s = time.perf_counter() - t0
    assert rc == 0
    print(f"ci preset on tiny llama: {elapsed_s:.2f} s")
    assert elapsed_s < 30
    return out, read_profile(out)


def test_ops_match_step_ops_and_axes(ci_profile: tuple[Path, pb.Profile]) -> None:
    _, prof = ci_profile
    model = load_model_config(TINY_LLAMA)
    want = [s.name for s in step_ops(model, TP1) if s.name != "all_reduce"]
    assert [o.op for o in prof.tp[0].ops] == want
    axes = {o.op: tuple(a.name for a in o.axes) for o in prof.tp[0].ops}
    assert axes["qkv_proj"] == ("tokens",)
    assert axes["lm_head"] == axes["sampler"] == ("sequences",)
    assert axes["attention"] == ("prefill_chunk", "kv_prefill", "n_decode", "kv_decode")
    grid = get_preset("ci")
    for o in prof.tp[0].ops:
        n = len(o.axes[0].values)
        assert n > 0 and all(len(a.values) == n for a in o.axes)
        assert all(len(getattr(o, s)) == n for s in STATS)
        assert all(v > 0 for v in o.median_ns)
        assert all(lo <= med <= hi for lo, med, hi in zip(o.min_ns, o.median_ns, o.max_ns, strict=True))
        if o.op == "qkv_proj":
            assert list(o.axes[0].values) == list(grid.tokens)
    att = next(o for o in prof.tp[0].ops if o.op == "attention")
    pts = list(zip(*(a.values for a in att.axes), strict=True))
    assert pts == sorted(grid.attention_points())
    # the published conventions: no chunk -> no cached prefix; no decodes -> kv_decode 0
    assert all(kvp == 0 for pc, kvp, _, _ in pts if pc == 0)
    assert all(kvd == 0 for _, _, nd, kvd in pts if nd == 0)


def test_schema_round_trip(ci_profile: tuple[Path, pb.Profile]) -> None:
    path, prof = ci_profile
    again = pb.Profile()
    again.ParseFromString(prof.SerializeToString())
    assert again == prof
    assert path.read_bytes() == prof.SerializeToString(deterministic=True)
    assert prof.schema_version == 1
    assert prof.model.config_sha256 == load_model_config(TINY_LLAMA).config_sha256
    assert prof.model.hidden_size == 256 and prof.model.num_hidden_layers == 2


def test_provenance_and_unavailable_energy(ci_profile: tuple[Path, pb.Profile]) -> None:
    _, prof = ci_profile
    p = prof.provenance
    assert p.device_name and p.host and p.framework == "torch"
    assert p.framework_version.startswith("2.")
    assert p.method.timer == "perf_counter_ns (in-context)" and p.method.num_threads == 1
    assert p.attributes["timing_mode"] == "in-context"
    assert p.method.timed_iterations == 5 and p.method.warmup_iterations == 2
    assert p.measured_at <= p.measured_until
    assert p.source.kind == "measured"
    assert p.attributes["grid"] == "ci"
    assert "tokens" in p.attributes["grid_axes"]
    counter, _ = energy.open_counter("cpu")
    if counter is None:  # this machine has no readable RAPL: say so, invent nothing
        assert p.attributes["energy_source"] == "unavailable"
        assert p.attributes["energy_unavailable_reason"]
        assert prof.idle_power_w == 0.0
        for o in prof.tp[0].ops:
            assert o.energy_source == "unavailable"
            assert len(o.energy_j) == 0 and len(o.avg_power_w) == 0


def test_skew_table_measured(ci_profile: tuple[Path, pb.Profile]) -> None:
    _, prof = ci_profile
    sk = prof.tp[0].skew
    assert len(sk.n) > 0 and len(sk.alpha) == len(sk.n) == len(sk.t_skew_ns)
    for mean, _mx, kvs, big in zip(sk.kv_mean, sk.kv_big, sk.kvs, sk.kv_big, strict=True):
        assert kvs < mean < big
    assert prof.tp[0].skew_fit.num_samples == len(sk.n)


def test_cost_model_prices_a_step(ci_profile: tuple[Path, pb.Profile]) -> None:
    if importlib.util.find_spec("llmsim.costmodel.profile_model") is None:
        pytest.skip("llmsim.costmodel.profile_model not built yet (issue 2)")
    from llmsim.costmodel.base import PrefillChunk, StepBatch
    from llmsim.costmodel.profile_model import ProfileCostModel

    path, _ = ci_profile
    cm = ProfileCostModel.from_path(path, model=load_model_config(TINY_LLAMA), )
    small = cm.step_cost(StepBatch(decode_context_lens=(40, 80)))
    big = cm.step_cost(StepBatch(prefills=(PrefillChunk(num_new_tokens=200),),
                                 decode_context_lens=(40, 80)))
    assert 0 < small.duration_ns < big.duration_ns
    assert "attention" in big.breakdown_ns


def test_moe_tp2_tables(tmp_path: Path) -> None:
    grid = GridSpec(name="tiny", tokens=(1, 8), sequences=(1, 4), prefill_chunks=(0, 16),
                    kv_prefill=(0,), n_decode=(0, 2), kv_decode=(32,), max_context=64,
                    moe_tokens=(1, 4, 16), active_experts=(2, 4, 8))
    model = load_model_config(TINY_MOE)
    cfg = SweepConfig(model=model, grid=grid, tp_degrees=(1, 2), warmup=1, repetitions=3,
                      energy=False)
    prof = run_sweep(cfg, tmp_path / "moe.pb", progress=False)
    assert [t.tp_degree for t in prof.tp] == [1, 2]
    ops1 = {o.op: o for o in prof.tp[0].ops}
    assert "qk_norm" in ops1 and "moe_gate" in ops1 and "gate_up_proj" not in ops1
    moe = ops1["moe"]
    assert [a.name for a in moe.axes] == ["tokens", "active_experts"]
    # active experts lie in [top_k, min(experts, tokens x top_k)]
    assert list(zip(moe.axes[0].values, moe.axes[1].values, strict=True)) == [
        (1, 2), (4, 2), (4, 4), (4, 8), (16, 2), (16, 4), (16, 8)]
    assert not (tmp_path / "moe.pb.journal.jsonl").exists()


def test_fake_nvml_energy_recorded(tmp_path: Path) -> None:
    """The NVML path end to end: a counter on the real clock, 20 ms updates."""
    class WallDevice:
        def __init__(self) -> None:
            self.t0 = time.monotonic_ns()

        def counter_j(self) -> float:  # 250 W, refreshed every 20 ms
            t = time.monotonic_ns() - self.t0
            return 250.0 * (t - t % 20_000_000) * 1e-9

    counter = energy.NvmlCounter(fake_nvml(WallDevice()))
    grid = GridSpec(name="tiny", tokens=(4,), sequences=(1,), prefill_chunks=(0,),
                    kv_prefill=(0,), n_decode=(0, 1), kv_decode=(16,), max_context=32,
                    moe_tokens=(), active_experts=())
    cfg = SweepConfig(model=load_model_config(TINY_LLAMA), grid=grid, warmup=1,
                      repetitions=2, energy_window_s=0.25)
    prof = run_sweep(cfg, tmp_path / "e.pb", progress=False, counter=counter)
    assert prof.provenance.attributes["energy_source"] == "nvml"
    # real clock on a shared machine: a descheduled poll shifts a window edge by a few ms
    assert prof.idle_power_w == pytest.approx(250.0, rel=0.15)
    for o in prof.tp[0].ops:
        assert o.energy_source == "nvml"
        assert len(o.energy_j) == len(o.median_ns)
        assert all(w == pytest.approx(250.0, rel=0.15) for w in o.avg_power_w)
        assert all(e > 0 for e in o.energy_j)


def test_llmsim_cli_dispatch(tmp_path: Path) -> None:
    if importlib.util.find_spec("llmsim.profile.cli") is None:
        pytest.skip("llmsim.profile.cli (import/show) not built yet (issue 2)")
    from llmsim.cli.main import main

    out = tmp_path / "t.pb"
    assert main(["profile", "run", str(TINY_LLAMA), "--preset", "ci", "--out", str(out),
                 "--no-progress", "--max-tokens", "16", "--max-seqs", "4",
                 "--max-context", "64", "--repetitions", "2"]) == 0
    assert read_profile(out).tp[0].ops[0].op == "layernorm"
