"""GPU power-state model: conservation, idle gaps, roofline share, cap, precedence, sources."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmsim.errors import ConfigError
from llmsim.power import (
    GpuPowerSpec,
    SourcedValue,
    StepShape,
    attribute_to_requests,
    find_power_spec,
    load_power_spec_file,
    power_trace,
)
from llmsim.power.report import report_from_trace


def _sv(v: float | None) -> SourcedValue:
    return SourcedValue(value=v, source="test")


SPEC = GpuPowerSpec(name="T", power_limit_w=_sv(700.0), idle_w=_sv(100.0),
                    peak_bf16_flops_per_s=_sv(1e15), memory_bandwidth_bytes_per_s=_sv(1e12))
# 1e9 FLOP per token, 1e9 weight bytes, no KV
SHAPE = StepShape(gpus_per_instance=1, flops_per_token=1e9, weight_bytes=1e9,
                  kv_bytes_per_token=0.0, kv_capacity_tokens=0.0)


def _steps(rows: list[tuple[float, float, float, int, int]], inst: int = 0) -> pd.DataFrame:
    """rows: (start_s, end_s, gpu_ms, prefill_tokens, decodes)."""
    return pd.DataFrame({
        "instance_id": [inst] * len(rows), "step": list(range(len(rows))),
        "start_s": [r[0] for r in rows], "end_s": [r[1] for r in rows],
        "gpu_ms": [r[2] for r in rows], "num_prefill_tokens": [r[3] for r in rows],
        "num_decodes": [r[4] for r in rows], "kv_cache_pct": [0.0] * len(rows)})


def test_idle_power_over_gaps() -> None:
    # one 10 ms step at t=1 s in a 3 s horizon: everything else idles at 100 W
    tr = power_trace(_steps([(1.0, 1.01, 10.0, 0, 1)]), SPEC, SHAPE, num_instances=1,
                     horizon_s=3.0)
    active = float(tr.steps["active_w"].iloc[0])
    assert tr.total_j == pytest.approx(100.0 * 2.99 + active * 0.01)
    idle = tr.segments[tr.segments["kind"] == "idle"]
    assert (idle["power_w"] == 100.0).all()
    assert float((idle["t1_s"] - idle["t0_s"]).sum()) == pytest.approx(2.99)
    # a second, idle-only GPU doubles the idle part
    tr2 = power_trace(_steps([(1.0, 1.01, 10.0, 0, 1)]), SPEC, SHAPE, num_instances=1,
                      horizon_s=3.0, idle_gpus=1)
    assert tr2.total_j == pytest.approx(tr.total_j + 300.0)
    series = tr.power_series(1.0)
    assert list(series["t"]) == [1.0, 2.0, 3.0]
    assert series["power_w"].iloc[0] == pytest.approx(100.0)
    assert series["power_w"].iloc[1] > 100.0
    assert float(series["power_w"].sum()) == pytest.approx(tr.total_j)  # 1 s ticks


def test_step_time_beyond_kernels_idles() -> None:
    # a 20 ms step whose kernels take 10 ms: the other 10 ms draw idle power
    tr = power_trace(_steps([(0.0, 0.02, 10.0, 0, 1)]), SPEC, SHAPE, num_instances=1)
    a = float(tr.steps["active_w"].iloc[0])
    assert float(tr.steps["energy_j"].iloc[0]) == pytest.approx(a * 0.01 + 100.0 * 0.01)


def test_memory_bound_vs_compute_bound_step() -> None:
    # memory-bound: 1 decode, 10 ms: bytes 1e9 / 1e12 = 1 ms of 10 ms -> u_mem 0.1
    # compute-bound: 8000 prefill tokens, 10 ms: 8e12 FLOP / 1e15 = 8 ms -> u_comp 0.8
    tr = power_trace(_steps([(0.0, 0.01, 10.0, 0, 1), (0.01, 0.02, 10.0, 8000, 0)]),
                     SPEC, SHAPE, num_instances=1)
    mem, comp = tr.steps.iloc[0], tr.steps.iloc[1]
    assert mem["u_memory"] == pytest.approx(0.1) and mem["u_compute"] == pytest.approx(1e-4)
    assert comp["u_compute"] == pytest.approx(0.8)
    assert mem["active_w"] == pytest.approx(100 + 600 * (0.1 + 1e-4))
    assert comp["active_w"] == pytest.approx(100 + 600 * 0.9)
    assert comp["active_w"] > mem["active_w"]


def test_power_cap() -> None:
    # 20000 tokens in 10 ms would need 2x the compute peak: capped at the 700 W limit
    tr = power_trace(_steps([(0.0, 0.01, 10.0, 20000, 0)]), SPEC, SHAPE, num_instances=1)
    assert float(tr.steps["active_w"].iloc[0]) == 700.0
    assert float(tr.segments["power_w"].max()) == 700.0


def test_profile_measured_energy_takes_precedence() -> None:
    steps = _steps([(0.0, 0.01, 10.0, 0, 1), (0.01, 0.03, 10.0, 0, 1)])
    steps["measured_energy_j"] = [1.5, math.nan]
    tr = power_trace(steps, SPEC, SHAPE, num_instances=1)
    assert float(tr.steps["energy_j"].iloc[0]) == pytest.approx(1.5)
    assert list(tr.steps["source"]) == ["profile", "power_state"]
    modelled = float(tr.steps["active_w"].iloc[1]) * 0.01 + 100 * 0.01
    assert float(tr.steps["energy_j"].iloc[1]) == pytest.approx(modelled)
    assert tr.total_j == pytest.approx(1.5 + modelled)


UNSOURCED_IDLE = ("name: X100\naliases: [x100_sxm]\n"
                  "power_limit_w: {value: 700.0, source: a datasheet}\n"
                  "idle_w: {value: null, source: no source states it}\n"
                  "peak_bf16_flops_per_s: {value: 1.0e+15, source: a datasheet}\n"
                  "memory_bandwidth_bytes_per_s: {value: 3.0e+12, source: a datasheet}\n")


def test_unavailable_without_source(tmp_path: Path) -> None:
    h100 = find_power_spec("h100_sxm")
    assert h100 is not None and h100.name == "H100"
    assert h100.missing() == () and "arXiv:2605.23918" in h100.idle_w.source
    (tmp_path / "x100.yaml").write_text(UNSOURCED_IDLE)
    x100 = find_power_spec("x100_sxm", tmp_path)
    assert x100 is not None and x100.missing() == ("idle_w",)
    with pytest.raises(ConfigError, match="idle_w"):
        power_trace(_steps([(0.0, 0.01, 10.0, 0, 1)]), x100, SHAPE, num_instances=1)
    assert find_power_spec("no-such-gpu") is None
    bad = tmp_path / "x.yaml"
    bad.write_text("name: X\npower_limit_w: {value: 700}\n")
    with pytest.raises(ConfigError, match="power_limit_w"):
        load_power_spec_file(bad)
    assumed = x100.with_assumption("idle_w", 80.0, "stated by the caller")
    assert assumed.missing() == () and assumed.idle_w.source.startswith("ASSUMPTION")


def test_shipped_specs_are_sourced() -> None:
    for f in sorted(Path("llmsim/power/data").glob("*.yaml")):
        spec = load_power_spec_file(f)
        for name in ("power_limit_w", "idle_w", "peak_bf16_flops_per_s",
                     "memory_bandwidth_bytes_per_s"):
            assert getattr(spec, name).source.strip()


def _requests(n: int, rng: np.random.Generator, steps: pd.DataFrame
              ) -> tuple[pd.DataFrame, list[np.ndarray]]:
    ends = steps["end_s"].to_numpy()
    rows, itls = [], []
    for i in range(n):
        k0 = int(rng.integers(0, len(ends)))
        k1 = int(rng.integers(k0, len(ends)))
        t = ends[k0:k1 + 1]
        rows.append({"request_id": str(i), "first_scheduled_s": float(steps["start_s"].iloc[k0]),
                     "first_token_s": float(t[0]), "input_tokens": int(rng.integers(1, 100)),
                     "prefix_hit_tokens": 0, "output_tokens": len(t), "instance_id": 0})
        itls.append(np.diff(t))
    return pd.DataFrame(rows), itls


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n_steps=st.integers(1, 30), n_req=st.integers(1, 12))
def test_energy_conservation(seed: int, n_steps: int, n_req: int) -> None:
    rng = np.random.default_rng(seed)
    t, rows = 0.0, []
    for _ in range(n_steps):
        t += float(rng.uniform(0, 0.05))  # gap
        d = float(rng.uniform(0.001, 0.05))
        rows.append((t, t + d, d * 1e3 * float(rng.uniform(0.3, 1.0)),
                     int(rng.integers(0, 500)), int(rng.integers(0, 64))))
        t += d
    steps = _steps(rows)
    tr = power_trace(steps, SPEC, SHAPE, num_instances=1, horizon_s=t + 0.5, idle_gpus=1)
    req, itls = _requests(n_req, rng, steps)
    shares = attribute_to_requests(tr, req, itls)
    assert (shares >= 0).all()
    assert float(shares.sum()) == pytest.approx(tr.total_j, rel=1e-9)
    assert float(tr.steps["energy_j"].sum()) <= tr.total_j + 1e-9
    rep = report_from_trace(tr, req, itls, spec=SPEC, hardware="T")
    assert float(rep.requests["energy_j"].sum()) == pytest.approx(rep.energy_j, rel=1e-9)
    assert rep.avg_power_w is not None and 100.0 * 2 <= rep.avg_power_w + 1e-9
    assert rep.peak_power_w is not None and rep.peak_power_w <= 700.0 * 2 + 1e-9


def test_decode_energy_goes_to_the_emitting_request() -> None:
    # two decode-only steps; request a emits in step 0, request b in step 1
    steps = _steps([(0.0, 0.01, 10.0, 0, 1), (0.01, 0.03, 20.0, 0, 1)])
    tr = power_trace(steps, SPEC, SHAPE, num_instances=1)
    req = pd.DataFrame({"request_id": ["a", "b"], "first_scheduled_s": [0.0, 0.0],
                        "first_token_s": [0.01, 0.03], "input_tokens": [1, 1],
                        "prefix_hit_tokens": [0, 0], "output_tokens": [1, 1],
                        "instance_id": [0, 0]})
    shares = attribute_to_requests(tr, req, [np.zeros(0), np.zeros(0)])
    e = tr.steps["energy_j"].to_numpy()
    assert shares == pytest.approx(e)
