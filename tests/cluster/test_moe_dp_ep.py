"""Expert parallelism over MoE DP ranks (llmsim/cluster/moe_dp.py) and the DP2 + EP example
end to end (llmsim/replay.py, llmsim/sim/lockstep.py)."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmsim.cluster.moe_dp import EpPricer, expected_local_active, expert_ranges
from llmsim.cluster.parallel import ParallelConfig, check_supported
from llmsim.costmodel.collectives import Collective, CollectivesModel, LinkModel
from llmsim.costmodel.profile_model import expected_active_experts
from llmsim.errors import ConfigError
from llmsim.experiment import load_experiment
from llmsim.model.config import ModelConfig
from llmsim.replay import run
from llmsim.trace.record import Request, Trace

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "rtxpro6000-qwen3-30b-a3b-dp2-ep.yaml"
S = 1_000_000_000


def _model(experts: int, k: int = 2, hidden: int = 64, layers: int = 3) -> ModelConfig:
    return ModelConfig(name="toy-moe", architecture="Qwen3MoeForCausalLM",
                       num_hidden_layers=layers, hidden_size=hidden, num_attention_heads=4,
                       num_key_value_heads=2, head_dim=16, intermediate_size=128,
                       vocab_size=1000, num_experts=experts, num_experts_per_token=k,
                       moe_intermediate_size=32)


def test_linear_expert_placement_gives_the_remainder_to_the_first_ranks() -> None:
    assert expert_ranges(128, 2) == ((0, 64), (64, 64))
    assert expert_ranges(5, 2) == ((0, 3), (3, 2))
    assert expert_ranges(7, 3) == ((0, 3), (3, 2), (5, 2))
    with pytest.raises(ConfigError):
        expert_ranges(2, 3)


@settings(max_examples=100, deadline=None)
@given(st.integers(2, 160), st.integers(1, 8), st.integers(1, 8), st.integers(1, 5000))
def test_ranks_expected_local_experts_add_up_to_the_whole(experts: int, k: int, ep: int,
                                                          tokens: int) -> None:
    k, ep = min(k, experts), min(ep, experts)
    ranges = expert_ranges(experts, ep)
    assert sum(n for _, n in ranges) == experts
    assert [a for a, _ in ranges] == [sum(n for _, n in ranges[:r]) for r in range(ep)]
    parts = [expected_local_active(experts, k, n, tokens) for _, n in ranges]
    assert all(0 <= p <= n + 1e-9 for p, (_, n) in zip(parts, ranges, strict=True))
    whole = expected_active_experts(experts, k, tokens)
    if whole < tokens * k:  # not capped: the per-rank expectations partition it
        assert sum(parts) == pytest.approx(whole, rel=1e-9)


def _pricer(experts: int, ep: int, hidden: int = 64) -> EpPricer:
    # expert time grows with the active experts (1 us each) and tokens (1 ns each)
    model = _model(experts, hidden=hidden)
    comm = CollectivesModel(ranks=ep, tables=(), link=None, analytic=LinkModel())
    return EpPricer(moe_grid=lambda t, a: (1000.0 * a + t, False), model=model, ep_size=ep,
                    comm=comm)


def test_uneven_split_makes_the_first_rank_the_slowest() -> None:
    p = _pricer(5, 2)
    cost = p.price(1000, cuda_graph=True)  # every expert hit (1000 tokens, top-2 of 5)
    layers = 3
    # rank r at its expected local assignments / top-k = 1000 x local_r / 5 token rows
    assert cost.rank_tokens == (600.0, 400.0)
    assert cost.expert_ns == ((3000 + 600) * layers, (2000 + 400) * layers)
    assert cost.total_ns == max(cost.expert_ns) + cost.dispatch_ns + cost.combine_ns
    even = _pricer(4, 2).price(1000, cuda_graph=True)
    assert even.expert_ns[0] == even.expert_ns[1]


def test_dispatch_and_combine_bytes_and_prices_per_step() -> None:
    hidden, experts, tokens = 64, 5, 48
    p = _pricer(experts, 2, hidden)
    cost = p.price(tokens, cuda_graph=True)
    # dispatch: hidden states + router logits per token (bf16); combine: hidden states
    assert cost.dispatch_bytes == tokens * (hidden + experts) * 2
    assert cost.combine_bytes == tokens * hidden * 2
    link = LinkModel()
    assert cost.dispatch_ns == int(link.time_ns(Collective.ALL_GATHER, cost.dispatch_bytes, 2)
                                   * 3 + 0.5)
    assert cost.combine_ns == int(link.time_ns(Collective.REDUCE_SCATTER, cost.combine_bytes, 2)
                                  * 3 + 0.5)
    assert cost.dispatch_ns > cost.combine_ns > 0
    assert p.sources[("ep_dispatch all_gather", link.source)] == 1


def test_supported_moe_dp_layouts() -> None:
    for layout in (ParallelConfig(data_parallel_size=2, enable_expert_parallel=True),
                   ParallelConfig(data_parallel_size=2),
                   ParallelConfig(data_parallel_size=2, tensor_parallel_size=2,
                                  enable_expert_parallel=True)):
        assert check_supported(layout, is_moe=True) is None


def _trace(n: int, prompt: int = 300, output: int = 20) -> Trace:
    return Trace(requests=tuple(
        Request(request_id=f"r{i}", arrival_ns=int(i * 0.05 * S), input_tokens=prompt,
                output_tokens=output, input_token_ids=tuple(10_000 * (i + 1) + k
                                                            for k in range(prompt)))
        for i in range(n)), source="", name="test")


def test_dp2_ep_example_replays_in_lockstep(data_path) -> None:
    data_path("llmservingsim/profiles/RTXPRO6000/Qwen/Qwen3-30B-A3B-Instruct-2507/bf16")
    data_path("llmservingsim/configs/model/Qwen/Qwen3-30B-A3B-Instruct-2507.json")
    exp = load_experiment(EXAMPLE)
    # the per-step log (kept by default before run() took keep_steps)
    keep = {"keep_steps": True} if "keep_steps" in inspect.signature(run).parameters else {}
    result = run(exp, trace=_trace(12), **keep)
    assert result.summary["num_finished"] == 12
    steps = result.steps
    # both DP ranks serve (the balancer sees published counts) and step together
    assert set(result.requests["instance_id"]) == {0, 1}
    by_start = steps.groupby("start_s")["end_s"].nunique()
    assert (by_start == 1).all()
    moe_dp = result.summary["moe_dp"]
    assert moe_dp["group_steps"] >= steps.groupby("start_s").ngroups
    assert moe_dp["dummy_passes"] >= 31  # the wave lasts up to 31 steps past the last token
    assert moe_dp["ep_expert_lookup"] == [
        "tokens = local assignments / top_k, active = distinct local experts hit"]
    sources = moe_dp["ep_collective_sources"]
    assert set(sources) == {"ep_dispatch all_gather: analytic:nccl(RTXPRO6000)",
                            "ep_combine reduce_scatter: analytic:nccl(RTXPRO6000)"}
