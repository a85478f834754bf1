"""Energy in every replay output (needs LLMSIM_DATA_DIR), the online accumulator checked
against the post-hoc power-state model, and ``replay --energy``."""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from llmsim.power.accumulator import POWER_COLUMNS


def _replay(example: str, out: Path) -> tuple[dict, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    from llmsim.experiment import load_experiment

    load_experiment(f"examples/{example}.yaml")  # missing real data: the test is skipped
    subprocess.run([sys.executable, "-m", "llmsim", "replay", f"examples/{example}.yaml",
                    "--out", str(out), "--steps-log", "--no-progress"], check=True,
                   capture_output=True)
    manifest = json.loads((out / ".llmsim-output.json").read_text())
    assert "power.csv" in manifest["files"]
    return (json.loads((out / "summary.json").read_text())["energy"],
            pd.read_csv(out / "requests.csv"), pd.read_csv(out / "steps.csv"),
            pd.read_csv(out / "power.csv"))


@pytest.mark.parametrize("example", ["rtxpro6000-llama-3.1-8b", "rtxpro6000-qwen3-32b-tp2",
                                     "rtxpro6000-qwen3-30b-a3b-dp2-ep"])
def test_energy_in_every_output(example: str, tmp_path: Path) -> None:
    en, req, steps, power = _replay(example, tmp_path / example)
    assert en["available"] and en["covers"] == ["gpu"]
    assert en["energy_j"] > 0 and en["j_per_output_token"] > 0 and en["tokens_per_j"] > 0
    assert en["j_per_input_token"] > 0 and en["j_per_output_token_decode"] > 0
    # conservation: the requests' shares sum to the total; every step has an energy
    assert req["energy_j"].sum() == pytest.approx(en["energy_j"], rel=1e-9)
    assert (req["energy_j"] > 0).all() and steps["energy_j"].notna().all()
    assert list(power.columns) == POWER_COLUMNS
    cl = power[power["scope"] == "cluster"]
    assert cl["power_w"].max() == pytest.approx(en["peak_power_w"])
    # the cluster series integrates to the total (1 s ticks, last one partial)
    t = cl["t"].to_numpy()
    span = np.minimum(t, en["horizon_s"]) - (t - 1.0)
    assert float((cl["power_w"] * span).sum()) == pytest.approx(en["energy_j"], rel=1e-9)
    # node rows are the sum of their GPUs' rows (no node components without a source)
    gpus = power[power["scope"] == "gpu"].groupby("t")["power_w"].sum()
    node = power[power["scope"] == "node"].groupby("t")["power_w"].sum()
    assert np.allclose(gpus.to_numpy(), node.to_numpy())
    # every GPU draws between idle and the power limit on average
    spec = en["gpus"]["RTXPRO6000"]
    g = power[power["scope"] == "gpu"]["power_w"]
    assert g.min() >= spec["idle_w"]["value"] - 1e-9
    assert g.max() <= spec["power_limit_w"]["value"] + 1e-9
    if "dp2-ep" in example:
        assert en["dp_dummy_passes"] > 0


def test_unavailable_without_a_source(tmp_path: Path) -> None:
    en, req, steps, power = _replay("rtx4090-llama-3.1-8b", tmp_path / "r")
    assert not en["available"] and "RTX4090" in en["reason"] and "idle_w" in en["reason"]
    for k in ("energy_j", "avg_power_w", "peak_power_w", "j_per_output_token",
              "j_per_input_token", "tokens_per_j"):
        assert en[k] == "unavailable"
    assert req["energy_j"].isna().all() and steps["energy_j"].isna().all()
    assert len(power) == 0 and list(power.columns) == POWER_COLUMNS


def test_online_matches_post_hoc_model() -> None:
    """The accumulator's GPU energy equals the post-hoc power-state model's on the same step
    log (independent code paths: vectorised segments vs per-step sums)."""
    from llmsim.experiment import load_experiment
    from llmsim.power import energy_report
    from llmsim.replay import run

    exp = load_experiment("examples/rtxpro6000-llama-3.1-8b.yaml")
    keep = {"keep_steps": True} if "keep_steps" in inspect.signature(run).parameters else {}
    res = run(exp, **keep)
    assert res.steps is not None
    post = energy_report(dataclasses.replace(res, steps=res.steps.drop(columns=["energy_j"])),
                         exp)
    en = res.summary["energy"]
    # the post-hoc form reads KV usage rounded to 0.01 % from the log: 1e-5 relative
    assert post.energy_j == pytest.approx(en["energy_j"], rel=1e-5)
    assert post.j_per_input_token == pytest.approx(en["j_per_input_token"], rel=1e-4)


def test_replay_energy_flag(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "llmsim", "replay",
                          "examples/rtxpro6000-llama-3.1-8b.yaml", "--out",
                          str(tmp_path / "o"), "--energy", str(tmp_path / "e"),
                          "--no-progress"], check=True, capture_output=True, text=True).stdout
    assert "energy " in out and "J/output token" in out
    j = json.loads((tmp_path / "e" / "energy.json").read_text())
    s = json.loads((tmp_path / "o" / "summary.json").read_text())["energy"]
    assert j == s and math.isfinite(j["energy_j"])
    assert (tmp_path / "e" / "power.csv").read_text() == (tmp_path / "o" / "power.csv").read_text()


