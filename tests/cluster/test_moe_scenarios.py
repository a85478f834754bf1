"""MoE across ranks, as scenarios: a 2-rank lock-step event log with EP pricing, DP padding
and 1-token dummy passes feeding the EP dispatch, EP rank imbalance setting the group step,
bytes and count of every EP collective per step, the new layouts end to end on real data,
and YAML errors of the new keys with file, line and field."""

from __future__ import annotations

import inspect
import textwrap
from pathlib import Path

import pytest

from llmsim.cluster.moe_dp import EpPricer, expected_local_active
from llmsim.cluster.parallel import ParallelConfig
from llmsim.cluster.routing import ExpertRouting, RoutingPolicy
from llmsim.costmodel.base import StepBatch, StepCost
from llmsim.costmodel.collectives import Collective, CollectivesModel, LinkModel
from llmsim.errors import ConfigError
from llmsim.experiment import load_experiment
from llmsim.instance import Instance, StepOverheads, StepTimeModel
from llmsim.kvcache import KVCacheManager
from llmsim.metrics import Recorder
from llmsim.model.config import ModelConfig
from llmsim.replay import run
from llmsim.router import RoundRobin
from llmsim.scheduler import Scheduler, SchedulerConfig
from llmsim.sim.lockstep import GLOBAL_IDLE_CHECK_STEPS, LockstepGroup, LockstepSimulation
from llmsim.trace.record import Request, Trace

MS = 1_000_000
US = 1_000
LAYERS = 2
HIDDEN, EXPERTS, TOP_K = 64, 4, 2
EP_EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "rtxpro6000-qwen3-30b-a3b-dp2-ep.yaml"
MIXTRAL = Path(__file__).resolve().parents[2] / "examples" / "h100-mixtral-8x7b-tp2.yaml"


# --------------------------------------------------------------------- fakes
class TokenCost:
    """1 ms per token computed, no moe in the breakdown (the group prices the experts)."""

    def step_cost(self, batch: StepBatch) -> StepCost:
        ns = batch.num_tokens * MS
        return StepCost(duration_ns=ns, breakdown_ns={"dense": ns})


def _model() -> ModelConfig:
    return ModelConfig(name="toy-moe", architecture="Qwen3MoeForCausalLM",
                       num_hidden_layers=LAYERS, hidden_size=HIDDEN, num_attention_heads=4,
                       num_key_value_heads=2, head_dim=16, intermediate_size=128,
                       vocab_size=1000, num_experts=EXPERTS, num_experts_per_token=TOP_K,
                       moe_intermediate_size=32)


def _grid(t: float, a: float) -> tuple[float, bool]:
    """Toy moe table: 100 us per active expert plus 1 us per token row, per layer."""
    return 100.0 * US * a + US * t, False


# 5 GB/s ring, 0 latency: the toy collectives' times are exact in ns
LINK = LinkModel(bandwidth_bytes_per_s=5e9, hop_latency_ns=0.0)
# TP 1 experts spread over the 2 DP ranks, without a moe op in the ranks' own cost (so the
# pricer's rank adjustment is 0 and the ranks' own times stay 1 ms per token)
LAYOUT = ParallelConfig(data_parallel_size=2, tensor_parallel_size=2, enable_expert_parallel=True)


def _pricer(routing: ExpertRouting | None = None) -> EpPricer:
    comm = CollectivesModel(ranks=4, tables=(), link=None, analytic=LINK)
    tp_comm = CollectivesModel(ranks=2, tables=(), link=None, analytic=LINK)
    return EpPricer(moe_grid=_grid, model=_model(), comm=comm, parallel=LAYOUT,
                    routing=routing, tp_comm=tp_comm)


def _instance(i: int, capture: tuple[int, ...]) -> Instance:
    kv = KVCacheManager(64, 4, True)
    cfg = SchedulerConfig(max_num_seqs=8, max_num_batched_tokens=64, block_size=4,
                          enable_prefix_caching=True)
    over = StepOverheads(cpu_step_ns=0, cpu_per_seq_ns=0, cudagraph_padding=bool(capture))
    st = StepTimeModel(TokenCost(), over, cudagraph_capture_sizes=capture)
    return Instance(instance_id=i, name="fake", scheduler=Scheduler(cfg, kv), step_time=st,
                    async_scheduling=False)


