"""AIConfigurator kernel databases -> llmsim model profiles (``import_aiconfigurator``).

Real rows: every value checked here is read back from the source parquet independently of
the importer (pyarrow, filtered in the test) and compared with the imported table."""

from __future__ import annotations

from decimal import Decimal

import pyarrow.parquet as pq
import pytest

from llmsim.cli.main import main
from llmsim.costmodel.base import PrefillChunk, StepBatch
from llmsim.costmodel.profile_model import ProfileCostModel
from llmsim.errors import ProfileError, ProfileRangeError
from llmsim.model.config import load_model_config
from llmsim.profile import read_profile, write_profile
from llmsim.profile.importers.aiconfigurator import (
    GemmTable,
    import_aiconfigurator,
    load_system_spec,
    ms_to_ns,
)

pytestmark = pytest.mark.realdata

ROOT = "aiconfigurator"
SYS = "rtx_pro_6000_server"
LLAMA = "llmservingsim/configs/model/meta-llama/Llama-3.1-8B.json"
QWEN_MOE = "llmservingsim/configs/model/Qwen/Qwen3-30B-A3B-Instruct-2507.json"
MIXTRAL = "llmservingsim/configs/model/mistralai/Mixtral-8x7B-v0.1.json"


@pytest.fixture(scope="module")
def llama(request):
    from tests.conftest import require_data

    return import_aiconfigurator(require_data(ROOT), system=SYS,
                                 model_config=require_data(LLAMA), tp_degrees=(1, 2))


def _rows(data_path, kind: str, file: str, **where):
    t = pq.read_table(data_path(f"{ROOT}/systems/data/{SYS}/{kind}/vllm/0.19.0/{file}"))
    cols = t.to_pydict()
    keep = [i for i in range(t.num_rows) if all(cols[c][i] == v for c, v in where.items())]
    return [{c: cols[c][i] for c in cols} for i in keep]


def _table(profile, tp: int, op: str):
    tpp = next(t for t in profile.tp if t.tp_degree == tp)
    return next(o for o in tpp.ops if o.op == op)


def _points(table) -> dict[tuple, float]:
    cols = [list(a.values) for a in table.axes]
    return {tuple(c[i] for c in cols): table.mean_ns[i] for i in range(len(table.mean_ns))}


# ------------------------------------------------------------------ units


def test_ms_to_ns_is_decimal_exact():
    assert ms_to_ns(0.011253) == 11253.0
    assert ms_to_ns(1.479584) == 1479584.0
    assert ms_to_ns(0.0019084444890419643) == float(Decimal("0.0019084444890419643") * 10**6)
    for bad in (float("nan"), float("inf"), -1e-3):
        with pytest.raises(ValueError):
            ms_to_ns(bad)


def test_on_grid_gemm_rows_are_the_measured_rows_in_ns(llama, data_path):
    # Llama-3.1-8B TP1 qkv_proj: n = (32 + 2 x 8) x 128 = 6144, k = 4096, both on the grid
    rows = _rows(data_path, "gemm", "gemm_perf.parquet", gemm_dtype="bfloat16", n=6144, k=4096)
    want = {r["m"]: ms_to_ns(r["latency"]) for r in rows}
    table = _table(llama, 1, "qkv_proj")
    assert table.attributes["n_k_lookup"] == "measured rows"
    got = dict(zip(table.axes[0].values, table.mean_ns, strict=True))
    assert got == want and len(got) == 74
    assert got[1] == pytest.approx(rows[[r["m"] for r in rows].index(1)]["latency"] * 1e6,
                                   rel=1e-12)


def test_decode_and_prefill_attention_points_are_real_rows(llama, data_path):
    gen = _rows(data_path, "attention", "generation_attention_perf.parquet",
                attn_dtype="bfloat16", kv_cache_dtype="bfloat16", num_heads=32,
                num_key_value_heads=8, head_dim=128)
    ctx = _rows(data_path, "attention", "context_attention_perf.parquet",
                attn_dtype="bfloat16", kv_cache_dtype="bfloat16", num_heads=32,
                num_key_value_heads=8, head_dim=128, batch_size=1)
    pts = _points(_table(llama, 1, "attention"))
    for r in gen:  # kv_decode counts the new token: step + 1
        assert pts[(0, 0, r["batch_size"], r["step"] + 1)] == ms_to_ns(r["latency"])
    ctx_ns = {r["isl"]: ms_to_ns(r["latency"]) for r in ctx}
    assert len(ctx_ns) == len(ctx)  # one row per isl for this shape (no averaging)
    for s, t in ctx_ns.items():
        assert pts[(s, 0, 0, 0)] == t
    # AIConfigurator's prefix correction: T(pc + kp) x ((pc + kp)^2 - kp^2) / (pc + kp)^2
    assert pts[(1024, 1024, 0, 0)] == pytest.approx(ctx_ns[2048] * (2048**2 - 1024**2) / 2048**2)
    # mixed = prefill-only + decode-only
    dec = pts[(0, 0, 64, 1024)]
    assert pts[(512, 0, 64, 1024)] == pytest.approx(ctx_ns[512] + dec, rel=1e-15)
    assert pts[(1024, 1024, 64, 1024)] == pytest.approx(pts[(1024, 1024, 0, 0)] + dec,
                                                        rel=1e-15)