def test_llmservingsim_power_instance_equivalent(tmp_path: Path) -> None:
    """examples/power/llmservingsim-single-node-power.yaml: LLMServingSim's
    single_node_power_instance.json mapped key by key; every component covered."""
    from llmsim.experiment import load_experiment
    from llmsim.replay import run

    exp = load_experiment("examples/power/llmservingsim-single-node-power.yaml")
    res = run(exp)
    en = res.summary["energy"]
    assert en["covers"] == ["base_node", "cpu", "dram", "gpu", "link", "nic", "storage"]
    assert en["not_covered"] == {} and en["steps_by_source"]["constant"] == res.num_steps
    h = en["horizon_s"]
    comp = en["nodes"]["node0"]["components_j"]
    # constant terms x horizon: 60 base, 10 + 190 x 0.15 CPU, 16 x 2 DIMMs, 5 link, 20 NIC,
    # 2 x 5 storage
    for key, w in (("base_node", 60.0), ("dram", 32.0), ("link", 5.0), ("nic", 20.0),
                   ("storage", 10.0)):
        assert comp[key] == pytest.approx(w * h)
    assert comp["gpu_idle"] == pytest.approx(35.0 * h)
    # GPU active: 565 W over the kernel time; CPU: 38.5 W always + 104.5 W while busy
    busy_s = comp["gpu_active"] / 565.0
    assert 0 < busy_s <= h
    assert comp["cpu"] == pytest.approx(38.5 * h + 190 * 0.55 * busy_s)
    assert res.requests["energy_j"].sum() == pytest.approx(en["energy_j"], rel=1e-9)
    assert en["peak_power_w"] <= 165.5 + 35.0 + 565.0 + 104.5 + 1e-6


def test_profile_measured_energy_takes_precedence_end_to_end() -> None:
    """A cost model that reports each step's energy (``StepCost.energy_j``, as a profile
    with NVML energy would): every step is priced from it, not from the power-state law."""
    from llmsim.costmodel.base import StepCost
    from llmsim.experiment import load_experiment
    from llmsim.model.config import load_model_config
    from llmsim.replay import build_cost_model, run

    # no CUDA-graph padding: a step's GPU time is exactly the priced kernel time
    exp = load_experiment("examples/rtxpro6000-llama-3.1-8b.yaml",
                          {"overheads.cudagraph_padding": False})
    inner = build_cost_model(exp, load_model_config(exp.model_path))

    class Measured:
        """The profile's times, with 450 W x kernel time as the 'measured' energy."""

        def step_cost(self, batch: object) -> StepCost:
            c = inner.step_cost(batch)  # type: ignore[arg-type]
            return dataclasses.replace(c, energy_j=450.0 * c.duration_ns / 1e9)

    keep = {"keep_steps": True} if "keep_steps" in inspect.signature(run).parameters else {}
    res = run(exp, cost_model=Measured(), **keep)  # type: ignore[arg-type]
    en = res.summary["energy"]
    assert en["steps_by_source"] == {"profile": res.num_steps, "constant": 0,
                                     "power_state": 0}
    st = res.steps
    assert st is not None
    busy = np.minimum(st["gpu_ms"] / 1e3, st["end_s"] - st["start_s"])
    want = 450.0 * busy + 35.0 * (st["end_s"] - st["start_s"] - busy)
    assert np.allclose(st["energy_j"], want, rtol=1e-6)
    base = run(exp).summary["energy"]
    assert base["steps_by_source"]["power_state"] == res.num_steps


