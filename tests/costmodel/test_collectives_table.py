"""Collective tables: mode and rank selection, interpolation, extrapolation, the analytic
NCCL model's bus factors, and the source label of every priced collective."""

from __future__ import annotations

import pytest

from llmsim.costmodel.collectives import (
    Collective,
    CollectivesModel,
    LinkModel,
    NcclModel,
    bus_factor,
    collective_lookup,
)
from llmsim.hardware.links import find_link_spec
from llmsim.v1 import profile_pb2 as pb


def table(op="all_reduce", *, graph=True, selection="vllm", source="test:tbl") -> pb.OpTable:
    """bytes 256/1024/4096 at 2 ranks: graph 10/20/50 us, eager 30/40/70 us; 4 ranks 1 ns."""
    t = pb.OpTable(op=op, kind=pb.OP_KIND_COLLECTIVE)
    rows = [(256, 2, 1, 10e3), (1024, 2, 1, 20e3), (4096, 2, 1, 50e3),
            (256, 2, 0, 30e3), (1024, 2, 0, 40e3), (4096, 2, 0, 70e3),
            (256, 4, 1, 1.0), (4096, 4, 1, 1.0)]
    t.axes.add(name="bytes", values=[r[0] for r in rows])
    t.axes.add(name="ranks", values=[r[1] for r in rows])
    if graph:
        t.axes.add(name="cuda_graph", values=[r[2] for r in rows])
    t.mean_ns.extend(r[3] for r in rows)
    t.attributes["source"] = source
    if selection:
        t.attributes["selection"] = selection
    return t


def test_mode_and_ranks_select_rows():
    g, _ = collective_lookup([table()], "all_reduce", 2, cuda_graph=True)
    assert (g.xs, g.ys) == ([256.0, 1024.0, 4096.0], [10e3, 20e3, 50e3])
    e, _ = collective_lookup([table()], "all_reduce", 2, cuda_graph=False)
    assert e.ys == [30e3, 40e3, 70e3]
    assert collective_lookup([table()], "all_reduce", 8) is None
    assert collective_lookup([table()], "all_gather", 2) is None


def test_interpolation_extrapolation_and_flags():
    g, _ = collective_lookup([table()], "all_reduce", 2, cuda_graph=True)
    assert g(640) == (pytest.approx(15e3), False)            # halfway 256..1024
    assert g(4096) == (50e3, False)
    assert g(8192) == (pytest.approx(50e3 + 30e3 / 3072 * 4096), True)  # last-two slope
    assert g(16) == (10e3, True)                               # below: first value held


def test_repeats_averaged_and_single_node_rows_preferred():
    t = pb.OpTable(op="all_reduce", kind=pb.OP_KIND_COLLECTIVE)
    t.axes.add(name="bytes", values=[100, 100, 100, 200])
    t.axes.add(name="ranks", values=[2, 2, 2, 2])
    t.axes.add(name="devices_per_node", values=[2, 2, 1, 2])
    t.mean_ns.extend([10.0, 20.0, 999.0, 40.0])
    g, _ = collective_lookup([t], "all_reduce", 2)
    assert g.ys == [15.0, 40.0]


def test_bus_factors_are_nccl_tests():
    assert bus_factor(Collective.ALL_REDUCE, 2) == 1.0
    assert bus_factor(Collective.ALL_REDUCE, 8) == pytest.approx(14 / 8)
    assert bus_factor(Collective.ALL_GATHER, 4) == 0.75
    assert bus_factor(Collective.REDUCE_SCATTER, 2) == 0.5
    assert bus_factor(Collective.ALL_TO_ALL, 8) == pytest.approx(7 / 8)
    assert bus_factor(Collective.SEND_RECV, 8) == 1.0


def test_nccl_model_time():
    m = NcclModel(latency_ns=20_000.0, bus_bandwidth_bytes_per_s=10e9, label="x")
    assert m.time_ns(Collective.ALL_REDUCE, 10_000_000, 2) == pytest.approx(20_000 + 1e6)
    assert m.time_ns(Collective.ALL_GATHER, 10_000_000, 2) == pytest.approx(20_000 + 0.5e6)
    assert m.time_ns(Collective.ALL_REDUCE, 10_000_000, 1) == 0.0
    assert m.source == "analytic:nccl(x)"


def test_ring_model_kept_for_explicit_use():
    m = LinkModel(bandwidth_bytes_per_s=1e9, hop_latency_ns=1000.0)
    assert m.all_reduce_ns(64, 2) == pytest.approx(2 * (1000 + 32))
    assert m.time_ns(Collective.SEND_RECV, 64, 2) == pytest.approx(1000 + 64)
    assert LinkModel().source == "ring:default(unsourced)"


def test_priced_collective_names_its_source_and_impl():
    pro = find_link_spec("RTXPRO6000")
    nccl = NcclModel.from_link(pro)
    model = CollectivesModel(ranks=2, tables=[table()], link=pro, analytic=nccl)
    p = model.price(Collective.ALL_REDUCE, 1024, cuda_graph=True)
    assert (p.duration_ns, p.source, p.impl) == (20e3, "table:test:tbl[graph]", "custom_ar")
    p = model.price(Collective.ALL_REDUCE, 1024, cuda_graph=False)
    assert (p.duration_ns, p.source) == (40e3, "table:test:tbl[eager]")
    ag = model.price(Collective.ALL_GATHER, 1 << 20)
    assert ag.source == "analytic:nccl(RTXPRO6000)" and ag.impl == "nccl"
    assert ag.duration_ns == pytest.approx(nccl.time_ns(Collective.ALL_GATHER, 1 << 20, 2))
    # a plain NCCL measurement where vLLM runs its custom kernel says so
    plain = CollectivesModel(ranks=2, tables=[table(graph=False, selection="")], link=pro,
                             analytic=nccl)
    p = plain.price(Collective.ALL_REDUCE, 1024)
    assert p.source == "table:test:tbl(nccl measurement; vLLM runs custom_ar)"
    assert "no measured table" in plain.coverage(Collective.ALL_GATHER)
    assert "custom_ar < 8388608 B" in plain.rule_summary()
