"""The online energy accumulator on hand-built steps: idle over gaps, compute- vs
memory-bound steps, the power cap, measured energy first, standby, node components,
per-request conservation, the 1 s series."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmsim.experiment import PowerConfig
from llmsim.power.accumulator import EnergyAccumulator, GpuPower, InstancePower, NodePower
from llmsim.power.build import node_power, resolve_gpu
from llmsim.power.model import StepShape

S = 1_000_000_000
GPU = GpuPower(name="T", idle_w=100.0, power_limit_w=700.0, peak_flops_per_s=1e15,
               memory_bandwidth_bytes_per_s=1e12)
# 1e9 FLOP per token, 1e9 weight bytes per step, no KV
SHAPE = StepShape(gpus_per_instance=1, flops_per_token=1e9, weight_bytes=1e9,
                  kv_bytes_per_token=0.0, kv_capacity_tokens=0.0)


def acc(gpu: GpuPower = GPU, *, n_req: int = 4, gpus: int = 1, idle_gpus: int = 0,
        node: NodePower | None = None, link_per_tok: float = 0.0) -> EnergyAccumulator:
    ip = InstancePower(node=0, gpus=tuple(range(gpus)), gpu=gpu, shape=SHAPE,
                       link_bytes_per_token=link_per_tok)
    n = gpus + idle_gpus
    return EnergyAccumulator(instances=[ip], nodes=[node or NodePower(name="n0")],
                             gpu_names=[f"n0/gpu{i}" for i in range(n)], gpu_node=[0] * n,
                             gpu_idle_w=[gpu.idle_w] * n, num_requests=n_req)


def rec(start_s: float, end_s: float, gpu_ms: float, chunks: list[tuple[int, int]],
        *, prefill: int = 0, energy_j: float | None = None, priced_ms: float | None = None
        ) -> Any:
    """A StepRecord stand-in: chunks ``(request index, new tokens)``."""
    seqs = [(SimpleNamespace(index=i), n) for i, n in chunks]
    tokens = sum(n for _, n in chunks)
    plan = SimpleNamespace(num_prefill_tokens=prefill, num_decodes=tokens - prefill,
                           chunks=tuple(seqs))
    cost = SimpleNamespace(energy_j=energy_j, duration_ns=round((priced_ms or gpu_ms) * 1e6))
    return SimpleNamespace(instance_id=0, start_ns=round(start_s * S), end_ns=round(end_s * S),
                           gpu_ns=round(gpu_ms * 1e6), plan=plan, cost=cost, kv_usage=0.0,
                           output=SimpleNamespace(emitted=[s for s, n in seqs if n == 1]))


def test_idle_power_over_gaps() -> None:
    a = acc(idle_gpus=1)
    e = a.on_step(rec(1.0, 1.01, 10.0, [(0, 1)]))
    a.finish(3 * S)
    # 10 ms decode of 1 token: u_m = 1e9 / (1e12 x 0.01) = 0.1, u_c = 1e-4
    active = 100.0 + 600.0 * (0.1 + 1e-4)
    assert e == pytest.approx(active * 0.01)
    # two GPUs idle for 3 s, one of them active 10 ms
    assert a.total_j() == pytest.approx(2 * 100.0 * 3.0 + (active - 100.0) * 0.01)
    p = a.power_frame()
    g1 = p[(p["scope"] == "gpu") & (p["name"] == "n0/gpu1")]["power_w"]
    assert (g1 == 100.0).all() and len(g1) == 3
    g0 = p[(p["scope"] == "gpu") & (p["name"] == "n0/gpu0")].set_index("t")["power_w"]
    assert g0[1.0] == 100.0 and g0[3.0] == 100.0
    assert g0[2.0] == pytest.approx(100.0 + (active - 100.0) * 0.01)


def test_compute_bound_draws_more_than_memory_bound() -> None:
    # same 10 ms: 1 decode token (memory-bound: u_m 0.1) vs 5000 prefill tokens (u_c 0.5)
    mem, comp = acc(), acc()
    e_mem = mem.on_step(rec(0.0, 0.01, 10.0, [(0, 1)]))
    e_comp = comp.on_step(rec(0.0, 0.01, 10.0, [(0, 5000)], prefill=5000))
    assert e_comp > e_mem
    assert e_comp == pytest.approx((100.0 + 600.0 * (0.5 + 0.1)) * 0.01)


def test_power_cap() -> None:
    # 20000 tokens in 10 ms: u_c = 2 -> capped at the limit; a constant active power above
    # the limit is capped too
    a = acc()
    assert a.on_step(rec(0.0, 0.01, 10.0, [(0, 20000)], prefill=20000)) == pytest.approx(7.0)
    b = acc(GpuPower(name="T", idle_w=100.0, power_limit_w=700.0, active_w=900.0))
    assert b.on_step(rec(0.0, 0.01, 10.0, [(0, 1)])) == pytest.approx(7.0)


def test_measured_energy_takes_precedence() -> None:
    a = acc(gpus=2)
    # 1.5 J measured per rank for the 10 ms priced kernel; 2 ms of padding at the model
    e = a.on_step(rec(0.0, 0.02, 12.0, [(0, 1)], energy_j=1.5, priced_ms=10.0))
    pad_w = 100.0 + 600.0 * min(1.0, 1e9 / (1e12 * 0.012) + 1e9 / (1e15 * 0.012))
    assert e == pytest.approx(2 * (1.5 + pad_w * 0.002) + 2 * 100.0 * 0.008)
    assert a.sources == {"profile": 1, "constant": 0, "power_state": 0}
    # a step without a measurement falls back to the model
    a.on_step(rec(0.02, 0.03, 10.0, [(1, 1)]))
    assert a.sources["power_state"] == 1


def test_standby_after_kernels() -> None:
    gp = GpuPower(name="T", idle_w=35.0, active_w=600.0, standby_w=300.0, standby_s=2.0)
    a = acc(gp)
    a.on_step(rec(0.0, 1.0, 1000.0, [(0, 1)]))
    a.on_step(rec(1.5, 2.0, 500.0, [(1, 1)]))   # 0.5 s gap: standby throughout
    a.finish(10 * S)                              # 8 s tail: standby for 2 s only
    assert a.total_j() == pytest.approx(35.0 * 10 + 565.0 * 1.5 + 265.0 * (0.5 + 2.0))


def test_node_components_and_link() -> None:
    cfg = PowerConfig(base_node_w=60, cpu={"idle_w": 10, "active_w": 200, "utilization": 0.15},
                      dram={"num_dimms": 16, "idle_w_per_dimm": 2.0, "energy_pj_per_bit": 6.0},
                      link={"count": 1, "idle_w": 5, "energy_pj_per_bit": 4.0},
                      nic={"count": 1, "idle_w": 20}, storage={"count": 2, "idle_w": 5})
    node = node_power("n0", cfg, "power")
    assert dict(node.constant_w) == pytest.approx({"base_node": 60.0, "cpu": 10 + 190 * 0.15,
                                                   "dram": 32.0, "link": 5.0, "nic": 20.0,
                                                   "storage": 10.0})
    assert not node.unavailable
    assert node.cpu_busy_w == pytest.approx(190 * (0.7 - 0.15))
    a = acc(node=node, link_per_tok=1000.0)
    a.on_step(rec(0.0, 1.0, 1000.0, [(0, 1), (1, 1)]))
    a.on_transfer(0, "dram", 10**9, 0, S)
    a.finish(2 * S)
    e = a.node_energy()[0]
    assert e["link"] == pytest.approx(5.0 * 2 + 2000 * 8 * 4e-12)
    assert e["dram"] == pytest.approx(32.0 * 2 + 1e9 * 8 * 6e-12)
    assert e["cpu"] == pytest.approx(38.5 * 2 + 104.5 * 1.0)
    s = a.summary(0, 2)
    assert s["covers"] == ["base_node", "cpu", "dram", "gpu", "link", "nic", "storage"]
    assert s["not_covered"] == {}


def test_unset_components_are_not_covered() -> None:
    node = node_power("n0", PowerConfig(), "power")
    assert set(node.unavailable) == {"base_node", "cpu", "dram", "link", "nic", "storage"}
    a = acc(node=node, link_per_tok=1000.0)
    a.on_step(rec(0.0, 1.0, 1000.0, [(0, 1)]))
    a.finish(S)
    s = a.summary(0, 1)
    assert s["covers"] == ["gpu"] and "link" in s["not_covered"]
    assert s["energy_j"] == pytest.approx(s["gpu_energy_j"])


def test_gpu_without_a_source_is_unavailable(tmp_path: Any, monkeypatch: Any) -> None:
    from llmsim.power import build, spec

    # a power file whose idle power has no source (every shipped file has one now)
    (tmp_path / "x100.yaml").write_text(
        "name: X100\npower_limit_w: {value: 700.0, source: a datasheet}\n"
        "idle_w: {value: null, source: no source states it}\n"
        "peak_bf16_flops_per_s: {value: 1.0e+15, source: a datasheet}\n"
        "memory_bandwidth_bytes_per_s: {value: 3.0e+12, source: a datasheet}\n")
    monkeypatch.setattr(build, "find_power_spec",
                        lambda hw: spec.find_power_spec(hw, tmp_path))
    gp, why = resolve_gpu("X100", PowerConfig(), "power")
    assert gp is None and "power.gpu.X100.idle_w" in why
    gp, why = resolve_gpu("X100", PowerConfig(gpu={"x100": {"idle_w": 70.0}}), "power")
    assert gp is not None and gp.idle_w == 70.0 and gp.power_limit_w == 700.0
    assert ("idle_w", 70.0, "experiment power.gpu.X100.idle_w") in gp.sources
    monkeypatch.undo()
    gp, why = resolve_gpu("H100", PowerConfig(), "power")
    assert gp is not None and gp.idle_w == 121.7, why
    gp, why = resolve_gpu("NoSuchGPU", PowerConfig(), "power")
    assert gp is None and "no power file" in why


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.floats(0.0, 0.5), st.floats(0.001, 0.2), st.integers(1, 3),
                          st.integers(0, 3), st.integers(1, 600)), min_size=1, max_size=20))
def test_request_shares_sum_to_the_total(steps: list[tuple[float, float, int, int, int]]
                                         ) -> None:
    a = acc(idle_gpus=1)
    t = 0.0
    for gap, dur, n, first, tok in steps:
        t += gap
        chunks = [((first + k) % 4, tok if k == 0 else 1) for k in range(n)]
        a.on_step(rec(t, t + dur, dur * 900.0, chunks, prefill=tok if tok > 1 else 0))
        t += dur
    a.finish(round((t + 1.0) * S))
    per_req = a.request_energy_j()
    assert per_req.sum() == pytest.approx(a.total_j(), rel=1e-12)
    assert (per_req >= 0).all()
    # the 1 s cluster series integrates to the total
    p = a.power_frame()
    cl = p[p["scope"] == "cluster"]
    h = a.horizon_ns / S  # type: ignore[operator]
    span = np.minimum(cl["t"].to_numpy(), h) - (cl["t"].to_numpy() - 1.0)
    assert float((cl["power_w"].to_numpy() * span).sum()) == pytest.approx(a.total_j(),
                                                                          rel=1e-9)


def test_dummy_pass_counts() -> None:
    a = acc()
    a.on_dummy(0, 0, S // 100, S // 100)
    a.finish(S)
    active = 100.0 + 600.0 * (0.1 + 1e-4)
    assert a.total_j() == pytest.approx(100.0 + (active - 100.0) * 0.01)
    assert a.num_dummy_passes == 1 and a.request_energy_j().sum() == 0.0


def test_long_quiet_gap_is_cut() -> None:
    a = acc()
    a.on_step(rec(0.0, 0.5, 100.0, [(0, 1)]))
    a.on_step(rec(1000.0, 1000.5, 100.0, [(1, 1)]))
    a.finish(1001 * S)
    g = a.power_frame()
    g = g[g["scope"] == "gpu"]
    assert len(g) == 1 + 60 + 1 + 1  # busy tick 1, 60 quiet, the last quiet (1000), tick 1001
    assert g["t"].iloc[-2] == 1000.0 and g["t"].iloc[60] == 61.0
    assert a.total_j() == pytest.approx(
        100.0 * 1001 + 2 * (600.0 * (1e9 / (1e12 * 0.1) + 1e9 / (1e15 * 0.1))) * 0.1)


def test_decode_run_equals_its_steps() -> None:
    """A fast-forwarded decode run accounts exactly as its steps one by one."""
    one, run = acc(idle_gpus=1), acc(idle_gpus=1)
    starts = np.asarray([0.0, 0.011, 0.023, 0.5]) * S
    ends = starts + 0.010 * S
    gpu = np.full(4, 9_000_000)
    per_step = []
    for a, b, g in zip(starts, ends, gpu, strict=True):
        r = rec(a / S, b / S, g / 1e6, [(0, 1), (2, 1)])
        per_step.append(one.on_step(r))
    got = run.on_decode_run(0, (0, 2), starts.astype(np.int64), ends.astype(np.int64), gpu,
                            np.zeros(4))
    assert got == pytest.approx(per_step, rel=1e-12)
    one.finish(2 * S)
    run.finish(2 * S)
    assert run.total_j() == pytest.approx(one.total_j(), rel=1e-12)
    assert run.request_energy_j() == pytest.approx(one.request_energy_j(), rel=1e-12)


def test_weight_stream_and_disk_bytes() -> None:
    cfg = PowerConfig(dram={"num_dimms": 1, "idle_w_per_dimm": 1.0, "energy_pj_per_bit": 5.0})
    a = acc(node=node_power("n0", cfg, "power"))
    a.add_stream(0, "cxl", 10**9)          # no CXL figure: at DRAM's pJ/bit
    e0 = a.on_step(rec(0.0, 0.01, 10.0, [(0, 1)]))
    a.on_transfer(0, "disk", 123, 0, S)    # counted, not priced
    a.finish(S)
    s = a.summary(0, 1)
    assert s["nodes"]["n0"]["components_j"]["dram"] == pytest.approx(1.0 + 1e9 * 8 * 5e-12)
    assert e0 == pytest.approx((100.0 + 600.0 * (0.1 + 1e-4)) * 0.01 + 1e9 * 8 * 5e-12)
    assert s["nodes"]["n0"]["moved_bytes"] == {"dram": 0, "cxl": 10**9, "link": 0, "disk": 123}
    assert any("disk" in n for n in s["notes"])
    with pytest.raises(ValueError, match="unknown transfer kind"):
        a.add_stream(0, "tape", 1)


def test_ep_link_bytes_ring_counted() -> None:
    from llmsim.cluster.moe_dp import EpCollective, EpLayerCost
    from llmsim.costmodel.collectives import Collective
    from llmsim.power.build import ep_link_bytes

    def coll(kind: Collective, ranks: int) -> EpCollective:
        return EpCollective(name="x", collective=kind, ranks=ranks, calls=48, nbytes=1000,
                            duration_ns=1, source="test")

    cost = EpLayerCost(tokens=1, expert_ns=(1,), dispatch_ns=0, combine_ns=0,
                       dispatch_bytes=0, combine_bytes=0,
                       collectives=(coll(Collective.ALL_GATHER, 2),
                                    coll(Collective.REDUCE_SCATTER, 2),
                                    coll(Collective.ALL_REDUCE, 4)))
    assert ep_link_bytes(cost) == 48 * 1000 * (0.5 + 0.5 + 1.5)


def test_decode_run_with_measured_energy() -> None:
    a = acc()
    starts = np.asarray([0, S // 100], dtype=np.int64)
    got = a.on_decode_run(0, (0, 1), starts, starts + S // 100, np.full(2, S // 100),
                          np.zeros(2), energy_j=np.asarray([2.0, np.nan]))
    assert got[0] == pytest.approx(2.0)
    assert got[1] == pytest.approx((100.0 + 600.0 * (0.1 + 2e-4)) * 0.01)
    assert a.sources == {"profile": 1, "constant": 0, "power_state": 1}
