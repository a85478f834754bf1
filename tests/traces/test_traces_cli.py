"""``llmsim trace stats|convert`` and ``llmsim data list|verify`` end to end."""

from __future__ import annotations

import json
import os

import pytest

from llmsim.cli.main import main
from llmsim.trace import load_trace


@pytest.mark.realdata
@pytest.mark.parametrize("name", ["azure-code-2023", "azure-conv-2023", "mooncake-conversation"])
def test_trace_stats_on_real_traces(data_path, tmp_path, capsys, name):
    data_path("mooncake/conversation_trace.jsonl")
    out = tmp_path / "stats"
    assert main(["trace", "stats", name, "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "inter-arrival CV" in text
    stats = json.loads((out / "stats.json").read_text())
    assert (out / "trace_stats.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(out.glob("*.tmp"))
    if name == "azure-code-2023":
        assert stats["num_requests"] == 8819
        assert stats["peak_rate_per_s"] == 67.0  # README: up to 67 requests in one second
        assert stats["empty_bin_share"] == pytest.approx(0.73, abs=0.01)
    if name == "mooncake-conversation":
        assert stats["prefix_block_size"] == 512 and 0 < stats["prefix_reuse_ratio"] < 1


def test_trace_stats_skip_bad_rows_and_errors(tmp_path, capsys):
    src = tmp_path / "t.jsonl"
    src.write_text('{"arrival_time_ns": 0, "input_toks": 3, "output_toks": 1}\n'
                   '{"arrival_time_ns": 5, "input_toks": -3, "output_toks": 1}\n'
                   '{"arrival_time_ns": 9, "input_toks": 4, "output_toks": 2}\n')
    assert main(["trace", "stats", str(src)]) == 2
    err = capsys.readouterr().err
    assert "t.jsonl:2" in err and "input_toks" in err
    assert main(["trace", "stats", str(src), "--skip-bad-rows"]) == 0
    assert "skipped rows: 1" in capsys.readouterr().out


def test_trace_convert_roundtrip(tmp_path, capsys):
    out = tmp_path / "c.jsonl"
    rc = main(["trace", "convert", "tests/fixtures/traces/burstgpt_sample.csv", "--out", str(out),
               "--transform", '{"scale_rate": 2}'])
    assert rc == 0
    back = load_trace("llmservingsim", out)
    assert [r.arrival_ns for r in back.requests] == [2_500_000_000, 59_000_000_000, 61_000_000_000,
                                                     67_500_000_000, 76_000_000_000]
    assert [r.input_tokens for r in back.requests] == [472, 417, 1360, 325, 2003]


@pytest.mark.realdata
def test_data_list_and_verify(data_path, capsys):
    data_path("azure-llm-2023/AzureLLMInferenceTrace_conv.csv")
    assert main(["data", "list"]) == 0
    listing = capsys.readouterr().out
    assert "mooncake" in listing and "Apache-2.0" in listing
    assert main(["data", "verify", "azure-llm-2023", "mooncake"]) == 0
    assert "2 ok" in capsys.readouterr().out


def test_trace_outputs_have_ordinary_permissions(tmp_path, capsys):
    """Atomic writes go through mkstemp (mode 0600); outputs must get 0666 - umask."""
    old = os.umask(0o022)
    try:
        conv = tmp_path / "c.jsonl"
        assert main(["trace", "convert", "tests/fixtures/traces/burstgpt_sample.csv", "--out", str(conv)]) == 0
        assert main(["trace", "stats", str(conv), "--out", str(tmp_path / "st")]) == 0
    finally:
        os.umask(old)
    written = [conv, *sorted((tmp_path / "st").iterdir())]
    assert [p.name for p in written] == ["c.jsonl", "rate.csv", "stats.json", "trace_stats.png"]
    assert {p.stat().st_mode & 0o777 for p in written} == {0o644}


def test_trace_stats_failure_leaves_no_partial_set(tmp_path, capsys, monkeypatch):
    """A plot failure must not leave stats.json / rate.csv that look like a finished run."""
    import llmsim.trace.stats as stats_mod

    def boom(*args, **kwargs):
        raise RuntimeError("plotting failed")

    monkeypatch.setattr(stats_mod, "_plot_png", boom)
    with pytest.raises(RuntimeError):
        main(["trace", "stats", "tests/fixtures/traces/burstgpt_sample.csv", "--out", str(tmp_path / "st")])
    assert not (tmp_path / "st").exists() or not list((tmp_path / "st").iterdir())


def test_trace_cli_bad_paths_exit_2(tmp_path, capsys):
    """A directory as the trace, or an --out that cannot be written: clear error, exit 2."""
    assert main(["trace", "stats", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err
    blocker = tmp_path / "file"
    blocker.write_text("x")
    src = "tests/fixtures/traces/burstgpt_sample.csv"
    assert main(["trace", "convert", src, "--out", str(blocker / "c.jsonl")]) == 2
    assert "field '--out'" in capsys.readouterr().err
    assert main(["trace", "stats", src, "--out", str(blocker / "st")]) == 2
    assert "field '--out'" in capsys.readouterr().err
