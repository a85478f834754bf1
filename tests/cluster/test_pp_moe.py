"""Pipeline parallelism with MoE data parallelism and expert parallelism (vLLM 0.19 runs
both; docs/cluster-semantics.md, "Pipeline parallelism" and "Expert parallelism").

A PP engine's step is the sum of its stages plus the PP send/recv (async PP, H1's model);
under EP each stage's MoE layers run over that stage's dp x tp ranks, so a lock-step group
step is: the slowest rank's PP step without its experts + the EP cost of every layer."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmsim.cluster.moe_dp import MoeMode
from llmsim.cluster.parallel import ParallelConfig, check_supported
from llmsim.costmodel.base import StepBatch
from llmsim.costmodel.profile_model import ProfileCostModel
from llmsim.experiment import load_experiment
from llmsim.model.config import load_model_config
from llmsim.replay import build_cost_model, build_moe_pricer, run
from llmsim.trace.record import Request, Trace

EP_EXAMPLE = (Path(__file__).resolve().parents[2] / "examples"
              / "rtxpro6000-qwen3-30b-a3b-dp2-ep.yaml")


@pytest.fixture
def qwen_data(data_path) -> None:
    data_path("llmservingsim/profiles/RTXPRO6000/Qwen/Qwen3-30B-A3B-Instruct-2507/bf16")
    data_path("llmservingsim/configs/model/Qwen/Qwen3-30B-A3B-Instruct-2507.json")


def _trace(n: int, prompt: int = 300, output: int = 16) -> Trace:
    return Trace(requests=tuple(
        Request(request_id=f"r{i}", arrival_ns=int(i * 0.05 * 1e9), input_tokens=prompt,
                output_tokens=output, input_token_ids=tuple(10_000 * (i + 1) + k
                                                            for k in range(prompt)))
        for i in range(n)), source="", name="test")


@pytest.mark.parametrize("parallel", [
    ParallelConfig(pipeline_parallel_size=2, data_parallel_size=2),
    ParallelConfig(pipeline_parallel_size=2, data_parallel_size=2, enable_expert_parallel=True),
    ParallelConfig(pipeline_parallel_size=2, tensor_parallel_size=2, data_parallel_size=2,
                   enable_expert_parallel=True),
    ParallelConfig(pipeline_parallel_size=2, tensor_parallel_size=2,
                   enable_expert_parallel=True)])
def test_pp_with_moe_dp_and_ep_is_modelled(parallel: ParallelConfig) -> None:
    assert check_supported(parallel, is_moe=True, num_layers=48) is None


def test_pp_ep_step_is_the_rank_pp_step_without_experts_plus_ep_over_every_layer(
        qwen_data) -> None:
    flat = load_experiment(EP_EXAMPLE)
    piped = load_experiment(EP_EXAMPLE, overrides={"engine.pipeline_parallel_size": 2})
    m = load_model_config(flat.model_path)
    (g1,), (g2,) = flat.groups(), piped.groups()
    cm1, cm2 = build_cost_model(flat, m, g1), build_cost_model(piped, m, g2)
    assert isinstance(cm1, ProfileCostModel) and isinstance(cm2, ProfileCostModel)
    ep1, ep2 = build_moe_pricer(flat, g1, m, cm1), build_moe_pricer(piped, g2, m, cm2)
    assert ep2.mode is MoeMode.EP_OVER_DP and ep2.layers == m.num_hidden_layers == 48
    batch1 = StepBatch(prefills=(), decode_context_lens=(300,) * 8, parallel=g1.parallel)
    batch2 = StepBatch(prefills=(), decode_context_lens=(300,) * 8, parallel=g2.parallel)
    c1, c2 = cm1.step_cost(batch1), cm2.step_cost(batch2)
    # the PP engine's own step: the same layers once each plus the PP communication ...
    pp_ns = sum(v for k, v in c2.breakdown_ns.items() if k.startswith("pp_"))
    assert pp_ns > 0 and not any(k.startswith("pp_") for k in c1.breakdown_ns)
    assert c2.breakdown_ns["moe"] == c1.breakdown_ns["moe"]
    assert abs(c2.duration_ns - c1.duration_ns - pp_ns) <= 2  # ns rounding of the parts
    # ... of which the group's EP pricing replaces the TP1 experts of all 48 layers
    assert ep2.rank_adjust_ns(8) == ep1.rank_adjust_ns(8) > 0
    e1, e2 = ep1.price((8, 8), cuda_graph=True), ep2.price((8, 8), cuda_graph=True)
    assert e2 == e1
    assert [c.calls for c in e2.collectives] == [48, 48]  # one dispatch, one combine a layer
    assert [c.ranks for c in e2.collectives] == [2, 2]  # each stage's EP group: dp x tp


def test_stage_weights_spread_the_stage_experts_over_the_ep_group(qwen_data) -> None:
    exp = load_experiment(EP_EXAMPLE)
    m = load_model_config(exp.model_path)
    plain = ParallelConfig(pipeline_parallel_size=2)
    ep = ParallelConfig(pipeline_parallel_size=2, data_parallel_size=2,
                        enable_expert_parallel=True)
    b, h = m.dtype_bytes, m.hidden_size
    for stage in (0, 1):
        experts = 24 * m.num_experts * 3 * h * m.moe_intermediate_size * b
        assert m.weight_bytes(plain, stage) - m.weight_bytes(ep, stage) == experts - experts // 2
    # the stages together hold what the unpiped EP rank holds, bar the lm_head copy of a
    # tied embedding (none here: Qwen3-30B-A3B unties it) and rounding
    whole = m.weight_bytes(ParallelConfig(data_parallel_size=2, enable_expert_parallel=True))
    assert abs(m.weight_bytes(ep, 0) + m.weight_bytes(ep, 1) - whole) <= 2


@pytest.mark.parametrize(("overrides", "mode"), [
    ({"engine.pipeline_parallel_size": 2}, "ep_over_dp"),
    ({"engine.pipeline_parallel_size": 2, "engine.tensor_parallel_size": 2},
     "ep_sequence_parallel")])
def test_dp_ep_with_pp_replays_in_lockstep(qwen_data, overrides: dict[str, int],
                                           mode: str) -> None:
    exp = load_experiment(EP_EXAMPLE, overrides=overrides)
    result = run(exp, trace=_trace(10), keep_steps=True)
    assert result.summary["num_finished"] == 10
    moe = result.summary["moe_dp"]
    assert moe["moe_modes"] == [mode]
    assert moe["ep_communication_ms_per_group_step"] > 0
    steps = result.steps
    assert steps is not None and (steps.groupby("start_s")["end_s"].nunique() == 1).all()
    comm = result.summary["communication"]
    ops = {op for grp in comm for op in grp["collectives"]}
    assert "pp_send_recv" in ops and "pp_token_broadcast" in ops