def test_weight_offload_charges_dram_and_cxl_per_step(tmp_path: Path) -> None:
    """Weights streamed from host and CXL memory every step (LLMServingSim's non-LOCAL
    weights) are charged at power.dram.energy_pj_per_bit (CXL without its own figure at
    DRAM's) and counted in the steps' energies."""
    import yaml

    from llmsim.experiment import Experiment, load_experiment
    from llmsim.replay import run

    if "memory_tiers" not in {f.name for f in dataclasses.fields(Experiment)}:
        pytest.skip("no memory tiers in this build")
    raw = yaml.safe_load(Path("examples/rtxpro6000-llama-3.1-8b.yaml").read_text())
    raw.update({
        "name": "offload-energy", "output_dir": str(tmp_path / "o"),
        "memory_tiers": [{"name": "cpu", "kind": "dram", "capacity_bytes": 10**11,
                          "bandwidth_bytes_per_s": 64 * 10**9, "latency_ns": 1000},
                         {"name": "cxl", "kind": "cxl", "capacity_bytes": 10**11,
                          "bandwidth_bytes_per_s": 60 * 10**9, "latency_ns": 250}],
        "weight_offload": {"default": "gpu", "layers": {"0-1": "cxl"}, "lm_head": "cpu"},
        "power": {"dram": {"num_dimms": 16, "idle_w_per_dimm": 2.0, "energy_pj_per_bit": 6.0}}})
    p = tmp_path / "exp.yaml"
    p.write_text(yaml.safe_dump(raw))
    exp = load_experiment(p)
    res = run(exp)
    if "kv_tiers" not in res.summary:
        pytest.skip("memory tiers are not wired into the replay in this build")
    en = res.summary["energy"]
    w = next(e["weight_offload"] for e in res.summary["kv_tiers"]["engines"])
    moved = en["nodes"]["node0"]["moved_bytes"]
    by_loc = {x["location"]: x["bytes_per_rank"] for x in w["locations"]}
    assert moved["dram"] == by_loc["cpu"] * res.num_steps
    assert moved["cxl"] == by_loc["cxl"] * res.num_steps
    dram_j = en["nodes"]["node0"]["components_j"]["dram"]
    assert dram_j == pytest.approx(32.0 * en["horizon_s"]
                                   + (moved["dram"] + moved["cxl"]) * 8 * 6e-12)
    assert "dram" in en["covers"]
    assert res.requests["energy_j"].sum() == pytest.approx(en["energy_j"], rel=1e-9)


def test_pd_kv_transfer_charged_on_the_links() -> None:
    """P/D disaggregation: every KV byte sent from prefill to decode crosses the node's link
    once (LLMServingSim: no ring factor for the P/D send), at power.link.energy_pj_per_bit."""
    from llmsim.experiment import load_experiment
    from llmsim.replay import run

    exp = load_experiment("examples/rtxpro6000-llama-3.1-8b-pd.yaml",
                          {"power": {"link": {"count": 1, "idle_w": 5.0,
                                              "energy_pj_per_bit": 4.0}}})
    res = run(exp)
    en = res.summary["energy"]
    sent = res.summary["pd"]["kv_transfer_bytes_total"]
    assert sent > 0
    node = en["nodes"]["server"]
    assert node["moved_bytes"]["link"] == sent       # TP 1: no collective traffic
    assert node["components_j"]["link"] == pytest.approx(5.0 * en["horizon_s"]
                                                         + sent * 8 * 4e-12)
    assert "link" in en["covers"]
    assert res.requests["energy_j"].sum() == pytest.approx(en["energy_j"], rel=1e-9)


