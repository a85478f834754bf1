"""Validation outputs are reproducible and safe to rewrite (issue 17), on the real RTX PRO 6000 run.

Two identical validations write byte-identical files except ``host.json``, which alone holds
host timings; a validation report nested in a replay's output directory survives the replay
being re-run; ``validate --out`` refuses a foreign directory before replaying.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmsim.cli.main import main

REPO = Path(__file__).resolve().parents[2]
EXP = str(REPO / "examples" / "rtxpro6000-llama-3.1-8b.yaml")
MEASURED = "llmservingsim/measured/RTXPRO6000/Llama-3.1-8B"


@pytest.fixture
def measured(data_path) -> str:
    data_path("llmservingsim/workloads/sharegpt-llama-3.1-8b-300-sps10.jsonl")
    return str(data_path(MEASURED))


def _files(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


@pytest.mark.realdata
@pytest.mark.slow
def test_two_identical_validations_are_byte_identical_but_for_host_json(measured, tmp_path, capsys):
    for name in ("a", "b"):
        assert main(["validate", EXP, "--measured", measured, "--out", str(tmp_path / name)]) == 0
    capsys.readouterr()
    a, b = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert a.keys() == b.keys()
    assert {"report.md", "report.json", "host.json", ".llmsim-output.json"} <= a.keys()
    differ = sorted(name for name in a if a[name] != b[name])
    assert differ in ([], ["host.json"])  # only host timings may differ
    report = json.loads(a["report.json"])
    assert "wall_time_s" not in json.dumps(report) and report["simulation"]["num_steps"] > 0
    assert b"host time" not in a["report.md"].replace(b"host time in `host.json`", b"")
    host = json.loads(a["host.json"])
    assert host["schema"] == "llmsim.validation-host/1" and host["simulation_wall_time_s"] > 0


@pytest.mark.realdata
@pytest.mark.slow
def test_validation_nested_in_a_replay_output_survives_the_replay_rerun(measured, tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert main(["replay", EXP, "--no-progress", "--out", str(run_dir)]) == 0
    assert main(["validate", EXP, "--measured", measured, "--out", str(run_dir / "validation")]) == 0
    report = (run_dir / "validation" / "report.json").read_bytes()
    assert main(["replay", EXP, "--no-progress", "--out", str(run_dir)]) == 0
    assert (run_dir / "validation" / "report.json").read_bytes() == report
    assert (run_dir / "summary.json").exists()
    capsys.readouterr()


@pytest.mark.realdata
def test_validate_refuses_a_foreign_out_dir_before_replaying(measured, tmp_path, capsys, monkeypatch):
    import llmsim.replay

    def must_not_run(*_a, **_k):
        raise AssertionError("replayed before checking --out")

    monkeypatch.setattr(llmsim.replay, "run", must_not_run)
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("years")
    assert main(["validate", EXP, "--measured", measured, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "not an llmsim output directory (it holds 'thesis.tex')" in err
    assert (out / "thesis.tex").read_text() == "years"
