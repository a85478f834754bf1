"""Every example spec generates, and any valid spec yields a trace the simulator accepts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmsim.errors import ConfigError
from llmsim.workloads import generate_workload, load_workload_spec

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples" / "workloads").glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_specs_generate_deterministically(path):
    a, b = load_workload_spec(path), load_workload_spec(path)
    assert len(a) >= 50 and a.data.equals(b.data)
    assert a.metadata["spec"] == str(path)


def check_trace(frame) -> None:
    """What the serving loop requires: sorted arrivals, ids as long as counts, earlier parents."""
    reqs = frame.to_trace().requests
    arrival = np.array([r.arrival_ns for r in reqs])
    assert (np.diff(arrival) >= 0).all() and arrival[0] >= 0
    seen: set[str] = set()
    for r in reqs:
        assert r.input_tokens >= 1 and r.output_tokens >= 1
        assert len(r.input_token_ids) == r.input_tokens
        assert r.output_token_ids is None or len(r.output_token_ids) == r.output_tokens
        assert r.parent_id is None or r.parent_id in seen
        seen.add(r.request_id)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 60), in_len=st.integers(0, 300), out_len=st.integers(1, 50),
       ratio=st.floats(0, 0.99), prefix=st.integers(0, 100),
       rate=st.sampled_from(["inf", 0.5, 50.0]), burst=st.floats(0.05, 20),
       conc=st.one_of(st.none(), st.integers(1, 8)), seed=st.integers(0, 2**32))
def test_vllm_random_specs_give_valid_traces(n, in_len, out_len, ratio, prefix, rate, burst, conc, seed):
    spec = {"tool": "vllm-bench", "seed": seed, "num_prompts": n, "random_input_len": in_len,
            "random_output_len": out_len, "random_range_ratio": ratio, "random_prefix_len": prefix,
            "request_rate": rate, "burstiness": burst, "max_concurrency": conc}
    try:
        frame = generate_workload(spec)
    except ConfigError as exc:  # only a prompt that could be empty is refused
        assert exc.field == "random_input_len" and prefix + int(in_len * (1 - ratio)) < 1
        return
    assert len(frame) == n
    check_trace(frame)


@settings(max_examples=40, deadline=None)
@given(groups=st.integers(1, 4), per=st.integers(1, 5), sys_len=st.integers(0, 80),
       q=st.integers(0, 30), out=st.integers(1, 20), multi=st.booleans(),
       stages=st.lists(st.tuples(st.floats(0.5, 20), st.floats(0.5, 5)), min_size=1, max_size=3),
       poisson=st.booleans(), seed=st.integers(0, 1000))
def test_inference_perf_shared_prefix_specs_give_valid_traces(groups, per, sys_len, q, out, multi,
                                                              stages, poisson, seed):
    spec = {"tool": "inference-perf", "seed": seed,
            "data": {"type": "shared_prefix", "shared_prefix": {
                "num_groups": groups, "num_prompts_per_group": per, "system_prompt_len": sys_len,
                "question_len": q, "output_len": out, "enable_multi_turn_chat": multi}},
            "load": {"type": "poisson" if poisson else "constant",
                     "stages": [{"rate": r, "duration": d} for r, d in stages]}}
    try:
        frame = generate_workload(spec)
    except ConfigError as exc:
        # a stage of < 0.5 requests, or prompts of 0 tokens, are refused
        assert exc.field in ("lengths",) or exc.field.endswith(".rate")
        return
    assert len(frame) == sum(round(r * d) for r, d in stages)
    check_trace(frame)
