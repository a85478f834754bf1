"""Expert routing policies (llmsim/cluster/routing.py), expert placement and the cross-rank
MoE layouts (llmsim/cluster/moe_dp.py): EP rank imbalance, bytes and count of every EP
collective per step."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from llmsim.cluster.moe_dp import (
    EpPricer,
    EpStepCostModel,
    ExpertPlacement,
    MoeMode,
    check_moe_layout,
    expected_local_active,
    expert_owners,
    moe_mode,
)
from llmsim.cluster.parallel import ParallelConfig
from llmsim.cluster.routing import ExpertRouting, RoutingPolicy, load_popularity
from llmsim.costmodel.base import StepBatch, StepCost
from llmsim.costmodel.collectives import Collective, CollectivesModel, LinkModel
from llmsim.costmodel.decompose import step_ops
from llmsim.costmodel.profile_model import expected_active_experts
from llmsim.errors import ConfigError
from llmsim.model.config import ModelConfig

LAYERS = 3


def _model(experts: int, k: int = 2, hidden: int = 64) -> ModelConfig:
    return ModelConfig(name="toy-moe", architecture="Qwen3MoeForCausalLM",
                       num_hidden_layers=LAYERS, hidden_size=hidden, num_attention_heads=4,
                       num_key_value_heads=2, head_dim=16, intermediate_size=128,
                       vocab_size=1000, num_experts=experts, num_experts_per_token=k,
                       moe_intermediate_size=32)


def _grid(t: float, a: float) -> tuple[float, bool]:
    """Toy moe table: 1 us per active expert plus 1 ns per token row, per layer."""
    return 1000.0 * a + t, False


def _routing(policy: str, *, seed: int = 0, s: float | None = None,
             popularity: tuple[float, ...] = ()) -> ExpertRouting:
    return ExpertRouting(policy=RoutingPolicy(policy), seed=seed, zipf_exponent=s,
                         popularity=popularity)


def _pricer(parallel: ParallelConfig, experts: int = 4, *, routing: ExpertRouting | None = None,
            placement: ExpertPlacement = ExpertPlacement.LINEAR,
            tp_comm: bool = False) -> EpPricer:
    ranks = parallel.data_parallel_size
    if moe_mode(parallel) is MoeMode.EP_SEQUENCE_PARALLEL:
        ranks = parallel.data_parallel_size * parallel.tensor_parallel_size
    comm = CollectivesModel(ranks=ranks, tables=(), link=None, analytic=LinkModel())
    tpc = CollectivesModel(ranks=parallel.tensor_parallel_size, tables=(), link=None,
                           analytic=LinkModel()) if tp_comm else None
    return EpPricer(moe_grid=_grid, model=_model(experts), comm=comm, parallel=parallel,
                    routing=routing, placement=placement, tp_comm=tpc)


DP2_EP = ParallelConfig(data_parallel_size=2, enable_expert_parallel=True)


def test_round_robin_and_linear_placement() -> None:
    assert expert_owners(8, 2) == (0, 0, 0, 0, 1, 1, 1, 1)
    assert expert_owners(8, 2, ExpertPlacement.ROUND_ROBIN) == (0, 1, 0, 1, 0, 1, 0, 1)
    assert expert_owners(5, 2) == (0, 0, 0, 1, 1)  # the first `rem` ranks get one more
    assert expert_owners(5, 3, ExpertPlacement.ROUND_ROBIN) == (0, 1, 2, 0, 1)


def test_layout_modes() -> None:
    assert moe_mode(DP2_EP) is MoeMode.EP_OVER_DP
    assert moe_mode(ParallelConfig(data_parallel_size=2, tensor_parallel_size=2,
                                   enable_expert_parallel=True)) is MoeMode.EP_SEQUENCE_PARALLEL
    assert moe_mode(ParallelConfig(tensor_parallel_size=2, enable_expert_parallel=True)) is (
        MoeMode.EP_OVER_TP)
    assert moe_mode(ParallelConfig(data_parallel_size=2)) is MoeMode.TP_SHARDED_OVER_DP
    assert moe_mode(ParallelConfig(tensor_parallel_size=2)) is None
    assert moe_mode(ParallelConfig(enable_expert_parallel=True)) is None


def test_all2all_backend_and_architecture_refusals() -> None:
    m = _model(8)
    assert check_moe_layout(DP2_EP, m, all2all_backend="allgather_reducescatter") is None
    field, msg = check_moe_layout(DP2_EP, m, all2all_backend="deepep_low_latency") or ("", "")
    assert field == "engine.all2all_backend" and msg.startswith("not supported yet: ")
    sp = ParallelConfig(data_parallel_size=2, tensor_parallel_size=2, enable_expert_parallel=True)
    mixtral = dataclasses.replace(m, architecture="MixtralForCausalLM")
    field, msg = check_moe_layout(sp, mixtral, all2all_backend="allgather_reducescatter") or (
        "", "")
    assert field == "engine.tensor_parallel_size" and "MixtralForCausalLM" in msg
    # a DP = 1 TP-only EP layout has no dispatch: the backend does not matter
    assert check_moe_layout(ParallelConfig(tensor_parallel_size=2, enable_expert_parallel=True),
                            m, all2all_backend="deepep_low_latency") is None


# ------------------------------------------------------------------ EP rank imbalance
def test_skewed_routing_makes_the_hot_rank_set_the_layer() -> None:
    tokens = 1000
    # balanced: both ranks at (expected local assignments / k, expected local active)
    # = (1000 x 2/4, 2 (1 - (1/2)^1000)) = (500, 2)
    bal = _pricer(DP2_EP).price(tokens, cuda_graph=True)
    local = expected_local_active(4, 2, 2, tokens)
    assert bal.rank_tokens == (500.0, 500.0)
    assert bal.expert_ns == (int((1000 * local + 500) * LAYERS + 0.5),) * 2
    # a popularity table sending every token to experts 0 and 1 (rank 0 under linear
    # placement): rank 0 gets all 2T assignments -> looked up at A / k = 2000 / 2 = 1000
    # token rows and 2 active experts; rank 1 gets nothing
    hot = _routing("table", popularity=(0.5, 0.5, 0.0, 0.0))
    skew = _pricer(DP2_EP, routing=hot).price(tokens, cuda_graph=True, key=7)
    assert skew.rank_tokens == (1000.0, 0.0) and skew.rank_active == (2.0, 0.0)
    assert skew.expert_ns == ((1000 * 2 + 1000) * LAYERS, 0)
    assert skew.total_ns - bal.total_ns == max(skew.expert_ns) - max(bal.expert_ns) == (
        (3000 - 2500) * LAYERS)
    # round-robin placement spreads the two hot experts over both ranks: even again
    rr = _pricer(DP2_EP, routing=hot, placement=ExpertPlacement.ROUND_ROBIN).price(
        tokens, cuda_graph=True, key=7)
    assert rr.rank_tokens == (500.0, 500.0) and rr.rank_active == (1.0, 1.0)
    assert rr.expert_ns == ((1000 + 500) * LAYERS,) * 2


def test_steep_zipf_routing_concentrates_on_the_first_experts() -> None:
    # s = 60: p_3 / p_2 = (2/3)^60 ~ 3e-11, so 500 tokens all pick experts 0 and 1
    r = _routing("zipf", seed=3, s=60.0)
    counts = r.draw(500, 8, 2, key=0)
    assert counts.tolist() == [500, 500, 0, 0, 0, 0, 0, 0]
    cost = _pricer(ParallelConfig(data_parallel_size=4, enable_expert_parallel=True), 8,
                   routing=r).price(500, cuda_graph=True, key=0)
    # EP4, linear: rank 0 owns experts 0-1 -> all 1000 assignments: 1000 / 2 rows
    assert cost.rank_tokens == (500.0, 0.0, 0.0, 0.0)
    assert cost.expert_ns == ((2000 + 500) * LAYERS, 0, 0, 0)


def test_random_routing_is_seeded_and_each_token_picks_k_distinct_experts() -> None:
    r = _routing("random", seed=11)
    a, b = r.draw(300, 16, 4, key=5), r.draw(300, 16, 4, key=5)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, r.draw(300, 16, 4, key=6))
    assert not np.array_equal(a, _routing("random", seed=12).draw(300, 16, 4, key=5))
    assert int(a.sum()) == 300 * 4 and int(a.max()) <= 300
    # the Gumbel-top-k draw, done here by hand (the documented procedure)
    rng = np.random.default_rng([11, 5])
    keys = rng.gumbel(size=(300, 16)) + np.log(np.full(16, 1 / 16))
    top = np.argsort(-keys, axis=1)[:, :4]
    assert np.array_equal(a, np.bincount(top.ravel(), minlength=16))


def test_drawn_uniform_routing_agrees_with_balanced_on_average() -> None:
    # 64 draws of 2,000 tokens over 8 experts on EP2: the mean lookup rows per rank is
    # balanced's T local_r / E = 1000
    p = _pricer(DP2_EP, 8, routing=_routing("random", seed=1))
    assert _pricer(DP2_EP, 8).price(2000, cuda_graph=True).rank_tokens == (1000.0, 1000.0)
    rows = np.array([p.price(2000, cuda_graph=True, key=k).rank_tokens for k in range(64)])
    assert rows.sum(axis=1).tolist() == [2000.0] * 64  # T k / k in all
    # rank 0's rows: one draw's std is ~14.6 (hypergeometric, 2 of 8 experts with 4 local,
    # 2000 tokens, over k = 2), so the mean of 64 draws is within 4 std (7.3) of 1000
    assert abs(rows[:, 0].mean() - 1000) < 7.3
    assert rows[:, 0].std() > 5  # the draws do vary


def test_popularity_table_file(tmp_path: Path) -> None:
    f = tmp_path / "pop.csv"
    f.write_text("expert,popularity\n1,3\n0,1\n")
    assert load_popularity(f, 2) == (0.25, 0.75)
    f.write_text("expert,popularity\n0,1\n0,2\n")
    with pytest.raises(ConfigError) as err:
        load_popularity(f, 2)
    assert err.value.line == 3 and "twice" in str(err.value)
    f.write_text("expert,popularity\n0,1\n1,-2\n")
    with pytest.raises(ConfigError) as err:
        load_popularity(f, 2)
    assert err.value.line == 3
    f.write_text("expert,weight\n0,1\n")
    with pytest.raises(ConfigError) as err:
        load_popularity(f, 2)
    assert err.value.line == 1
    f.write_text("expert,popularity\n0,1\n")
    with pytest.raises(ConfigError, match="1 of 2 experts have no row"):
        load_popularity(f, 2)
    with pytest.raises(ConfigError, match="zipf_exponent"):
        _routing("zipf")


# ----------------------------------------------------- EP collectives per step, by layout
def _by_name(cost: object) -> dict[str, tuple[str, int, int, int]]:
    return {c.name: (c.collective.value, c.ranks, c.calls, c.nbytes)
            for c in cost.collectives}  # type: ignore[attr-defined]


def test_ep_over_dp_collectives() -> None:
    h, e, tokens = 64, 4, 48
    cost = _pricer(DP2_EP).price(tokens, cuda_graph=True)
    assert _by_name(cost) == {
        "ep_dispatch": ("all_gather", 2, LAYERS, tokens * (h + e) * 2),
        "ep_combine": ("reduce_scatter", 2, LAYERS, tokens * h * 2)}
    link = LinkModel()
    assert cost.dispatch_ns == int(link.time_ns(Collective.ALL_GATHER, tokens * (h + e) * 2, 2)
                                   * LAYERS + 0.5)


def test_sequence_parallel_ep_collectives() -> None:
    # DP2 x TP2 with EP: ranks at 5 and 8 tokens; TP chunks ceil(5/2) = 3 and 4 per TP rank,
    # so the EP group (4 GPUs) gathers 2 x 3 + 2 x 4 = 14 rows; each DP rank's TP group
    # all-gathers its 2 x chunk rows back (the larger, 8 rows, sets the time)
    sp = ParallelConfig(data_parallel_size=2, tensor_parallel_size=2, enable_expert_parallel=True)
    p = _pricer(sp, 8, tp_comm=True)
    cost = p.price((5, 8), cuda_graph=False)
    h, e = 64, 8
    assert cost.tokens == 14
    assert _by_name(cost) == {
        "ep_dispatch": ("all_gather", 4, LAYERS, 14 * (h + e) * 2),
        "ep_combine": ("reduce_scatter", 4, LAYERS, 14 * h * 2),
        "ep_tp_gather": ("all_gather", 2, LAYERS, 8 * h * 2)}
    link = LinkModel()
    assert cost.tp_gather_ns == int(link.time_ns(Collective.ALL_GATHER, 8 * h * 2, 2) * LAYERS
                                    + 0.5)
    # 4 EP ranks of 2 experts each, at their expected local assignments / k = 14 x 2 / 8
    assert cost.rank_tokens == (3.5,) * 4
    assert cost.expert_ns == (int((1000 * expected_local_active(8, 2, 2, 14) + 3.5) * LAYERS
                                  + 0.5),) * 4
    # the rank's own TP cost model has neither the experts nor their TP all-reduce
    assert p.rank_adjust_ns(8) == 0
    ops = [(o.name, o.op_class.value) for o in step_ops(_model(8), sp)]
    assert ops.count(("all_reduce", "collective")) == 1  # after o_proj only
    assert ("moe", "moe_across_ranks") in ops
    tp2 = [(o.name, o.op_class.value) for o in step_ops(_model(8), ParallelConfig(
        tensor_parallel_size=2))]
    assert tp2.count(("all_reduce", "collective")) == 2 and ("moe", "moe") in tp2


def test_tp_sharded_experts_over_dp() -> None:
    # no EP: every one of the 2 ranks runs all experts (sharded) on all dispatched tokens
    p = _pricer(ParallelConfig(data_parallel_size=2), 8)
    cost = p.price((6, 10), cuda_graph=True)
    active = expected_active_experts(8, 2, 16)
    assert cost.expert_ns == (int((1000 * active + 16) * LAYERS + 0.5),) * 2
    assert set(_by_name(cost)) == {"ep_dispatch", "ep_combine"}
    assert p.rank_adjust_ns(10) == 0


class _Flat:
    """A TP cost model without a moe op: 5 us per token."""

    def step_cost(self, batch: StepBatch) -> StepCost:
        ns = 5000 * batch.num_tokens
        return StepCost(duration_ns=ns, breakdown_ns={"dense": ns})


def test_tp_only_ep_adds_the_slowest_tp_ranks_experts() -> None:
    tp2 = ParallelConfig(tensor_parallel_size=2, enable_expert_parallel=True)
    p = EpPricer(moe_grid=_grid, model=_model(4), comm=None, parallel=tp2)
    cm = EpStepCostModel(_Flat(), p)
    batch = StepBatch(decode_context_lens=(10,) * 3, parallel=tp2)
    cost = cm.step_cost(batch)
    # each TP rank's 2 of 4 experts: 3 x 2 / 4 = 1.5 token rows of local assignments
    moe = int((1000 * expected_local_active(4, 2, 2, 3) + 1.5) * LAYERS + 0.5)
    assert cost.breakdown_ns == {"dense": 15000, "moe": moe}
    assert cost.duration_ns == 15000 + moe
    # no dispatch or combine: the one TP all-reduce stays in the TP cost model
    assert p.price(3, cuda_graph=True).collectives == ()