def _req(rid: str, t_ms: float, prompt: int, output: int, base: int) -> Request:
    return Request(request_id=rid, arrival_ns=int(t_ms * MS), input_tokens=prompt,
                   output_tokens=output, input_token_ids=tuple(base + k for k in range(prompt)))


def _run(requests: list[Request], capture: tuple[int, ...] = (),
         routing: ExpertRouting | None = None) -> tuple[LockstepGroup, Recorder]:
    insts = [_instance(0, capture), _instance(1, capture)]
    group = LockstepGroup(insts, ep=_pricer(routing), keep_log=True)
    rec = Recorder(requests, keep_steps=True)
    LockstepSimulation(requests, insts, RoundRobin(), rec, groups=[group]).run()
    return group, rec


def _ep_ns(run: tuple[int, int], active: tuple[float, ...] | None = None,
           rows: tuple[float, ...] | None = None) -> int:
    """Expected EP cost of a group step, computed here from the documented formulas."""
    chunks = [2 * -(-t // 2) for t in run]  # TP 2: ceil(T_r / 2) rows per TP rank
    total = sum(chunks)
    if active is None:
        active = (expected_local_active(EXPERTS, TOP_K, 1, total),) * 4
        # balanced: each EP rank's expected local assignments / k = T x 1 local / E
        rows = (total * 1 / EXPERTS,) * 4
    assert rows is not None
    experts = max(int((100 * US * a + US * t) * LAYERS + 0.5) if a > 0 else 0
                  for a, t in zip(active, rows, strict=True))
    # ring: all-gather / reduce-scatter (p-1) steps of bytes/p, no latency
    disp = total * (HIDDEN + EXPERTS) * 2
    comb = total * HIDDEN * 2
    gath = max(chunks) * HIDDEN * 2

    def ring(nbytes: int, p: int) -> float:
        return (p - 1) * (nbytes / p) / 5e9 * 1e9

    comm = sum(int(ring(b, p) * LAYERS + 0.5) for b, p in ((disp, 4), (comb, 4), (gath, 2)))
    return experts + comm


# ------------------------------------------------------------ lock-step event log
def test_two_rank_lockstep_event_log_with_ep_pricing() -> None:
    # r0 (prompt 6) on rank 0; r1 (prompt 3) arrives at 20 ms on rank 1
    group, rec = _run([_req("r0", 0, 6, 2, 100), _req("r1", 20, 3, 2, 900)])
    assert group.log is not None
    events: list[tuple[int, str]] = []
    for s in group.log[:5]:
        events.append((s.start_ns, f"start {s.tokens}"))
        events.append((s.end_ns, "end"))
    s0 = 6 * MS + _ep_ns((6, 1))            # r0's prefill; rank 1 a 1-token dummy pass
    s1 = s0 + 1 * MS + _ep_ns((1, 1))       # r0's decode beside a dummy
    s2 = s1 + 1 * MS + _ep_ns((1, 1))       # both ranks idle: dummy passes (wave lasts)
    assert events[:6] == [(0, "start (6, 0)"), (s0, "end"), (s0, "start (1, 0)"), (s1, "end"),
                          (s1, "start (0, 0)"), (s2, "end")]
    # every group step before r1 arrives is one of the first wave's, dummy-only after r0
    first_wave = [s for s in group.log if s.start_ns < 20 * MS]
    assert all(s.tokens == (0, 0) for s in first_wave[2:])
    # r1 arrives inside the wave (within 32 steps): it joins it, rank 0 runs the dummy
    joined = next(s for s in group.log if s.tokens[1] > 0)
    assert joined.tokens == (0, 3) and joined.run_tokens == (1, 3)
    assert joined.start_ns == max(20 * MS, next(s.end_ns for s in group.log
                                                 if s.end_ns >= 20 * MS))
    assert rec.num_finished == 2
    assert len(group.log) % GLOBAL_IDLE_CHECK_STEPS == 0  # the wave ends at a check


def test_dp_padding_and_dummy_passes_feed_the_ep_dispatch() -> None:
    capture = (1, 2, 4, 8, 16)
    group, _ = _run([_req("r0", 0, 5, 2, 100)], capture)
    assert group.log is not None
    first = group.log[0]
    # 5 tokens pad to 8 and the idle rank's dummy pass pads to 8 too: the EP group
    # dispatches 2 x 8 rows (TP chunks of 4), not 5 + 1
    assert first.run_tokens == (8, 8) and first.tokens == (5, 0)
    ep = first.ep
    assert ep is not None and ep.tokens == 16
    by = {c.name: (c.collective, c.ranks, c.calls, c.nbytes) for c in ep.collectives}
    assert by == {"ep_dispatch": (Collective.ALL_GATHER, 4, LAYERS, 16 * (HIDDEN + EXPERTS) * 2),
                  "ep_combine": (Collective.REDUCE_SCATTER, 4, LAYERS, 16 * HIDDEN * 2),
                  "ep_tp_gather": (Collective.ALL_GATHER, 2, LAYERS, 8 * HIDDEN * 2)}
    assert first.end_ns - first.start_ns == 8 * MS + _ep_ns((8, 8))
    # every step of the wave is counted once in the group's EP totals
    assert group.ep_comm_ns + group.ep_expert_ns == sum(s.ep.total_ns for s in group.log
                                                        if s.ep is not None)
    assert group.num_dummy_passes == sum(t == 0 for s in group.log for t in s.tokens)


# -------------------------------------------------------------- EP rank imbalance
def test_skewed_routing_makes_the_slowest_rank_set_the_group_step() -> None:
    reqs = [_req("r0", 0, 8, 2, 100), _req("r1", 0, 8, 2, 900)]
    bal, _ = _run(reqs)
    # popularity table: every token picks experts 0 and 1 -> EP rank 0 (expert 0) and
    # rank 1 (expert 1) get T assignments each (rows = T / k), ranks 2, 3 none
    hot = ExpertRouting(policy=RoutingPolicy.TABLE, seed=0, zipf_exponent=None,
                        popularity=(0.5, 0.5, 0.0, 0.0))
    skew, _ = _run(reqs, routing=hot)
    assert bal.log is not None and skew.log is not None
    b0, s0 = bal.log[0], skew.log[0]
    assert b0.tokens == s0.tokens == (8, 8)
    assert s0.ep is not None and s0.ep.rank_active == (1.0, 1.0, 0.0, 0.0)
    assert s0.ep.rank_tokens == (8.0, 8.0, 0.0, 0.0)
    assert b0.ep is not None and b0.ep.rank_tokens == (4.0,) * 4
    assert b0.end_ns - b0.start_ns == 8 * MS + _ep_ns((8, 8))
    assert s0.end_ns - s0.start_ns == 8 * MS + _ep_ns((8, 8), (1.0, 1.0, 0.0, 0.0),
                                                      (8.0, 8.0, 0.0, 0.0))
    # balanced: 4 ranks of 1 expert each, ~1 active at 16 x 2 / 4 / 2 = 4 rows; skewed:
    # the hot ranks get twice the assignments (8 rows) with one active expert: the skewed
    # step is longer by 4 us/layer (+ the last fraction of an active expert)
    assert (s0.end_ns - s0.start_ns) - (b0.end_ns - b0.start_ns) == pytest.approx(
        (8 - 4) * US * LAYERS + (100 * US * (1 - expected_local_active(4, 2, 1, 16))) * LAYERS,
        abs=2)


# ------------------------------------------------------------------ real data
def _trace(n: int, prompt: int = 300, output: int = 20) -> Trace:
    return Trace(requests=tuple(
        Request(request_id=f"r{i}", arrival_ns=int(i * 0.05 * 1e9), input_tokens=prompt,
                output_tokens=output, input_token_ids=tuple(10_000 * (i + 1) + k
                                                            for k in range(prompt)))
        for i in range(n)), source="", name="test")


@pytest.fixture
def qwen_data(data_path) -> None:
    data_path("llmservingsim/profiles/RTXPRO6000/Qwen/Qwen3-30B-A3B-Instruct-2507/bf16")
    data_path("llmservingsim/configs/model/Qwen/Qwen3-30B-A3B-Instruct-2507.json")


def test_dp2_tp2_ep_runs_in_lockstep_with_sequence_parallel_moe(qwen_data) -> None:
    exp = load_experiment(EP_EXAMPLE, overrides={"engine.tensor_parallel_size": 2})
    # the per-step log (kept by default before run() took keep_steps)
    keep = {"keep_steps": True} if "keep_steps" in inspect.signature(run).parameters else {}
    result = run(exp, trace=_trace(12), **keep)
    assert result.summary["num_finished"] == 12
    moe = result.summary["moe_dp"]
    assert moe["moe_modes"] == ["ep_sequence_parallel"]
    assert set(moe["ep_collective_sources"]) == {
        "ep_dispatch all_gather: analytic:nccl(RTXPRO6000)",
        "ep_combine reduce_scatter: analytic:nccl(RTXPRO6000)",
        "ep_tp_gather all_gather: analytic:nccl(RTXPRO6000)"}
    assert moe["ep_communication_ms_per_group_step"] > 0
    assert result.steps is not None
    assert (result.steps.groupby("start_s")["end_s"].nunique() == 1).all()


def test_tp_only_ep_runs_and_prices_the_slowest_tp_ranks_experts(qwen_data) -> None:
    exp = load_experiment(EP_EXAMPLE, overrides={"engine.data_parallel_size": 1,
                                                 "engine.tensor_parallel_size": 2})
    result = run(exp, trace=_trace(6))
    assert result.summary["num_finished"] == 6
    assert "moe_dp" not in result.summary  # one engine: no lock-step group


def test_moe_dp_without_ep_prices_tp_sharded_experts_or_names_the_missing_table(
        qwen_data, data_path, tmp_path: Path) -> None:
    # the RTX PRO 6000 Qwen3-30B-A3B bundle has no tp2/moe.csv: refused, located
    exp = load_experiment(EP_EXAMPLE, overrides={"engine.enable_expert_parallel": False})
    with pytest.raises(ConfigError) as err:
        run(exp, trace=_trace(2))
    assert err.value.reason.startswith("not supported yet: ")
    assert "no 'moe' table at TP 2" in err.value.reason
    assert err.value.field == "engine.data_parallel_size"
    lines = EP_EXAMPLE.read_text().splitlines()
    assert err.value.line == next(i for i, t in enumerate(lines, 1)
                                  if "data_parallel_size:" in t)
    # Mixtral on H100 at DP2 x TP2: experts sharded over 4 GPUs, priced from
    # AIConfigurator's fused-MoE table at moe_tp = 4 (in the example's recipe)
    data_path("aiconfigurator/systems/data/h100_sxm")
    data_path("llmservingsim/configs/model/mistralai/Mixtral-8x7B-v0.1.json")
    text = (MIXTRAL.read_text()
            .replace("gpus: [0, 1]}", "gpus: [0, 1, 2, 3]}")
            .replace("  tensor_parallel_size: 2\n", "  tensor_parallel_size: 2\n"
                     "  data_parallel_size: 2\n")
            .replace("profile: profiles/", f"profile: {MIXTRAL.parent}/profiles/"))
    p = tmp_path / "mixtral-dp2.yaml"
    p.write_text(text)
    mix = load_experiment(p)
    result = run(mix, trace=_trace(6))
    assert result.summary["num_finished"] == 6
    assert result.summary["moe_dp"]["moe_modes"] == ["tp_sharded_over_dp"]


def test_unmodelled_all2all_backend_is_refused_at_its_line(qwen_data, tmp_path: Path) -> None:
    text = EP_EXAMPLE.read_text().replace(
        "  enable_expert_parallel: true\n",
        "  enable_expert_parallel: true\n  all2all_backend: deepep_low_latency\n")
    p = tmp_path / "ep.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError) as err:
        run(load_experiment(p), trace=_trace(2))
    assert err.value.field == "engine.all2all_backend"
    assert err.value.line == _line(p, "all2all_backend:")
    assert str(err.value.path) == str(p)
    assert "not supported yet: " in str(err.value)
    # removed backends: vLLM 0.19 falls back to allgather_reducescatter
    p.write_text(text.replace("deepep_low_latency", "naive"))
    assert run(load_experiment(p), trace=_trace(2)).summary["num_finished"] == 2


# --------------------------------------------------------- YAML errors, new keys
def _line(path: Path, text: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if text in line)


@pytest.mark.parametrize(("body", "field", "key", "words"), [
    ("engine:\n  all2all_backend: pplx2\n", "engine.all2all_backend", "all2all_backend:",
     "unknown value 'pplx2'"),
    ("engine:\n  expert_placement_strategy: random\n", "engine.expert_placement_strategy",
     "expert_placement_strategy:", "known: linear, round_robin"),
    ("moe_routing:\n  policy: skewed\n", "moe_routing.policy", "policy:", "unknown value"),
    ("moe_routing:\n  policy: zipf\n", "moe_routing.zipf_exponent", "moe_routing:",
     "needs zipf_exponent"),
    ("moe_routing:\n  policy: zipf\n  zipf_exponent: -1\n", "moe_routing.zipf_exponent",
     "zipf_exponent:", "must be > 0"),
    ("moe_routing:\n  policy: table\n  popularity_path: nowhere.csv\n",
     "moe_routing.popularity_path", "popularity_path:", "not found"),
    ("moe_routing:\n  seed: 1\n  sed: 2\n", "moe_routing.sed", "sed:", "unknown key"),
])
def test_new_keys_errors_name_file_line_and_field(qwen_data, tmp_path: Path, body: str,
                                                  field: str, key: str, words: str) -> None:
    base = EP_EXAMPLE.read_text()
    if body.startswith("engine:"):
        text = base.replace("engine:\n", body, 1)
    else:
        text = base + body
    p = tmp_path / "exp.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_experiment(p)
    e = err.value
    assert (e.field, str(e.path)) == (field, str(p)), e
    assert words in str(e), e
    assert e.line == _line(p, key), e


def test_a_bad_popularity_table_names_its_own_file_and_line(qwen_data, tmp_path: Path) -> None:
    pop = tmp_path / "pop.csv"
    pop.write_text("expert,popularity\n" + "".join(f"{e},1\n" for e in range(127)) + "7,2\n")
    p = tmp_path / "exp.yaml"
    p.write_text(EP_EXAMPLE.read_text() + textwrap.dedent(f"""\
        moe_routing:
          policy: table
          popularity_path: {pop}
        """))
    with pytest.raises(ConfigError) as err:
        run(load_experiment(p), trace=_trace(2))
    assert str(err.value.path) == str(pop) and err.value.line == 129
    assert "expert 7 is listed twice" in str(err.value)


def test_aiconfigurator_ep_tables_price_mixtral_ep_ranks(data_path, tmp_path: Path) -> None:
    import pandas as pd

    from llmsim.model.config import load_model_config
    from llmsim.profile import load_profile

    db = data_path("aiconfigurator/systems/data/h100_sxm")
    cfg = data_path("llmservingsim/configs/model/mistralai/Mixtral-8x7B-v0.1.json")
    # the recipe's TP1 profile holds one EP rank's measured fused-MoE time per EP size
    prof = load_profile(MIXTRAL.parent / "profiles" / "h100-mixtral-8x7b.aic.yaml")
    tp1 = next(t for t in prof.tp if t.tp_degree == 1)
    ops = {t.op: t for t in tp1.ops}
    assert {"moe", "moe_ep2", "moe_ep4", "moe_ep8"} <= set(ops)
    rows = pd.read_parquet(db / "moe/vllm/0.19.0/moe_perf.parquet")
    rows = rows[(rows.hidden_size == 4096) & (rows.inter_size == 14336) & (rows.topk == 2)
                & (rows.num_experts == 8) & (rows.moe_dtype == "bfloat16")
                & (rows.kernel_source == "vllm_fused_moe") & (rows.distribution == "balanced")
                & (rows.moe_tp_size == 1) & (rows.moe_ep_size == 2) & (rows.num_tokens == 16)]
    t = ops["moe_ep2"]
    toks = list(t.axes[0].values)
    assert t.mean_ns[toks.index(16)] == pytest.approx(rows.latency.mean() * 1e6, rel=1e-12)
    # DP2 x TP1 with EP: each rank holds 4 of the 8 experts (weights split by EP), its
    # experts priced from moe_ep2
    model = load_model_config(cfg)
    ep2 = ParallelConfig(data_parallel_size=2, enable_expert_parallel=True)
    experts = 32 * 8 * 3 * 4096 * 14336
    assert model.weight_bytes(ep2) == (model.num_params() - experts) * 2 + experts * 2 // 2
    text = (MIXTRAL.read_text()
            .replace("  tensor_parallel_size: 2\n", "  tensor_parallel_size: 1\n"
                     "  data_parallel_size: 2\n  enable_expert_parallel: true\n")
            .replace("profile: profiles/", f"profile: {MIXTRAL.parent}/profiles/"))
    p = tmp_path / "mixtral-ep2.yaml"
    p.write_text(text)
    result = run(load_experiment(p), trace=_trace(6))
    moe = result.summary["moe_dp"]
    assert moe["moe_modes"] == ["ep_over_dp"] and moe["ep_expert_tables"] == ["tp1/moe_ep2"]
    assert result.summary["num_finished"] == 6