def test_elementwise_ops_follow_the_system_yaml(llama, data_path):
    spec = load_system_spec(data_path(f"{ROOT}/systems/{SYS}.yaml"))
    assert spec.mem_bw_bytes_per_s == 1.792e12 and spec.mem_bw_scaling == 0.8
    assert spec.mem_constant_latency_s == 3e-6
    norm = dict(zip(*(_table(llama, 1, "layernorm").axes[0].values,
                      _table(llama, 1, "layernorm").mean_ns), strict=True))
    # 2048 tokens x 2 bytes x (2h + 2h), h = 4096
    want = (2048 * 2 * 4 * 4096 / (1.792e12 * 0.8) + 3e-6) * 1e9
    assert norm[2048] == pytest.approx(want, rel=1e-12)
    act = dict(zip(_table(llama, 2, "act_fn").axes[0].values, _table(llama, 2, "act_fn").mean_ns, strict=True))
    assert act[1] == pytest.approx((2 * 3 * 7168 / (1.792e12 * 0.8) + 3e-6) * 1e9, rel=1e-12)


def test_round_trip_through_a_pb_file_and_provenance(llama, tmp_path):
    back = read_profile(write_profile(llama, tmp_path / "aic.pb"))
    assert back == llama
    prov = back.provenance
    assert prov.hardware == SYS and prov.framework == "vllm"
    assert prov.framework_version == "0.19.0"
    assert prov.source.name == "NVIDIA AIConfigurator perf database"
    assert "gemm_perf.parquet" in prov.attributes["files"]
    assert prov.device_name == "NVIDIA RTX PRO 6000 Blackwell Server Edition"
    # TP2 imported: the all-reduce table travels with the profile
    assert [c.op for c in back.collectives] == ["all_reduce"]


def test_cost_model_prices_the_imported_tables_unchanged(llama, data_path):
    cm = ProfileCostModel(llama, )
    gen = _rows(data_path, "attention", "generation_attention_perf.parquet",
                attn_dtype="bfloat16", kv_cache_dtype="bfloat16", num_heads=32,
                num_key_value_heads=8, head_dim=128, batch_size=8, step=1023)
    assert cm.attention_ns(StepBatch(decode_context_lens=(1024,) * 8)) == ms_to_ns(
        gen[0]["latency"])
    cost = cm.step_cost(StepBatch(prefills=(PrefillChunk(num_new_tokens=512),),
                                  decode_context_lens=(1024,) * 8))
    assert cost.duration_ns == sum(cost.breakdown_ns.values()) > 0
    assert not cm.extrapolations


# ------------------------------------------------------------------ MoE


def test_moe_table_repeats_the_measured_value_across_active_experts(data_path):
    prof = import_aiconfigurator(data_path(ROOT), system=SYS, model_config=data_path(QWEN_MOE),
                                 tp_degrees=(2,))
    rows = _rows(data_path, "moe", "moe_perf.parquet", moe_dtype="bfloat16", hidden_size=2048,
                 inter_size=768, topk=8, num_experts=128, moe_tp_size=2, moe_ep_size=1,
                 distribution="balanced", kernel_source="vllm_fused_moe")
    pts = _points(_table(prof, 2, "moe"))
    assert len(pts) == 2 * len(rows) == 54
    for r in rows:
        t = ms_to_ns(r["latency"])
        assert pts[(r["num_tokens"], 1)] == pts[(r["num_tokens"], 128)] == t
    assert _table(prof, 2, "moe_gate").attributes["shape"] == "n=128,k=2048"


# ------------------------------------------------------------------ refusals


def test_refuses_moe_tp_the_database_lacks(data_path):
    with pytest.raises(ProfileRangeError, match=r"moe_tp=8.*present for this shape: \[1, 2, 4\]"):
        import_aiconfigurator(data_path(ROOT), system=SYS, model_config=data_path(QWEN_MOE),
                              tp_degrees=(8,))


