"""Real data: AIConfigurator's measured vLLM all-reduce imported row by row (ms -> ns), the
link constants derived from it, and the measured table found for an experiment's hardware."""

from __future__ import annotations

import logging
from decimal import Decimal

import pyarrow.parquet as pq
import pytest

from llmsim.cli.main import main
from llmsim.cluster.parallel import ParallelConfig
from llmsim.costmodel.base import PrefillChunk, StepBatch
from llmsim.costmodel.registry import CostModelContext, build_cost_model
from llmsim.hardware.links import find_link_spec
from llmsim.model.config import load_model_config
from llmsim.profile.importers.aiconfigurator import (
    comm_table_path,
    import_aiconfigurator_comm,
)
from llmsim.profile.io import load_profile, write_profile

TP2 = ParallelConfig(tensor_parallel_size=2)

pytestmark = pytest.mark.realdata
SYSTEMS = ["rtx_pro_6000_server", "h100_sxm", "h200_sxm", "a100_sxm"]
QWEN = "llmservingsim/configs/model/Qwen/Qwen3-32B.json"
QWEN_PROFILE = "llmservingsim/profiles/RTXPRO6000/Qwen/Qwen3-32B/bf16"


@pytest.mark.parametrize("system", SYSTEMS)
def test_import_every_row(system, data_path, tmp_path):
    d = data_path(f"aiconfigurator/systems/data/{system}")
    profile = import_aiconfigurator_comm(d)
    (t,) = profile.collectives
    rows = pq.read_table(comm_table_path(d)).to_pylist()
    axes = {a.name: list(a.values) for a in t.axes}
    assert len(t.mean_ns) == len(rows) > 40
    for i, row in enumerate(rows):
        assert axes["bytes"][i] == row["message_size"] * 2  # bf16 elements -> bytes
        assert axes["ranks"][i] == row["num_gpus"]
        assert axes["cuda_graph"][i] == (1 if row["backend"] == "vllm_graph" else 0)
        assert t.mean_ns[i] == float(Decimal(repr(row["latency"])).scaleb(6))
    out = write_profile(profile, tmp_path / f"{system}.pb")
    assert load_profile(out).collectives[0] == t
    assert profile.provenance.framework_version == comm_table_path(d).parent.name


def test_known_rows_rtx_pro_6000(data_path):
    """Two rows read off the parquet by hand: 1,048,576 bf16 elements (2 MiB) in a CUDA graph
    took 0.1575 ms; 128 elements (256 B) eagerly 0.0186 ms."""
    (t,) = import_aiconfigurator_comm(
        data_path("aiconfigurator/systems/data/rtx_pro_6000_server")).collectives
    axes = {a.name: list(a.values) for a in t.axes}
    at = {(b, g): v for b, g, v in zip(axes["bytes"], axes["cuda_graph"], t.mean_ns, strict=True)}
    assert at[(2 * 1048576, 1)] == pytest.approx(157_540, abs=10)
    assert at[(256, 0)] == pytest.approx(18_592, abs=1)


def test_cli_import(data_path, tmp_path, capsys):
    out = tmp_path / "pro.pb"
    d = data_path("aiconfigurator/systems/data/rtx_pro_6000_server")
    assert main(["profile", "import", "aiconfigurator", str(d), "-o", str(out)]) == 0
    assert "collectives all_reduce" in capsys.readouterr().out
    assert load_profile(out).collectives[0].attributes["source"] == (
        "aiconfigurator:rtx_pro_6000_server")


def test_rtx_pro_6000_nccl_constants_reproduce_from_the_table(data_path):
    """The YAML's NCCL latency and busbw are the least-squares fit t = a + S / b over the
    graph rows of >= 8 MiB (where vLLM runs NCCL) of the measured table."""
    (t,) = import_aiconfigurator_comm(
        data_path("aiconfigurator/systems/data/rtx_pro_6000_server")).collectives
    axes = {a.name: list(a.values) for a in t.axes}
    pts = [(b, v) for b, g, v in zip(axes["bytes"], axes["cuda_graph"], t.mean_ns, strict=True)
           if g == 1 and b >= 8 << 20]
    n = len(pts)
    sx = sum(b for b, _ in pts)
    sy = sum(v for _, v in pts)
    sxx = sum(b * b for b, _ in pts)
    sxy = sum(b * v for b, v in pts)
    slope = (n * sxy - sx * sy) / (n * sxx - sx * sx)  # ns per byte
    intercept = (sy - slope * sx) / n
    pro = find_link_spec("RTXPRO6000")
    assert n == 8
    assert pro.nccl_bus_bandwidth_bytes_per_s == pytest.approx(1e9 / slope, rel=2e-3)
    assert pro.nccl_latency_ns == pytest.approx(intercept, rel=2e-3)


def qwen_tp2(data_path, **ctx):
    cfg = load_model_config(data_path(QWEN))
    return build_cost_model("profile", CostModelContext(
        model=cfg, parallel=TP2, profile_path=data_path(QWEN_PROFILE), **ctx))


