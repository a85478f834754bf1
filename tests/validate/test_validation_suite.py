"""Validation suites: file checks, the shipped suite covers every measured run in the data,
one command writes the Markdown / JSON / self-contained HTML table."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from llmsim.cli.main import main
from llmsim.errors import ConfigError
from llmsim.validate.suite import load_suite

ROOT = Path(__file__).resolve().parents[2]
SUITE = ROOT / "examples" / "suites" / "measured-runs.yaml"


def _write(tmp_path, text):
    p = tmp_path / "suite.yaml"
    p.write_text(text)
    return p


@pytest.mark.parametrize("text,field", [
    ("runs: []\n", "runs"),
    ("runs:\n  - experiment: nope.yaml\n", "runs[0].experiment"),
    ("bogus: 1\nruns:\n  - experiment: x.yaml\n", "bogus"),
    ("bands: -1\nruns:\n  - experiment: x.yaml\n", "bands"),
    ("runs:\n  - experiment: x.yaml\n    extra: 1\n", "runs[0].extra"),
    ("runs:\n  - {experiment: x.yaml, name: a}\n  - {experiment: x.yaml, name: a}\n", "runs[1].name"),
])
def test_bad_suite_files_name_the_field(tmp_path, text, field):
    (tmp_path / "x.yaml").write_text("name: x\n")
    with pytest.raises(ConfigError) as exc:
        load_suite(_write(tmp_path, text))
    assert exc.value.field == field


def test_shipped_suite_loads_with_paths_relative_to_it():
    suite = load_suite(SUITE)
    assert suite.name == "measured-runs" and suite.sensitivity and suite.bands > 0
    assert all(e.experiment.is_file() for e in suite.entries)


@pytest.mark.realdata
def test_shipped_suite_covers_every_measured_run_in_the_data(data_path):
    root = data_path("llmservingsim/measured")
    in_data = {str(p.parent.parent.relative_to(root.parent.parent)) for p in root.glob("*/*/vllm/requests.jsonl")}
    # no other measured format (a vllm bench result JSON) anywhere in the data
    data_dir = Path(os.environ["LLMSIM_DATA_DIR"])
    bench = [p for p in data_dir.rglob("*.json") if '"ttfts"' in p.read_text(errors="ignore")[:100_000]
             and p.stat().st_size < 50_000_000]
    assert bench == []
    listed = {e.measured for e in load_suite(SUITE).entries}
    assert in_data and listed == in_data


@pytest.mark.realdata
@pytest.mark.slow
def test_suite_from_one_command(data_path, tmp_path, capsys):
    data_path("llmservingsim/measured/RTX4090/Llama-3.1-8B")
    out = tmp_path / "suite"
    # Its wall time is a speed figure, printed by benchmarks/validate (not asserted here).
    code = main(["validate", "--suite", str(SUITE), "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0
    data = json.loads((out / "suite.json").read_text())
    assert data["schema"] == "llmsim.validation-suite/1" and len(data["runs"]) == 2
    for row in data["runs"]:
        assert row["bands_total"] == 15 and 0 <= row["bands_inside"] <= 15
        assert row["llmservingsim_mean_abs_error_pct"] is not None
        assert row["worst_metric"] in printed
        assert row["most_sensitive"]["parameter"] in {"cpu_overhead", "kv_capacity", "skew_correction", "kernel_time"}
    by_run = {r["run"]: r for r in data["runs"]}
    # the same figures the accuracy pins hold (tests/validate/test_accuracy_pinned.py)
    assert by_run["RTX4090 Llama-3.1-8B"]["mean_abs_error_pct"] == pytest.approx(0.435, abs=0.05)
    assert by_run["RTXPRO6000 Llama-3.1-8B"]["mean_abs_error_pct"] == pytest.approx(1.936, abs=0.05)
    page = (out / "suite.html").read_text()
    assert page.count("data:image/png;base64,") >= 2 * 7 and "<table>" in page
    assert "src='http" not in page and "src=\"http" not in page  # self-contained
    md = (out / "suite.md").read_text()
    assert "| RTX4090 Llama-3.1-8B | 300 |" in md
    for name in ("RTX4090_Llama-3.1-8B", "RTXPRO6000_Llama-3.1-8B"):
        assert (out / "runs" / name / "tornado.png").is_file()
