"""guidellm workloads against its documented semantics (fixed seeds)."""

from __future__ import annotations

import numpy as np
import pytest
from workload_factories import BLOCK, frame_of, gaps_s, max_in_flight, replay_spec, requests_of, shared_blocks

from llmsim.errors import ConfigError
from llmsim.workloads import generate_workload


def g_spec(rate_type: str = "constant", **over: object) -> dict:
    data = {"prompt_tokens": 40, "output_tokens": 6}
    data.update(over.pop("data", {}))  # type: ignore[arg-type]
    return {"tool": "guidellm", "seed": 42, "data": data, "rate_type": rate_type, **over}


def test_constant_rate_is_evenly_spaced_and_max_seconds_cuts():
    df = frame_of(g_spec(rate=5, max_seconds=3))
    t = df["arrival_ns"].to_numpy() / 1e9
    assert len(t) == 15 and np.allclose(np.diff(t), 0.2) and t[0] == 0
    assert len(frame_of(g_spec(rate=5, max_seconds=3, max_requests=7))) == 7


def test_poisson_rate_has_exponential_gaps():
    gaps = gaps_s(frame_of(g_spec("poisson", rate=20, max_requests=20001))["arrival_ns"].to_numpy())
    assert abs(gaps.mean() - 0.05) / 0.05 < 0.03
    assert abs(gaps.std() / gaps.mean() - 1) < 0.05


def test_synthetic_lengths_are_clipped_normals_with_a_shared_prefix():
    spec = g_spec(rate=100, max_requests=20000, data={
        "prompt_tokens": 200, "prompt_tokens_stdev": 50, "prompt_tokens_min": 150, "prompt_tokens_max": 260,
        "output_tokens": 30, "output_tokens_stdev": 10, "output_tokens_min": 1, "output_tokens_max": 1000,
        "prefix_tokens": 36})
    df = frame_of(spec)
    p = df["input_tokens"].to_numpy() - 36
    assert p.min() == 150 and p.max() == 260
    assert abs((p == 150).mean() - 0.1587) < 0.01  # Phi(-1) of normal(200, 50) clipped at 150
    o = df["output_tokens"].to_numpy()
    assert abs(o.mean() - 30) < 0.3 and abs(o.std() - 10) / 10 < 0.05
    reqs = requests_of({**spec, "max_requests": 20})
    assert all(shared_blocks(reqs[0], r) == 36 // BLOCK for r in reqs[1:])


@pytest.mark.parametrize(("rate_type", "rate", "lanes"), [("concurrent", 3, 3), ("synchronous", None, 1)])
def test_closed_loop_rate_types(tmp_path, rate_type, rate, lanes):
    spec = g_spec(rate_type, max_requests=15, **({} if rate is None else {"rate": rate}))
    df = frame_of(spec)
    assert (df["arrival_ns"] == 0).all()
    assert [p is None for p in df["parent_id"]] == [True] * lanes + [False] * (15 - lanes)
    assert max_in_flight(replay_spec(tmp_path, spec)) == lanes


def test_throughput_sends_everything_at_once():
    df = frame_of(g_spec("throughput", max_requests=9))
    assert (df["arrival_ns"] == 0).all() and "parent_id" not in df.columns


@pytest.mark.parametrize(("spec", "field"), [
    (g_spec("sweep", rate=5, max_requests=10), "rate_type"),
    (g_spec("concurrent", rate=2), "max_requests"),
    (g_spec(rate=3), "max_requests"),
    (g_spec(rate=-1, max_requests=3), "rate"),
    (g_spec(rate=1, max_requests=3, data={"prompt_tokens": 10, "prompt_tokens_min": 20}), "data.prompt_tokens"),
    (g_spec(rate=1, max_requests=3, data={"output_tokens": 0}), "data.output_tokens"),
    (g_spec(rate=1, max_requests=3, data={"prompt_tokenz": 5}), "data.prompt_tokenz"),
])
def test_bad_values_name_the_field(spec, field):
    with pytest.raises(ConfigError) as exc:
        generate_workload(spec)
    assert exc.value.field == field
