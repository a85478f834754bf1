"""vLLM bench serve workloads against vLLM's documented semantics (fixed seeds)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from workload_factories import (
    BLOCK,
    frame_of,
    gaps_s,
    max_in_flight,
    replay_spec,
    requests_of,
    shared_blocks,
    vllm_spec,
)

from llmsim.errors import ConfigError
from llmsim.workloads import generate_workload


def test_random_lengths_are_integer_uniform_over_the_range_ratio_interval():
    # input 100, ratio 0.25 -> [75, 125]; output 40 -> [30, 50]; prefix 20 added to every prompt
    df = frame_of(vllm_spec(num_prompts=20000, random_input_len=100, random_output_len=40,
                            random_range_ratio=0.25, random_prefix_len=20))
    sampled = df["input_tokens"].to_numpy() - 20
    assert sampled.min() == 75 and sampled.max() == 125
    out = df["output_tokens"].to_numpy()
    assert out.min() == 30 and out.max() == 50
    # uniform over 51 integers: mean 100, variance (51^2 - 1) / 12 = 216.67
    assert abs(sampled.mean() - 100) < 0.3
    assert abs(sampled.var() - (51**2 - 1) / 12) / ((51**2 - 1) / 12) < 0.05
    counts = np.bincount(sampled - 75, minlength=51)
    assert counts.min() > 0.8 * 20000 / 51 and counts.max() < 1.2 * 20000 / 51


def test_random_output_length_floor_is_one_and_ratio_zero_is_fixed():
    df = frame_of(vllm_spec(random_input_len=64, random_output_len=1, random_range_ratio=0.9))
    assert df["output_tokens"].min() == 1 and df["output_tokens"].max() == 2  # [max(1, 0), ceil(1.9)]
    df = frame_of(vllm_spec(random_range_ratio=0.0))
    assert set(df["input_tokens"]) == {64} and set(df["output_tokens"]) == {8}


def test_random_prefix_is_shared_and_the_rest_is_not():
    reqs = requests_of(vllm_spec(num_prompts=30, random_input_len=50, random_prefix_len=40))
    for a, b in zip(reqs, reqs[1:], strict=False):
        assert a.input_token_ids[:40] == b.input_token_ids[:40]
        assert not set(a.input_token_ids[40:]) & set(b.input_token_ids[40:])
        assert shared_blocks(a, b) == 40 // BLOCK  # the block straddling the prefix end differs


def test_same_seed_same_trace_other_seed_other_trace():
    spec = vllm_spec(random_range_ratio=0.5, request_rate=3.0, burstiness=0.7)
    a, b = frame_of(spec), frame_of(spec)
    assert a.equals(b)
    c = frame_of({**spec, "seed": 2})
    assert not np.array_equal(a["arrival_ns"], c["arrival_ns"])
    assert not np.array_equal(a["input_tokens"], c["input_tokens"])


@pytest.mark.parametrize("burstiness", [0.25, 1.0, 4.0])
def test_gamma_arrivals_have_rate_and_burstiness_of_the_spec(burstiness):
    # vLLM: gaps ~ Gamma(shape=burstiness, scale=1/(rate*burstiness)): mean 1/rate, CV 1/sqrt(b)
    df = frame_of(vllm_spec(num_prompts=20001, random_input_len=4, random_output_len=1,
                            request_rate=8.0, burstiness=burstiness))
    gaps = gaps_s(df["arrival_ns"].to_numpy())
    assert df["arrival_ns"].iloc[0] == 0
    assert abs(gaps.mean() - 1 / 8) / (1 / 8) < 0.03
    cv = gaps.std() / gaps.mean()
    assert abs(cv - 1 / math.sqrt(burstiness)) / (1 / math.sqrt(burstiness)) < 0.05


def test_infinite_rate_sends_everything_at_zero():
    df = frame_of(vllm_spec(request_rate="inf"))
    assert (df["arrival_ns"] == 0).all()
    assert "parent_id" not in df.columns


def test_prefix_repetition_counts_sharing_and_shuffle():
    spec = dict(tool="vllm-bench", seed=1, dataset_name="prefix_repetition", num_prompts=103,
                     prefix_repetition_prefix_len=64, prefix_repetition_suffix_len=20,
                     prefix_repetition_num_prefixes=5, prefix_repetition_output_len=7)
    reqs = requests_of(spec)
    assert len(reqs) == 5 * (103 // 5)
    assert {r.input_tokens for r in reqs} == {84} and {r.output_tokens for r in reqs} == {7}
    groups: dict[tuple[int, ...], list] = {}
    for r in reqs:
        groups.setdefault(r.input_token_ids[:64], []).append(r)
    assert sorted(len(g) for g in groups.values()) == [20] * 5
    order = [list(groups).index(r.input_token_ids[:64]) for r in reqs]
    assert order != sorted(order)  # shuffled, not grouped
    first = [g[0] for g in groups.values()]
    for g in groups.values():
        assert shared_blocks(g[0], g[1]) == 64 // BLOCK
    assert shared_blocks(first[0], first[1]) == 0


def test_max_concurrency_chains_lanes():
    df = frame_of(vllm_spec(num_prompts=10, max_concurrency=3))
    assert list(df["parent_id"]) == [None, None, None, "0", "1", "2", "3", "4", "5", "6"]


def test_max_concurrency_keeps_that_many_in_flight_in_the_replay(tmp_path):
    spec = vllm_spec(num_prompts=40, random_range_ratio=0.5, max_concurrency=4)
    result = replay_spec(tmp_path, spec)
    assert result.summary["num_finished"] == 40
    assert max_in_flight(result) == 4
    unlimited = replay_spec(tmp_path / "u", {k: v for k, v in spec.items() if k != "max_concurrency"})
    assert max_in_flight(unlimited) > 4


def test_prefix_hits_in_the_replay_are_exactly_the_shared_blocks(tmp_path):
    # 1 req/s with ms steps: each request finds every earlier one cached
    spec = vllm_spec(num_prompts=12, random_input_len=30, random_prefix_len=50, request_rate=1.0,
                     burstiness=1.0)
    hits = replay_spec(tmp_path, spec).requests["prefix_hit_tokens"].to_numpy()
    assert hits[0] == 0 and (hits[1:] == (50 // BLOCK) * BLOCK).all()


@pytest.mark.parametrize(("over", "field"), [
    ({"dataset_name": "sharegpt"}, "dataset_name"),
    ({"random_range_ratio": 1.0}, "random_range_ratio"),
    ({"request_rate": 0}, "request_rate"),
    ({"burstiness": -1}, "burstiness"),
    ({"max_concurrency": 0}, "max_concurrency"),
    ({"num_prompts": 2.5}, "num_prompts"),
    ({"random_input_len": 0, "random_prefix_len": 0}, "random_input_len"),
    ({"random_input_lenn": 3}, "random_input_lenn"),
    ({"random_input_len": 9_000_000, "num_prompts": 100}, "random_input_len"),
])
def test_bad_values_name_the_field(over, field):
    with pytest.raises(ConfigError) as exc:
        generate_workload(vllm_spec(**over))
    assert exc.value.field == field
