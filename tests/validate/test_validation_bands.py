"""Error bars: the Monte Carlo band covers a synthetic truth drawn from the same noise, misses a
biased one; noise model, per-point spreads, sensitivity wrappers, report sections.

The synthetic run is tiny (a hand-written bundle, 40 requests) so each replay takes a few
milliseconds; its "measured" side is itself a replay whose profile was perturbed by a known
noise, so the truth is known.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from llmsim.experiment import EngineConfig, Experiment, HardwareConfig
from llmsim.trace.record import Request, Trace
from llmsim.validate import compare
from llmsim.validate.measured import LatencyOrigin, MeasuredFormat, MeasuredRun
from llmsim.validate.uncertainty import (
    FALLBACK_SIGMA_LOG,
    NoiseModel,
    ScaledCostModel,
    estimate_uncertainty,
    noise_model_from_profile,
    perturbed_profile,
)

MODEL_CFG = {"architectures": ["LlamaForCausalLM"], "hidden_size": 64, "intermediate_size": 128,
             "num_attention_heads": 4, "num_key_value_heads": 2, "num_hidden_layers": 4,
             "vocab_size": 256, "torch_dtype": "bfloat16"}
DENSE = ("layernorm", "qkv_proj", "rotary_emb", "o_proj", "gate_up_proj", "act_fn", "down_proj",
         "embedding", "final_layernorm")
P2 = (16, 32, 64, 128, 256)
KV = (16, 32, 64, 128, 256, 512, 1024)
NS = (1, 2, 4, 8, 16)


def write_tiny_bundle(root: Path) -> tuple[Path, Path]:
    """A TP1 bundle whose times are smooth in every axis; returns (bundle, model config)."""
    bundle = root / "profiles" / "HW" / "org" / "tiny" / "bf16"
    (bundle / "tp1").mkdir(parents=True)
    cfg = root / "configs" / "model" / "org" / "tiny.json"
    cfg.parent.mkdir(parents=True)
    cfg.write_text(json.dumps(MODEL_CFG))
    toks = (1, 2, 4, 8, 16, 32, 64, 128, 256)
    dense = ["layer,tokens,time_us"] + [f"{op},{t},{20 + 0.5 * t}" for op in DENSE for t in toks]
    per_seq = ["layer,sequences,time_us"] + [f"{op},{s},{50 + 2 * s}" for op in ("lm_head", "sampler")
                                             for s in (1, 2, 4, 8, 16)]
    att = ["prefill_chunk,kv_prefill,n_decode,kv_decode,time_us"]
    att += [f"0,0,{n},{kv},{10 + n * kv / 50}" for n in NS for kv in KV]
    att += [f"{pc},{kp},0,0,{10 + pc * (pc + kp) / 400}" for pc in P2 for kp in (0, *KV)]
    att += [f"{pc},{kp},{n},{kv},{12 + pc * (pc + kp) / 400 + n * kv / 50}" for pc in P2
            for kp in (0, *KV) for n in NS for kv in KV]
    for name, lines in (("dense.csv", dense), ("per_sequence.csv", per_seq), ("attention.csv", att)):
        (bundle / "tp1" / name).write_text("\n".join(lines) + "\n")
    (bundle / "meta.yaml").write_text("model: org/tiny\nhardware: HW\ngpu: Test GPU\nvariant: bf16\n"
                                      "tp_degrees: [1]\nmeasurement_iterations: 3\n")
    return bundle, cfg


def tiny_experiment(root: Path) -> Experiment:
    bundle, cfg = write_tiny_bundle(root)
    rng = np.random.default_rng(7)
    reqs = tuple(Request(request_id=f"r{i}", arrival_ns=i * 15_000_000,
                         input_tokens=int(rng.integers(40, 400)), output_tokens=int(rng.integers(4, 40)))
                 for i in range(40))
    return Experiment(name="tiny", model_path=cfg, profile_path=bundle,
                      hardware=HardwareConfig(name="HW", gpu_memory_bytes=10**10),
                      engine=EngineConfig(max_num_seqs=16, max_num_batched_tokens=256,
                                          num_gpu_blocks_override=400),
                      trace=Trace(requests=reqs))


def measured_from(result) -> MeasuredRun:
    """A replay as a measured run (counted from the arrival, as a bench JSON is)."""
    r = result.requests
    frame = pd.DataFrame({c: r[c].to_numpy() for c in (
        "request_id", "input_tokens", "output_tokens", "arrival_s", "first_scheduled_s", "first_token_s",
        "finish_s", "ttft_s", "tpot_s", "e2e_s")})
    frame["frontend_delay_s"] = np.nan
    frame["success"] = True
    return MeasuredRun(source=Path("/synthetic"), format=MeasuredFormat.BENCH_JSON, requests=frame,
                       latency_origin=LatencyOrigin.CLIENT, meta={"model_id": "org/tiny"})


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from llmsim.model.config import load_model_config
    from llmsim.replay import build_cost_model, run

    exp = tiny_experiment(tmp_path_factory.mktemp("tiny"))
    base = build_cost_model(exp, load_model_config(exp.model_path))
    nominal = run(exp, trace=exp.trace.requests)
    return exp, base, nominal


SIGMA = NoiseModel(sigma_log=0.05, source="test: 5% per point")


def _truth(exp, base, cost_model):
    from llmsim.replay import run

    return measured_from(run(exp, trace=exp.trace.requests, cost_model=cost_model))


def _coverage(exp, nominal, truth, samples=19):
    comp = compare(truth, nominal, name="tiny")
    u = estimate_uncertainty(exp, truth, comp, trace=exp.trace.requests, samples=samples,
                             sensitivity=False, seed=0, noise=SIGMA)
    assert len(u.bands) == 15 and all(b.low_ms <= b.high_ms for b in u.bands)
    return u


def test_band_covers_a_truth_drawn_from_the_same_noise_and_misses_a_biased_one(tiny):
    from llmsim.validate.uncertainty import _profile_model

    exp, base, nominal = tiny
    inside = []
    for k in range(5):  # truths drawn with seeds the Monte Carlo never uses
        prof, tables = perturbed_profile(base.profile, SIGMA, np.random.default_rng(10_000 + k))
        u = _coverage(exp, nominal, _truth(exp, base, _profile_model(base, prof, tables)))
        inside += [b.inside for b in u.bands]
    # iid truth and 19 samples: P(inside the 5-95% band) ~ 0.85 per metric
    assert 0.65 <= np.mean(inside) <= 1.0, np.mean(inside)
    # a truth 15% slower than the profile says is outside the profile-noise band everywhere
    biased = _coverage(exp, nominal, _truth(exp, base, ScaledCostModel(base, kernel=1.15)))
    assert biased.coverage is not None and biased.coverage <= 0.2, biased.coverage


def test_bands_are_seeded_and_shrink_with_the_noise(tiny):
    exp, base, nominal = tiny
    truth = measured_from(nominal)
    comp = compare(truth, nominal)
    a = estimate_uncertainty(exp, truth, comp, trace=exp.trace.requests, samples=6, sensitivity=False,
                             noise=SIGMA, seed=3)
    b = estimate_uncertainty(exp, truth, comp, trace=exp.trace.requests, samples=6, sensitivity=False,
                             noise=SIGMA, seed=3)
    assert a.bands == b.bands
    small = estimate_uncertainty(exp, truth, comp, trace=exp.trace.requests, samples=6, sensitivity=False,
                                 noise=NoiseModel(sigma_log=0.005, source="test"), seed=3)
    wide = {x.key: x.high_ms - x.low_ms for x in a.bands}
    narrow = {x.key: x.high_ms - x.low_ms for x in small.bands}
    assert sum(narrow.values()) < 0.3 * sum(wide.values())
    # the truth is the nominal replay itself: inside nearly every band
    assert a.coverage >= 0.8


def test_sensitivity_rows_every_parameter(tiny):
    exp, base, nominal = tiny
    truth = measured_from(nominal)
    u = estimate_uncertainty(exp, truth, compare(truth, nominal), trace=exp.trace.requests, samples=0,
                             sensitivity=True)
    rows = {r.parameter: r for r in u.sensitivity}
    assert set(rows) == {"link_bandwidth", "cpu_overhead", "kv_capacity", "skew_correction", "kernel_time"}
    assert not rows["link_bandwidth"].applicable and "TP1" in rows["link_bandwidth"].note
    assert not rows["skew_correction"].applicable  # the tiny bundle has no skew fit
    kt = rows["kernel_time"]
    assert kt.low_pct["tpot_mean"] < 0 < kt.high_pct["tpot_mean"]
    cpu = rows["cpu_overhead"]
    assert cpu.applicable and set(cpu.low_pct) == set(kt.low_pct)
    assert u.bands == () and u.coverage is None


def test_scaled_cost_model_scales_ops_and_collectives():
    from llmsim.costmodel.base import StepBatch, StepCost

    class Fixed:
        def step_cost(self, batch):
            return StepCost(duration_ns=1100, breakdown_ns={"qkv_proj": 1000, "all_reduce": 100})

    cost = ScaledCostModel(Fixed(), kernel=1.1, link=2.0).step_cost(StepBatch(decode_context_lens=(16,)))
    assert cost.breakdown_ns == {"qkv_proj": 1100, "all_reduce": 220}
    assert cost.duration_ns == 1320


def test_point_sigma_prefers_the_tables_own_spread():
    from llmsim.v1 import profile_pb2 as pb
    from llmsim.validate.uncertainty import _point_sigma

    t = pb.OpTable(op="x", mean_ns=[100.0, 200.0])
    assert list(_point_sigma(t, 0.01)) == [0.01, 0.01]
    t.std_ns[:] = [10.0, 10.0]
    t.num_samples[:] = [4, 25]
    assert np.allclose(_point_sigma(t, 0.01), [10 / 100 / 2, 10 / 200 / 5])
    r = pb.OpTable(op="x", mean_ns=[100.0], min_ns=[90.0], max_ns=[110.0], num_samples=[3])
    assert np.allclose(_point_sigma(r, 0.01), [20 / 100 / 1.693 / math.sqrt(3)])


def test_perturbed_profile_leaves_the_input_alone_and_is_seeded(tiny):
    _, base, _ = tiny
    before = list(base.profile.tp[0].ops[0].mean_ns)
    a, _ = perturbed_profile(base.profile, SIGMA, np.random.default_rng(1))
    b, _ = perturbed_profile(base.profile, SIGMA, np.random.default_rng(1))
    assert list(base.profile.tp[0].ops[0].mean_ns) == before
    assert list(a.tp[0].ops[0].mean_ns) == list(b.tp[0].ops[0].mean_ns) != before
    logs = np.log(np.asarray(a.tp[0].ops[-1].mean_ns) / np.asarray(base.profile.tp[0].ops[-1].mean_ns))
    assert 0.04 < logs.std() < 0.06


def test_noise_model_falls_back_without_repeats(tiny):
    _, base, _ = tiny
    noise = noise_model_from_profile(base.profile)
    assert noise.sigma_log == FALLBACK_SIGMA_LOG and noise.num_pairs == 0


def test_report_shows_bands_and_tornado(tiny, tmp_path):
    from llmsim.validate import write_report

    exp, base, nominal = tiny
    truth = measured_from(nominal)
    comp = compare(truth, nominal, name="tiny")
    u = estimate_uncertainty(exp, truth, comp, trace=exp.trace.requests, samples=4, sensitivity=True,
                             noise=SIGMA)
    files = write_report(comp, tmp_path / "rep", uncertainty=u)
    names = {p.name for p in files.plots}
    assert {"bands.png", "tornado.png"} <= names
    md = files.markdown.read_text()
    assert "Band coverage:" in md and "90% band" in md and "Sensitivity" in md
    data = json.loads(files.json.read_text())["uncertainty"]
    assert data["samples"] == 4 and set(data["bands"]) == {b.key for b in u.bands}
    assert data["band_coverage"] == pytest.approx(u.coverage)
    assert data["sensitivity"]["kernel_time"]["applicable"] is True


@pytest.mark.realdata
def test_stated_noise_model_of_the_given_bundles(data_path):
    from llmsim.profile import load_profile

    for hw, sigma in (("RTXPRO6000", 0.0050), ("RTX4090", 0.0121)):
        prof = load_profile(data_path(f"llmservingsim/profiles/{hw}/meta-llama/Llama-3.1-8B/bf16"))
        noise = noise_model_from_profile(prof, tp=1)
        assert noise.sigma_log == pytest.approx(sigma, abs=0.0002), hw
        assert noise.num_pairs == 13006