def test_refuses_a_missing_moe_distribution(data_path):
    with pytest.raises(ProfileRangeError, match="no 'balanced' MoE rows.*power_law_1.01"):
        import_aiconfigurator(data_path(ROOT), system="a100_sxm",
                              model_config=data_path(MIXTRAL), tp_degrees=(1,))


def test_refuses_tp_not_dividing_heads_and_unknown_system(data_path):
    with pytest.raises(ProfileRangeError, match="does not divide 32"):
        import_aiconfigurator(data_path(ROOT), system=SYS, model_config=data_path(LLAMA),
                              tp_degrees=(3,))
    with pytest.raises(ProfileError, match="no system data directory"):
        import_aiconfigurator(data_path(ROOT), system="rtx_4090", model_config=data_path(LLAMA))
    with pytest.raises(ProfileRangeError, match="vLLM versions with gemm tables: 0.19.0"):
        import_aiconfigurator(data_path(ROOT), system=SYS, model_config=data_path(LLAMA),
                              version="0.14.0")


def test_router_gemm_below_the_grid_is_left_out_and_reported(data_path):
    # Mixtral's router GEMM has n = 8 experts < the grid's smallest n (32)
    prof = import_aiconfigurator(data_path(ROOT), system=SYS, model_config=data_path(MIXTRAL),
                                 tp_degrees=(1,))
    assert "moe_gate" not in {o.op for o in prof.tp[0].ops}
    assert "tp1/moe_gate" in prof.provenance.attributes["not_imported"]
    cm = ProfileCostModel(prof, )
    assert cm.missing_optional_ops == ("moe_gate",)


def test_gemm_refuses_shapes_outside_the_grid():
    g = GemmTable({(m, n, k): 1.0 for m in (1, 2) for n in (32, 64) for k in (32, 64)})
    for n, k in ((16, 32), (32, 16), (32, 128)):
        with pytest.raises(ProfileRangeError, match="outside the database's grid"):
            g.check("x", n, k)
    g.check("x", 4096, 64)  # n above the grid: column split, answerable


def test_gemm_bilinear_and_column_split_on_a_bilinear_function():
    def f(m, n, k):
        return 0.5 + 0.01 * m + 1e-3 * n + 2e-3 * k + 1e-6 * n * k

    grid = {(m, n, k): f(m, n, k) for m in (1, 8) for n in (32, 64, 256) for k in (32, 128)}
    g = GemmTable(grid)
    assert g.at(8, 64, 128) == f(8, 64, 128)  # on the grid: the row itself
    assert g.at(8, 100, 50) == pytest.approx(f(8, 100, 50), rel=1e-12)  # exact for bilinear f
    assert g.splits(600) == 3
    assert g.at(1, 600, 32) == pytest.approx(3 * f(1, 200, 32), rel=1e-12)
    assert g.at(4, 64, 32) is None  # m not measured


# ------------------------------------------------------------------ CLI


def test_cli_imports_a_model_profile(data_path, tmp_path, capsys):
    out = tmp_path / "aic.pb"
    rc = main(["profile", "import", "aiconfigurator", str(data_path(ROOT)), "--system", SYS,
               "--model", str(data_path(LLAMA)), "--tp", "1", "-o", str(out),
               "--source-commit", "095f58a51c4ca8e61b66ec108d86f223f8d559ce"])
    assert rc == 0 and "TP 1" in capsys.readouterr().out
    prof = read_profile(out)
    assert prof.provenance.source.commit == "095f58a51c4ca8e61b66ec108d86f223f8d559ce"
    assert [t.tp_degree for t in prof.tp] == [1] and not prof.collectives
    assert prof.model.name and load_model_config(data_path(LLAMA)).hidden_size == 4096


def test_replay_runs_on_an_imported_moe_profile_at_tp2(data_path, tmp_path):
    import llmsim

    prof = import_aiconfigurator(data_path(ROOT), system="h100_sxm",
                                 model_config=data_path(QWEN_MOE), tp_degrees=(2,))
    pb_path = write_profile(prof, tmp_path / "qwen-moe-h100.pb")
    trace = llmsim.generate_trace(n=12, rate_per_s=4.0, lengths={"input": 256, "output": 16})
    exp = llmsim.Experiment(
        model_path=str(data_path(QWEN_MOE)), profile_path=str(pb_path),
        hardware=llmsim.HardwareConfig(name="h100_sxm", gpu_memory_bytes=80 * 2**30),
        engine=llmsim.EngineConfig(tensor_parallel_size=2), trace=trace)
    res = llmsim.run(exp)
    assert len(res.requests) == 12
    assert (res.requests["ttft_s"] > 0).all() and (res.requests["tpot_s"] > 0).all()