def test_experiment_hardware_finds_the_measured_table(data_path, caplog):
    d = data_path("aiconfigurator/systems/data/rtx_pro_6000_server")
    (t,) = import_aiconfigurator_comm(d).collectives
    with caplog.at_level(logging.INFO):
        cm = qwen_tp2(data_path, hardware="RTXPRO6000", cudagraph_max_tokens=256)
    assert "all_reduce (all_reduce) priced by table:aiconfigurator:rtx_pro_6000_server" in (
        caplog.text)
    assert "logits_all_gather (all_gather) priced by analytic:nccl(RTXPRO6000)" in caplog.text
    # 64 decodes: 64 x 5120 x 2 = 655,360 B, custom AR inside the graph, between table rows
    cost = cm.step_cost(StepBatch(decode_context_lens=(512,) * 64, parallel=TP2))
    axes = {a.name: list(a.values) for a in t.axes}
    graph = {b: v for b, g, v in zip(axes["bytes"], axes["cuda_graph"], t.mean_ns, strict=True) if g}
    lo, hi = 524288, 1048576
    want = graph[lo] + (graph[hi] - graph[lo]) * (655360 - lo) / (hi - lo)
    assert cost.breakdown_ns["all_reduce"] == round(2 * 64 * want)
    assert cost.breakdown_ns["embedding_all_reduce"] == round(want)
    pro = find_link_spec("RTXPRO6000")
    ag_bytes = 64 * 151936 * 2
    assert cost.breakdown_ns["logits_all_gather"] == round(
        pro.nccl_latency_ns + ag_bytes * 0.5 / pro.nccl_bus_bandwidth_bytes_per_s * 1e9)
    # a 2048-token prefill runs eagerly (above the largest capture size) and over NCCL
    cm.step_cost(StepBatch(prefills=(PrefillChunk(num_new_tokens=2048),), parallel=TP2))
    calls = dict(cm.collectives_report().calls)
    src = "table:aiconfigurator:rtx_pro_6000_server"
    assert calls[("all_reduce", "custom_ar", src + "[graph]")] == 1
    assert calls[("all_reduce", "nccl", src + "[eager]")] == 1
    assert calls[("logits_all_gather", "nccl", "analytic:nccl(RTXPRO6000)")] == 2
    assert cm.collectives_report().link == "RTXPRO6000"


def test_missing_table_is_a_logged_reported_fallback(data_path, tmp_path, monkeypatch,
                                                     caplog):
    cfg = load_model_config(data_path(QWEN))
    profile_dir = data_path(QWEN_PROFILE)
    monkeypatch.setenv("LLMSIM_DATA_DIR", str(tmp_path))  # no aiconfigurator/ there
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with caplog.at_level(logging.WARNING):
        cm = build_cost_model("profile", CostModelContext(
            model=cfg, parallel=TP2, profile_path=profile_dir, hardware="RTXPRO6000",
            cudagraph_max_tokens=256))
    assert "not in the data directories" in caplog.text
    assert "all_reduce (all_reduce) priced by analytic:nccl(RTXPRO6000)" in caplog.text
    cm.step_cost(StepBatch(decode_context_lens=(512,), parallel=TP2))
    assert ("all_reduce", "custom_ar", "analytic:nccl(RTXPRO6000)") in dict(
        cm.collectives_report().calls)


def test_unknown_hardware_falls_back_to_the_unsourced_ring_loudly(data_path, caplog):
    cfg = load_model_config(data_path(QWEN))
    from llmsim.costmodel.profile_model import ProfileCostModel

    with caplog.at_level(logging.WARNING):
        cm = ProfileCostModel.from_path(data_path(QWEN_PROFILE), model=cfg, parallel=TP2)
    assert "priced by ring:default(unsourced) (no measured table)" in caplog.text
    cm.step_cost(StepBatch(decode_context_lens=(512,), parallel=TP2))
    report = cm.collectives_report()
    assert report.link is None and report.analytic == "ring:default(unsourced)"


def test_h100_lookup_orders_vllm_table_before_vidur_nccl(data_path):
    from llmsim.costmodel.collectives import Collective, CollectivesModel, NcclModel
    from llmsim.costmodel.registry import find_collective_tables

    data_path("aiconfigurator/systems/data/h100_sxm")
    data_path("vidur/network/h100_dgx")
    h100 = find_link_spec("NVIDIA H100 80GB HBM3")
    tables = find_collective_tables(h100, framework_version="0.19.0")
    assert [(t.op, t.attributes["source"]) for t in tables] == [
        ("all_reduce", "aiconfigurator:h100_sxm"), ("all_reduce", "vidur:h100_dgx"),
        ("send_recv", "vidur:h100_dgx")]
    comm = CollectivesModel(ranks=8, tables=tables, link=h100, analytic=NcclModel.from_link(h100))
    ar = comm.price(Collective.ALL_REDUCE, 1 << 20)
    assert ar.source == "table:aiconfigurator:h100_sxm[graph]" and ar.impl == "symm_mem"
    sr = comm.price(Collective.SEND_RECV, 1 << 20)
    assert sr.source == "table:vidur:h100_dgx" and sr.impl == "nccl"
