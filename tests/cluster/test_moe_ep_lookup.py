"""Which row of the profile's MoE table an EP rank is priced at (llmsim/cluster/moe_dp.py,
``GridTokens``): the TP1 ``moe`` table ran every assignment of its tokens (all experts local),
so a rank is looked up at its local assignments / top-k; a measured per-EP-rank table
(``moe_ep<N>``) at all tokens after dispatch."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from llmsim.cluster.moe_dp import EXPERT_LOOKUP_RULES, EpPricer, GridTokens, expected_local_active
from llmsim.cluster.parallel import ParallelConfig
from llmsim.cluster.routing import ExpertRouting, RoutingPolicy
from llmsim.costmodel.collectives import CollectivesModel, LinkModel
from llmsim.experiment import load_experiment
from llmsim.model.config import ModelConfig, load_model_config
from llmsim.replay import build_cost_model, build_moe_pricer

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "rtxpro6000-qwen3-30b-a3b-dp2-ep.yaml"
BUNDLE = "llmservingsim/profiles/RTXPRO6000/Qwen/Qwen3-30B-A3B-Instruct-2507/bf16"
MODEL = "llmservingsim/configs/model/Qwen/Qwen3-30B-A3B-Instruct-2507.json"
LAYERS = 3


def _csv_us(path: Path) -> dict[tuple[int, int], float]:
    with path.open(encoding="utf-8") as f:
        return {(int(r["tokens"]), int(r["activated_experts"])): float(r["time_us"])
                for r in csv.DictReader(f)}


def _example_pricer(data_path) -> tuple[EpPricer, ModelConfig]:  # type: ignore[no-untyped-def]
    data_path(BUNDLE)
    data_path(MODEL)
    exp = load_experiment(EXAMPLE)
    g = exp.groups()[0]
    m = load_model_config(g.model_path)
    return build_moe_pricer(exp, g, m, build_cost_model(exp, m, g)), m


def test_dp2_ep_rank_is_priced_at_its_local_assignments_in_the_real_table(data_path) -> None:  # type: ignore[no-untyped-def]
    pricer, m = _example_pricer(data_path)
    us = _csv_us(data_path(BUNDLE) / "tp1" / "moe.csv")
    assert (m.num_experts, m.num_experts_per_token, pricer.ep_size) == (128, 8, 2)
    assert pricer.grid_tokens is GridTokens.LOCAL_ASSIGNMENTS
    assert pricer.expert_lookup == EXPERT_LOOKUP_RULES[GridTokens.LOCAL_ASSIGNMENTS]
    # a decode step of 64 tokens on each DP rank: 128 tokens dispatched to both EP ranks,
    # each holding 64 experts: 128 x 8 x 64 / 128 = 512 local assignments = 64 token rows
    cost = pricer.price((64, 64), cuda_graph=True)
    active = 64 * (1 - (1 - 8 / 128) ** 128)
    assert 32 < active < 64
    assert cost.rank_tokens == (64.0, 64.0)
    assert cost.rank_active == (expected_local_active(128, 8, 64, 128),) * 2
    assert cost.rank_active[0] == active
    # tokens = 64 is a grid row of moe.csv: linear along activated_experts 32 -> 64
    row_us = us[(64, 32)] + (us[(64, 64)] - us[(64, 32)]) * (active - 32) / 32
    want = int(row_us * 1000 * m.num_hidden_layers + 0.5)
    assert cost.expert_ns == (want, want)
    # the row at all 128 dispatched tokens (it also computes the masked assignments)
    # bounds it from above
    upper_us = us[(128, 32)] + (us[(128, 64)] - us[(128, 32)]) * (active - 32) / 32
    assert want < upper_us * 1000 * m.num_hidden_layers
    # a full prefill chunk on both ranks: 4096 dispatched tokens stay inside the table
    # (2048 token rows a rank), where the old all-tokens row left it
    before = pricer.extrapolated
    big = pricer.price((2048, 2048), cuda_graph=False)
    assert big.rank_tokens == (2048.0, 2048.0)
    assert pricer.extrapolated == before  # (2048, 64): a measured point
    assert big.expert_ns == (int(us[(2048, 64)] * 1000 * m.num_hidden_layers + 0.5),) * 2


def _toy_model(experts: int, k: int) -> ModelConfig:
    return ModelConfig(name="toy-moe", architecture="Qwen3MoeForCausalLM",
                       num_hidden_layers=LAYERS, hidden_size=64, num_attention_heads=4,
                       num_key_value_heads=2, head_dim=16, intermediate_size=128,
                       vocab_size=1000, num_experts=experts, num_experts_per_token=k,
                       moe_intermediate_size=32)


def _grid(t: float, a: float) -> tuple[float, bool]:
    """Toy table: 1 us per active expert plus 10 ns per token row, per layer."""
    return 1000.0 * a + 10.0 * t, False


def _toy(ep: int, routing: ExpertRouting | None = None, *, full_grid=None,  # type: ignore[no-untyped-def]
         grid_tokens: GridTokens | None = None) -> EpPricer:
    comm = CollectivesModel(ranks=ep, tables=(), link=None, analytic=LinkModel())
    return EpPricer(moe_grid=_grid, model=_toy_model(16, 4), comm=comm,
                    parallel=ParallelConfig(data_parallel_size=ep, enable_expert_parallel=True),
                    routing=routing, full_grid=full_grid, grid_tokens=grid_tokens)


def test_drawn_routing_rank_rows_are_its_assignments_over_top_k() -> None:
    r = ExpertRouting(policy=RoutingPolicy.RANDOM, seed=5, zipf_exponent=None, popularity=())
    p = _toy(2, r)
    cost = p.price(300, cuda_graph=True, key=9)
    counts = r.draw(300, 16, 4, key=9)
    a = (float(counts[:8].sum()), float(counts[8:].sum()))  # linear: experts 0-7 on rank 0
    hit = (float(np.count_nonzero(counts[:8])), float(np.count_nonzero(counts[8:])))
    assert sum(a) == 300 * 4
    assert cost.rank_tokens == (a[0] / 4, a[1] / 4)
    assert cost.rank_active == hit
    assert cost.expert_ns == tuple(int((1000 * h + 10 * t / 4) * LAYERS + 0.5)
                                   for h, t in zip(hit, a, strict=True))


def test_skew_orders_above_balanced_under_both_rules() -> None:
    zipf = ExpertRouting(policy=RoutingPolicy.ZIPF, seed=1, zipf_exponent=1.2, popularity=())
    for rule in GridTokens:
        bal = _toy(2, grid_tokens=rule).price(512, cuda_graph=True)
        skew = _toy(2, zipf, grid_tokens=rule).price(512, cuda_graph=True, key=3)
        # zipf puts most assignments on the low experts (rank 0 under linear placement)
        assert skew.rank_tokens[0] > bal.rank_tokens[0] > skew.rank_tokens[1]
        assert max(skew.expert_ns) > max(bal.expert_ns)
        assert skew.expert_ns[0] > skew.expert_ns[1]


def test_a_measured_per_rank_table_is_read_at_all_dispatched_tokens() -> None:
    full = _toy(2)
    assert full.grid_tokens is GridTokens.LOCAL_ASSIGNMENTS
    # a moe_ep<N> table (full_grid is the TP1 table, not moe_grid): all T rows
    ep_table = _toy(2, full_grid=lambda t, a: (0.0, False))
    assert ep_table.grid_tokens is GridTokens.DISPATCHED
    assert ep_table.expert_lookup == EXPERT_LOOKUP_RULES[GridTokens.DISPATCHED]
    c_full, c_ep = full.price(200, cuda_graph=True), ep_table.price(200, cuda_graph=True)
    assert c_full.rank_tokens == (100.0, 100.0) and c_ep.rank_tokens == (200.0, 200.0)
    assert c_full.rank_active == c_ep.rank_active
    assert c_ep.expert_ns[0] - c_full.expert_ns[0] == 10 * 100 * LAYERS
