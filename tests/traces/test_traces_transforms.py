"""Transforms, seeded generators and trace statistics."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from llmsim.errors import ConfigError
from llmsim.trace import Request, Trace, TraceFrame, apply_transforms, generate_trace, trace_stats
from llmsim.trace.stats import ideal_prefix_reuse


def make_frame(n=10, gap_s=1.0, **cols) -> TraceFrame:
    data = {"request_id": [str(i) for i in range(n)], "arrival_ns": (np.arange(n) * gap_s * 1e9).astype(np.int64),
            "input_tokens": np.full(n, 100), "output_tokens": np.full(n, 10), **cols}
    return TraceFrame(data=pd.DataFrame(data), name="t")


def test_window_rebases_and_keeps_half_open_interval():
    out = apply_transforms(make_frame(), [{"window": {"start_s": 2, "end_s": 5}}])
    assert out.data["request_id"].tolist() == ["2", "3", "4"]
    assert out.data["arrival_ns"].tolist() == [0, 10**9, 2 * 10**9]
    with pytest.raises(ConfigError):
        apply_transforms(make_frame(), [{"window": {"start_s": 5, "end_s": 5}}])


def test_scale_rate_on_trace_returns_trace():
    trace = Trace(requests=tuple(Request(request_id=str(i), arrival_ns=i * 1000, input_tokens=5, output_tokens=2,
                                         think_time_ns=300) for i in range(4)))
    out = apply_transforms(trace, [{"scale_rate": 2.0}])
    assert isinstance(out, Trace)
    assert [r.arrival_ns for r in out.requests] == [0, 500, 1000, 1500]
    assert [r.think_time_ns for r in out.requests] == [150] * 4
    with pytest.raises(ConfigError):
        apply_transforms(trace, [{"scale_rate": 0}])


def test_sample_is_seeded_ordered_and_session_whole():
    sessions = ["a", "a", "b", "b", "b", "c", "d", "d", "e", "f"]
    parents = [None, "0", None, "2", "3", None, None, "6", None, None]
    frame = make_frame(session_id=sessions, parent_id=parents)
    one = apply_transforms(frame, [{"sample": {"n": 3, "seed": 7}}])
    two = apply_transforms(frame, [{"sample": {"n": 3, "seed": 7}}])
    assert one.data["request_id"].tolist() == two.data["request_id"].tolist()
    assert one.data["session_id"].nunique() == 3
    kept = set(one.data["session_id"])
    assert len(one) == sum(s in kept for s in sessions)  # whole sessions
    ids = one.data["arrival_ns"].tolist()
    assert ids == sorted(ids)
    other = apply_transforms(frame, [{"sample": {"fraction": 0.5, "seed": 1}}])
    assert other.data["session_id"].nunique() == 3
    with pytest.raises(ConfigError):
        apply_transforms(frame, [{"sample": {"seed": 1}}])


def test_truncate_clips_ids_and_hashes():
    frame = make_frame(n=3, block_hashes=[(1, 2, 3), (1, 2, 4), (5,)],
                       input_token_ids=[tuple(range(100))] * 3)
    frame = TraceFrame(data=frame.data, hash_block_size=40)
    out = apply_transforms(frame, [{"truncate": {"max_requests": 2, "max_input_tokens": 50,
                                                 "max_output_tokens": 4}}])
    assert len(out) == 2
    assert out.data["input_tokens"].tolist() == [50, 50] and out.data["output_tokens"].tolist() == [4, 4]
    assert out.data["block_hashes"].tolist() == [(1, 2), (1, 2)]
    assert [len(v) for v in out.data["input_token_ids"]] == [50, 50]
    trace = out.to_trace()
    assert trace.requests[0].hash_block_size == 40


def test_filter_model_clears_dangling_parents():
    frame = make_frame(n=4, model=["x", "y", "x", "x"], parent_id=[None, None, "1", "0"])
    out = apply_transforms(frame, [{"filter_model": "x"}])
    assert out.data["request_id"].tolist() == ["0", "2", "3"]
    trace = out.to_trace()
    assert [r.parent_id for r in trace.requests] == [None, None, "0"]
    assert out.metadata["orphaned_turns"] == "1"
    with pytest.raises(ConfigError, match="unknown transform"):
        apply_transforms(frame, [{"shuffle": {}}])


@pytest.mark.parametrize(("arrival", "cv"), [("poisson", 1.0), ("gamma", 0.5), ("gamma", 3.0)])
def test_generators_seeded_rate_and_cv(arrival, cv):
    a = generate_trace(n=40_000, rate_per_s=8.0, arrival=arrival, cv=cv, seed=3)
    b = generate_trace(n=40_000, rate_per_s=8.0, arrival=arrival, cv=cv, seed=3)
    assert a.data.equals(b.data)
    assert not a.data.equals(generate_trace(n=40_000, rate_per_s=8.0, arrival=arrival, cv=cv, seed=4).data)
    stats = trace_stats(a)
    assert stats.mean_rate_per_s == pytest.approx(8.0, rel=0.03)
    assert stats.interarrival_cv == pytest.approx(cv, rel=0.05)


@pytest.mark.realdata
def test_generator_empirical_lengths_from_named_trace(data_path):
    data_path("azure-llm-2023/AzureLLMInferenceTrace_conv.csv")
    from llmsim.trace import load_trace_frame

    src = load_trace_frame("azure", data_path("azure-llm-2023/AzureLLMInferenceTrace_conv.csv"))
    pairs = set(zip(src.data["input_tokens"], src.data["output_tokens"], strict=True))
    gen = generate_trace(n=5000, rate_per_s=2.0, lengths="azure-conv-2023", seed=0)
    got = list(zip(gen.data["input_tokens"], gen.data["output_tokens"], strict=True))
    assert all(p in pairs for p in got)
    assert np.mean([p[0] for p in got]) == pytest.approx(src.data["input_tokens"].mean(), rel=0.05)


def test_stats_rate_cv_and_exact_prefix_reuse():
    # 3 requests with 4-token hash blocks: B repeats A's first 2 blocks; C shares block id 1
    # but after a different first block, so it must not hit.
    frame = TraceFrame(
        data=pd.DataFrame({"request_id": ["a", "b", "c"], "arrival_ns": [0, 10**9, 3 * 10**9],
                           "input_tokens": [12, 10, 8], "output_tokens": [1, 2, 3],
                           "block_hashes": [(1, 2, 3), (1, 2, 9), (7, 2)]}),
        hash_block_size=4, name="h")
    ratio, bs = ideal_prefix_reuse(frame)
    assert (ratio, bs) == (8 / 30, 4)
    stats = trace_stats(frame, bin_s=1.0)
    assert stats.num_requests == 3 and stats.span_s == 3.0
    assert stats.interarrival_cv == pytest.approx(0.5 / 1.5)
    assert stats.rate_per_s.tolist() == [1.0, 1.0, 0.0, 1.0]  # bins [0,1) [1,2) [2,3) [3,4)
    assert stats.empty_bin_share == pytest.approx(0.25)
    assert stats.input_tokens.max == 12 and stats.output_tokens.min == 1


def test_token_id_prefix_reuse_counts_partial_last_block():
    ids = tuple(range(40))
    frame = TraceFrame(data=pd.DataFrame({"request_id": ["a", "b"], "arrival_ns": [0, 1],
                                          "input_tokens": [40, 36], "output_tokens": [1, 1],
                                          "input_token_ids": [ids, ids[:36]]}))
    ratio, bs = ideal_prefix_reuse(frame, block_size=16)
    # b: blocks [0:16], [16:32] hit; its last block [32:36] differs from a's [32:40] -> 32 hit tokens
    assert (ratio, bs) == (32 / 76, 16)
