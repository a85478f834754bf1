"""Report writing: files, JSON schema, NaN handling, atomic replacement, terminal table."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from validate_factories import FIXTURES, FakeReplay, make_requests, make_timeseries

from llmsim.errors import ConfigError
from llmsim.validate import compare, format_table, load_measured, write_report
from llmsim.validate import report as report_mod


def _comparison():
    run = load_measured(FIXTURES / "vllm_run")
    sim = make_requests(
        [0.11, 0.2, 0.3, 0.42],
        [1.2, 2.2, 0.3, 2.5],
        [11, 21, 1, 5],
        arrival_s=[0.0, 0.51, 1.0, 1.5],
        input_tokens=[100, 50, 30, 80],
        ids=["r0", "r1", "r2", "r3"],
    )
    ts = make_timeseries(running=[2, 3, 3, 1], prompt_throughput=[150, 100, 10, 0], kv_cache_pct=[1, 2, 2, 1])
    fake = FakeReplay(
        requests=sim,
        itls_s=[np.full(k - 1, 0.1) for k in sim["output_tokens"]],
        timeseries=ts,
        num_steps=42,
        wall_time_s=0.01,
    )
    return compare(run, fake, name="fixture")


def test_write_report_files_and_schema(tmp_path):
    comp = _comparison()
    files = write_report(comp, tmp_path / "rep")
    names = sorted(p.name for p in (tmp_path / "rep").iterdir())
    assert names == sorted(
        [
            "report.md",
            "report.json",
            "requests.csv",
            "timeseries.csv",
            "latency_cdf.png",
            "latency_scatter.png",
            "throughput.png",
            "running_waiting.png",
            "kv_usage.png",
            "host.json",
            ".llmsim-output.json",
        ]
    )
    for png in files.plots:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = json.loads(files.json.read_text())
    assert data["schema"] == "llmsim.validation/2"
    assert len([k for k in data["metrics"] if not k.startswith("itl")]) == 15
    for entry in data["metrics"].values():
        assert {"measured", "simulated", "error_pct"} <= entry.keys()
    ttft = data["metrics"]["ttft_mean"]
    assert ttft["measured"] == pytest.approx(250.25)
    assert ttft["llmservingsim"] == {"measured": 250.2, "simulated": 240.0, "error_pct": -4.1}
    assert data["mean_abs_error_pct"] == pytest.approx(comp.mean_abs_error_pct)
    assert data["llmservingsim_mean_abs_error_pct"] == pytest.approx(comp.reference_mean_abs_error_pct)
    # measured running [2, 3, 2, 1] sampled at t - 1 ms (the request shift), read at 1..4 s:
    # [2.001, 2.999, 1.999, 1]; simulated [2, 3, 3, 1]
    assert data["timeseries"]["running"]["nmae_pct"] == pytest.approx(1.003 / 7.999 * 100)
    assert data["totals"]["num_preemptions"]["measured"] is None  # NaN/None -> null
    assert data["simulation"] == {"num_steps": 42}  # host time only in host.json
    assert json.loads(files.host_json.read_text())["simulation_wall_time_s"] == 0.01
    assert data["measurement"]["engine"]["max_num_seqs"] == 8
    md = files.markdown.read_text()
    assert "Mean |error| over the 15 TTFT/TPOT/E2E metrics" in md and "![latency_cdf](latency_cdf.png)" in md


def test_report_replaces_existing_dir_only_when_complete(tmp_path, monkeypatch):
    out = tmp_path / "rep"
    write_report(_comparison(), out)
    before = (out / "report.json").read_text()

    def boom(*_a, **_k):
        raise RuntimeError("plotting failed")

    monkeypatch.setattr(report_mod, "_plots", boom)
    with pytest.raises(RuntimeError):
        write_report(_comparison(), out)
    assert (out / "report.json").read_text() == before  # old report intact
    assert [p.name for p in tmp_path.iterdir()] == ["rep"]  # no temp dirs left behind


def test_report_unwritable_dir_is_a_located_error(tmp_path):
    """An output path that cannot be created gives ConfigError (CLI exit 2), not a traceback."""
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(ConfigError) as exc:
        write_report(_comparison(), blocker / "rep")
    assert exc.value.field == "output_dir" and exc.value.path == str(blocker / "rep")
    assert [p.name for p in tmp_path.iterdir()] == ["file"]


def test_report_dir_has_ordinary_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        files = write_report(_comparison(), tmp_path / "rep")
    finally:
        os.umask(old)
    assert (files.out_dir.stat().st_mode & 0o777) == 0o755
    assert (files.json.stat().st_mode & 0o777) == 0o644


def test_terminal_table_lists_every_metric_and_reference():
    text = format_table(_comparison())
    for label in ("TTFT mean", "TPOT p99", "E2E p50"):
        assert label in text
    assert "LLMServingSim" in text and "mean |error| over 15 metrics" in text
    assert "simulation wall time: 0.01 s (42 steps)" in text


def test_report_energy_section_and_power_plot(tmp_path):
    """A replay that reports energy gets an energy table, report.json ``energy`` and
    power.png next to the throughput; an unavailable one says why, with no plot."""
    import dataclasses

    import pandas as pd

    comp = _comparison()
    energy = {"available": True, "reason": "", "covers": ["gpu"], "not_covered": {"cpu": "x"},
              "energy_j": 100.0, "avg_power_w": 25.0, "peak_power_w": 30.0,
              "j_per_input_token": 0.1, "j_per_output_token": 0.2,
              "j_per_output_token_decode": 0.15, "tokens_per_j": 5.0}
    power = pd.DataFrame({"t": [1.0, 2.0, 1.0, 2.0], "scope": ["node", "node", "cluster", "cluster"],
                          "name": ["node0", "node0", "all", "all"], "power_w": [20.0, 30.0, 20.0, 30.0]})
    files = write_report(dataclasses.replace(comp, sim_energy=energy, sim_power=power), tmp_path / "a")
    assert (tmp_path / "a" / "power.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = json.loads(files.json.read_text())
    assert data["energy"]["simulated"]["j_per_output_token"] == 0.2
    assert data["energy"]["measured"] is None and "power.png" in data["files"]
    md = files.markdown.read_text()
    assert "## Energy (simulated" in md and "not covered (no source): cpu" in md
    assert "![power](power.png)" in md
    assert "energy (simulated; not measured by vLLM): 100.0 J over gpu, avg 25.0 W, 0.2000 J/output token" in \
        format_table(dataclasses.replace(comp, sim_energy=energy))
    off = {"available": False, "reason": "no sourced idle power for GPU 'X'"}
    files = write_report(dataclasses.replace(comp, sim_energy=off, sim_power=power.iloc[:0]), tmp_path / "b")
    assert not (tmp_path / "b" / "power.png").exists()
    assert "Energy unavailable: no sourced idle power for GPU 'X'" in files.markdown.read_text()
    assert json.loads(files.json.read_text())["energy"]["simulated"]["energy_j"] == "unavailable"
    assert "energy unavailable: no sourced idle power" in format_table(dataclasses.replace(comp, sim_energy=off))
