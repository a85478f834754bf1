"""KV offload copies charged when they run (power/build.py attach_kv_offload /
charge_kv_offload, kvcache/offload.py OffloadManager.copies)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from llmsim.power.accumulator import EnergyAccumulator, GpuPower, InstancePower, NodePower
from llmsim.power.build import attach_kv_offload, charge_kv_offload
from llmsim.power.model import StepShape

S = 1_000_000_000
PJ_PER_BIT = 5.0


def _acc() -> EnergyAccumulator:
    gpu = GpuPower(name="T", idle_w=100.0, power_limit_w=700.0, peak_flops_per_s=1e15,
                   memory_bandwidth_bytes_per_s=1e12)
    shape = StepShape(gpus_per_instance=1, flops_per_token=1e9, weight_bytes=1e9,
                      kv_bytes_per_token=0.0, kv_capacity_tokens=0.0)
    ip = InstancePower(node=0, gpus=(0,), gpu=gpu, shape=shape)
    node = NodePower(name="n0", dram_pj_per_bit=PJ_PER_BIT)
    return EnergyAccumulator(instances=[ip], nodes=[node], gpu_names=["n0/gpu0"],
                             gpu_node=[0], gpu_idle_w=[100.0], num_requests=1)


def _tiers(copies: list[tuple[bool, int, int, int, int]] | None) -> SimpleNamespace:
    pool = SimpleNamespace(spec=SimpleNamespace(kind=SimpleNamespace(value="dram")))
    mgr = SimpleNamespace(pools=[pool], load_bytes=[3 * 10**9], store_bytes=2 * 10**9,
                          copies=copies)
    # a second instance without kv_offload (manager None) is skipped
    return SimpleNamespace(instances=[SimpleNamespace(instance_id=0),
                                      SimpleNamespace(instance_id=1)], managers=[mgr, None])


def _node_w(a: EnergyAccumulator) -> list[float]:
    p = a.power_frame()
    return p[p["scope"] == "node"]["power_w"].tolist()


def test_timed_copies_land_in_their_ticks_and_totals_stay_exact() -> None:
    j = PJ_PER_BIT * 8e-12  # J per byte
    # a 1 GB load in [0.2 s, 0.4 s] and a 2 GB store in [1.5 s, 1.7 s]; 2 GB of the
    # loads has no timed copy (LMCache-like blocking load): spread over the 4 s horizon
    timed, even = _acc(), _acc()
    for a, cp in ((timed, [(False, 0, 10**9, S // 5, 2 * S // 5),
                           (True, 0, 2 * 10**9, 3 * S // 2, 17 * S // 10)]),
                  (even, None)):
        a.finish(4 * S)
        charge_kv_offload(a, _tiers(cp))
    assert timed.total_j() == pytest.approx(even.total_j())
    assert timed.total_j() == pytest.approx(4 * 100.0 + 5e9 * j)
    spread = 2e9 * j / 4
    assert _node_w(timed) == pytest.approx([100 + 1e9 * j + spread, 100 + 2e9 * j + spread,
                                            100 + spread, 100 + spread])
    assert _node_w(even) == pytest.approx([100 + 5e9 * j / 4] * 4)
    moved = timed.summary(0, 1)["nodes"]["n0"]["moved_bytes"]
    assert moved["dram"] == 5 * 10**9


def test_copies_beyond_the_totals_are_clamped() -> None:
    a = _acc()
    a.finish(2 * S)
    charge_kv_offload(a, _tiers([(False, 0, 4 * 10**9, 0, S)]))  # more than load_bytes
    assert a.summary(0, 1)["nodes"]["n0"]["moved_bytes"]["dram"] == 5 * 10**9


def test_attach_turns_recording_on() -> None:
    t = _tiers(None)
    attach_kv_offload(t)
    assert t.managers[0].copies == [] and t.managers[1] is None


def test_native_offload_replay_records_its_copies(tmp_path: Path) -> None:
    """End to end: a vLLM-native KV offload replay (the RTX PRO 6000 example with a CPU tier,
    DRAM pJ/bit set): the energy's DRAM bytes equal the offload totals, charged at the
    pJ/bit, and the per-request energies still sum to the total."""
    import yaml

    from llmsim.experiment import load_experiment
    from llmsim.replay import run

    raw = yaml.safe_load(Path("examples/rtxpro6000-llama-3.1-8b.yaml").read_text())
    raw.update({"name": "kv-offload-energy", "output_dir": str(tmp_path / "o"),
                "memory_tiers": [{"name": "cpu", "kind": "dram", "capacity_bytes": 10**11,
                                  "bandwidth_bytes_per_s": 64 * 10**9, "latency_ns": 1000}],
                "kv_offload": {"backend": "native", "tiers": ["cpu"]},
                "power": {"dram": {"num_dimms": 16, "idle_w_per_dimm": 2.0,
                                   "energy_pj_per_bit": PJ_PER_BIT}}})
    raw.setdefault("trace", {})["transforms"] = [{"truncate": {"max_requests": 40}}]
    p = tmp_path / "exp.yaml"
    p.write_text(yaml.safe_dump(raw))
    res = run(load_experiment(p))
    en = res.summary["energy"]
    off = res.summary["kv_tiers"]["engines"][0]["kv_offload"]
    moved = en["nodes"]["node0"]["moved_bytes"]["dram"]
    assert off["store_bytes"] > 0
    assert moved == off["store_bytes"] + sum(off["load_bytes"])
    dram_j = en["nodes"]["node0"]["components_j"]["dram"]
    assert dram_j == pytest.approx(32.0 * en["horizon_s"] + moved * 8 * PJ_PER_BIT * 1e-12)
    assert res.requests["energy_j"].sum() == pytest.approx(en["energy_j"], rel=1e-9)
