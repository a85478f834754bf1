"""inference-perf workloads against its documented semantics (fixed seeds)."""

from __future__ import annotations

import numpy as np
import pytest
from workload_factories import BLOCK, frame_of, gaps_s, max_in_flight, replay_spec, requests_of, shared_blocks

from llmsim.errors import ConfigError
from llmsim.workloads import generate_workload


def ip_spec(data: dict, load: dict | None = None, seed: int = 5) -> dict:
    return {"tool": "inference-perf", "seed": seed, "data": data,
            "load": load or {"type": "constant", "stages": [{"rate": 10, "duration": 2}]}}


def shared(**sp: object) -> dict:
    return {"type": "shared_prefix", "shared_prefix": {"num_groups": 3, "num_prompts_per_group": 4,
                                                       "system_prompt_len": 48, "question_len": 10,
                                                       "output_len": 5, **sp}}


def test_constant_stages_send_rate_times_duration_evenly_spaced():
    df = frame_of(ip_spec(shared(), {"type": "constant", "stages": [{"rate": 4, "duration": 5},
                                                                      {"rate": 10, "duration": 2}]}))
    t = df["arrival_ns"].to_numpy() / 1e9
    assert len(t) == 20 + 20
    assert np.allclose(np.diff(t[:20]), 0.25) and np.allclose(np.diff(t[20:]), 0.1)
    assert t[20] == pytest.approx(5.0)  # the second stage starts when the first ends


def test_poisson_stage_has_exponential_gaps():
    df = frame_of(ip_spec({"type": "random", "input_distribution": {"min": 1, "max": 8, "mean": 4},
                           "output_distribution": {"min": 1, "max": 4, "mean": 2}},
                          {"type": "poisson", "stages": [{"rate": 50, "duration": 400}]}))
    gaps = gaps_s(df["arrival_ns"].to_numpy())
    assert len(df) == 20000
    assert abs(gaps.mean() - 0.02) / 0.02 < 0.03
    assert abs(gaps.std() / gaps.mean() - 1) < 0.05  # exponential: CV = 1


def test_distribution_is_a_clipped_rounded_normal():
    df = frame_of(ip_spec({"type": "random",
                           "input_distribution": {"min": 80, "max": 130, "mean": 100, "std_dev": 20},
                           "output_distribution": {"min": 5, "max": 9, "mean": 7, "std_dev": 0}},
                          {"type": "constant", "stages": [{"rate": 1000, "duration": 20}]}))
    x = df["input_tokens"].to_numpy()
    assert x.min() == 80 and x.max() == 130
    # P(normal(100, 20) <= 80) = Phi(-1) = 0.1587 lands on the minimum; P(>= 130) = 1 - Phi(1.5) = 0.0668
    assert abs((x == 80).mean() - 0.1587) < 0.01
    assert abs((x == 130).mean() - 0.0668) < 0.008
    assert set(df["output_tokens"]) == {7}


def test_single_turn_shared_prefix_groups_and_cycling():
    reqs = requests_of(ip_spec(shared(), {"type": "constant", "stages": [{"rate": 10, "duration": 3}]}))
    assert len(reqs) == 30 and {r.input_tokens for r in reqs} == {58}
    # request k sends prompt k mod 12: the second pass repeats the first exactly
    for k in range(12, 30):
        assert reqs[k].input_token_ids == reqs[k - 12].input_token_ids
    first = reqs[:12]
    systems = {r.input_token_ids[:48] for r in first}
    assert len(systems) == 3 and len({r.input_token_ids for r in first}) == 12
    for a in first:
        for b in first:
            if a is not b:
                same = a.input_token_ids[:48] == b.input_token_ids[:48]
                assert shared_blocks(a, b) == (48 // BLOCK if same else 0)


def test_question_distributions_are_drawn_per_group():
    spec = ip_spec(shared(num_groups=40, num_prompts_per_group=50,
                          question_distribution={"min": 1, "max": 400, "mean": 100, "std_dev": 30}),
                   {"type": "constant", "stages": [{"rate": 100, "duration": 20}]})
    q = frame_of(spec)["input_tokens"].to_numpy() - 48
    assert abs(q.mean() - 100) < 1.5 and abs(q.std() - 30) / 30 < 0.05


def test_multi_turn_rounds_extend_the_context_and_wait_for_the_previous_round():
    reqs = requests_of(ip_spec(shared(enable_multi_turn_chat=True),
                               {"type": "constant", "stages": [{"rate": 12, "duration": 3}]}))
    users = 12
    assert len(reqs) == 36
    for k in range(users, 36):
        child, parent = reqs[k], reqs[k - users]
        assert child.parent_id == parent.request_id and child.session_id == parent.session_id
        assert child.turn == parent.turn + 1
        question = parent.input_token_ids[-10:]  # the user's question, the same every round
        assert child.input_token_ids == parent.input_token_ids + parent.output_token_ids + question
    assert all(r.parent_id is None for r in reqs[:users])


def test_multi_turn_replay_hits_the_previous_rounds_context(tmp_path):
    spec = ip_spec(shared(enable_multi_turn_chat=True, num_groups=2, num_prompts_per_group=2,
                          system_prompt_len=40, question_len=12, output_len=20),
                   {"type": "constant", "stages": [{"rate": 1, "duration": 12}]})
    result = replay_spec(tmp_path, spec)
    df = result.requests
    assert result.summary["num_finished"] == 12
    reqs = requests_of(spec)
    for k in range(4, 12):
        parent = reqs[k - 4]
        # the parent's KV holds its prompt and all but its last output token; full blocks hit
        cached = parent.input_tokens + parent.output_tokens - 1
        assert df["prefix_hit_tokens"].iloc[k] == (cached // BLOCK) * BLOCK
        assert df["first_scheduled_s"].iloc[k] >= df["finish_s"].iloc[k - 4]


def test_concurrent_stage_is_closed_loop(tmp_path):
    spec = ip_spec(shared(), {"type": "concurrent", "stages": [{"concurrency_level": 3, "num_requests": 24}]})
    df = frame_of(spec)
    assert (df["arrival_ns"] == 0).all()
    assert list(df["parent_id"][:5]) == [None, None, None, "0", "1"]
    assert max_in_flight(replay_spec(tmp_path, spec)) == 3


@pytest.mark.parametrize(("spec", "field"), [
    (ip_spec({"type": "bogus"}), "data.type"),
    (ip_spec(shared(num_groups=0)), "data.shared_prefix.num_groups"),
    (ip_spec(shared(extra=1)), "data.shared_prefix.extra"),
    (ip_spec(shared(), {"type": "constant", "stages": [{"rate": 0.1, "duration": 1}]}), "load.stages.0.rate"),
    (ip_spec(shared(), {"type": "constant", "stages": []}), "load.stages"),
    (ip_spec(shared(), {"type": "poisson", "stages": [{"rate": 1e9, "duration": 1e6}]}), "load.stages.0.rate"),
    (ip_spec(shared(enable_multi_turn_chat=True),
             {"type": "concurrent", "stages": [{"concurrency_level": 2, "num_requests": 5}]}),
     "data.shared_prefix.enable_multi_turn_chat"),
    (ip_spec({"type": "random", "input_distribution": {"min": 5, "max": 9, "mean": 20},
              "output_distribution": {"mean": 3}}), "data.input_distribution.mean"),
])
def test_bad_values_name_the_field(spec, field):
    with pytest.raises(ConfigError) as exc:
        generate_workload(spec)
    assert exc.value.field == field