def test_moe_dp_ep_collectives_charged_on_the_links() -> None:
    """MoE DP + EP: each group step's dispatch / combine bytes, ring-counted, on the links."""
    from llmsim.experiment import load_experiment
    from llmsim.replay import run

    exp = load_experiment("examples/rtxpro6000-qwen3-30b-a3b-dp2-ep.yaml",
                          {"power": {"link": {"count": 1, "idle_w": 5.0,
                                              "energy_pj_per_bit": 4.0}}})
    res = run(exp)
    en = res.summary["energy"]
    node = next(iter(en["nodes"].values()))
    moved = node["moved_bytes"]["link"]
    assert moved > 0 and "link" in en["covers"]
    assert node["components_j"]["link"] == pytest.approx(5.0 * en["horizon_s"]
                                                         + moved * 8 * 4e-12)
    assert any("dispatch" in n for n in en["notes"])


def test_fast_forward_gives_the_same_energy() -> None:
    """Decode fast-forward (EnergyAccumulator.on_decode_run) accounts exactly as step by
    step: same totals, power series; per-request shares equal to summation order."""
    from llmsim.experiment import load_experiment
    from llmsim.replay import run

    if "exact_steps" not in inspect.signature(run).parameters:
        pytest.skip("no decode fast-forward in this build")
    exp = load_experiment("examples/rtxpro6000-llama-3.1-8b.yaml")
    a = run(exp, exact_steps=True)  # type: ignore[call-arg]
    b = run(exp)  # type: ignore[call-arg]  # (a kept step log would turn fast-forward off)
    assert b.summary["fast_forward"]["steps_fast_forwarded"] > 0
    ea, eb = a.summary["energy"], b.summary["energy"]
    assert ea["energy_j"] == eb["energy_j"] and ea["nodes"] == eb["nodes"]
    for k in ("j_per_input_token", "j_per_output_token_decode", "tokens_per_j"):
        assert ea[k] == pytest.approx(eb[k], rel=1e-12)  # sums in another order
    assert a.power is not None and a.power.equals(b.power)
    assert np.allclose(a.requests["energy_j"], b.requests["energy_j"], rtol=1e-12, atol=0)


def test_vllm_bench_output_carries_energy(tmp_path: Path) -> None:
    from llmsim.experiment import load_experiment
    from llmsim.validate import load_measured

    load_experiment("examples/rtxpro6000-llama-3.1-8b.yaml")  # missing data: skipped
    out = tmp_path / "b.json"
    subprocess.run([sys.executable, "-m", "llmsim", "replay",
                    "examples/rtxpro6000-llama-3.1-8b.yaml", "--format", "vllm-bench", "--out",
                    str(out), "--no-progress"], check=True, capture_output=True)
    obj = json.loads(out.read_text())
    assert obj["llmsim_energy"]["available"] and obj["llmsim_energy"]["energy_j"] > 0
    assert load_measured(out).num_requests == 300  # still a vLLM bench result to readers


def test_free_gpus_of_a_cluster_node_draw_idle_power(tmp_path: Path) -> None:
    """A node of 4 GPUs with one TP 1 instance placed on GPU 2: all four draw idle power
    over the run, only GPU 2 more; node rows are the sum of its GPUs."""
    import yaml

    from llmsim.experiment import load_experiment
    from llmsim.replay import run

    raw = yaml.safe_load(Path("examples/rtxpro6000-llama-3.1-8b.yaml").read_text())
    mem = raw["hardware"].pop("gpu_memory_bytes")
    raw.pop("hardware")
    raw.update({"name": "four-gpus", "output_dir": str(tmp_path / "o"),
                "cluster": {"nodes": [{"name": "n0", "gpus": [
                    {"hardware": "RTXPRO6000", "count": 4, "gpu_memory_bytes": mem}]}]},
                "instance_groups": [{"name": "g", "placement": {"node": "n0", "gpus": [2]}}]})
    p = tmp_path / "exp.yaml"
    p.write_text(yaml.safe_dump(raw))
    res = run(load_experiment(p))
    en = res.summary["energy"]
    comp = en["nodes"]["n0"]["components_j"]
    assert comp["gpu_idle"] == pytest.approx(4 * 35.0 * en["horizon_s"])
    power = res.power
    assert power is not None
    g = power[power["scope"] == "gpu"]
    assert set(g["name"]) == {f"n0/gpu{k}" for k in range(4)}
    assert (g[g["name"] != "n0/gpu2"]["power_w"] == 35.0).all()
    assert g[g["name"] == "n0/gpu2"]["power_w"].max() > 35.0
