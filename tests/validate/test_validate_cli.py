"""``llmsim validate``: argument handling, data resolution, end to end on real data."""

from __future__ import annotations

import json

import pytest

from llmsim.cli.main import main
from llmsim.errors import DataNotFoundError
from llmsim.validate.pipeline import engine_notes, resolve_measured


def test_missing_measured_dataset_names_dataset_and_command(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LLMSIM_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with pytest.raises(DataNotFoundError) as exc:
        resolve_measured("llmservingsim/measured/RTX4090/Llama-3.1-8B")
    assert exc.value.dataset == "llmservingsim" and "llmsim data pull llmservingsim" in str(exc.value)
    code = main(["validate", "exp.yaml", "--measured", "llmservingsim/measured/RTX4090/Llama-3.1-8B"])
    err = capsys.readouterr().err
    assert code == 2 and "llmsim data pull llmservingsim" in err


def test_measured_path_as_given_wins(tmp_path):
    (tmp_path / "run").mkdir()
    assert resolve_measured(str(tmp_path / "run")) == tmp_path / "run"


def test_engine_notes_flag_contradicting_settings():
    class Engine:
        max_num_seqs = 128
        max_num_batched_tokens = 2048
        cudagraph_capture_sizes = (1, 2, 4)

    class Exp:
        engine = Engine()

    notes = engine_notes(Exp(), {"max_num_seqs": 256, "max_num_batched_tokens": 2048,
                                 "cudagraph_capture_sizes": [1, 2, 4]})
    assert notes == ["engine setting differs from the measured run: max_num_seqs=128 here, max_num_seqs=256 measured"]


@pytest.mark.realdata
@pytest.mark.slow
def test_validate_end_to_end_rtxpro6000(data_path, tmp_path, capsys):
    from pathlib import Path

    exp = Path(__file__).resolve().parents[2] / "examples" / "rtxpro6000-llama-3.1-8b.yaml"
    measured = data_path("llmservingsim/measured/RTXPRO6000/Llama-3.1-8B")
    code = main(["validate", str(exp), "--measured", str(measured), "--out", str(tmp_path / "rep")])
    out = capsys.readouterr().out
    assert code == 0 and "mean |error| over 15 metrics" in out and str(tmp_path / "rep") in out
    report = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert report["num_requests"] == 300
    assert report["llmservingsim_mean_abs_error_pct"] == pytest.approx(2.1, abs=0.05)
    # a sane replay: every headline metric within 25% (the accuracy itself is reported, not asserted)
    for key, entry in report["metrics"].items():
        assert abs(entry["error_pct"]) < 25.0, key
