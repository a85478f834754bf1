"""LLMServingSim workload JSONL loader: real files, agentic sub-requests, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmsim.errors import ConfigError, TraceFormatError
from llmsim.trace import load_trace
from llmsim.trace.llmservingsim import load_llmservingsim


def write_jsonl(path: Path, rows: list[dict | str]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def row(arrival_ns: int = 0, n_in: int = 3, n_out: int = 2, ids: bool = True) -> dict:
    r = {"arrival_time_ns": arrival_ns, "input_toks": n_in, "output_toks": n_out}
    if ids:
        r["input_tok_ids"] = list(range(n_in))
        r["output_tok_ids"] = list(range(100, 100 + n_out))
    return r


@pytest.mark.realdata
def test_sharegpt_workload_loads_with_token_ids(data_path):
    path = data_path("llmservingsim/workloads/sharegpt-llama-3.1-8b-300-sps10.jsonl")
    trace = load_llmservingsim(path)
    assert len(trace) == 300
    first = trace.requests[0]
    assert (first.request_id, first.arrival_ns, first.input_tokens, first.output_tokens) == (
        "0", 46926808, 2358, 531)
    assert len(first.input_token_ids) == 2358 and len(first.output_token_ids) == 531
    arrivals = [r.arrival_ns for r in trace.requests]
    assert arrivals == sorted(arrivals)
    assert all(r.parent_id is None for r in trace.requests)
    assert trace.name == "sharegpt-llama-3.1-8b-300-sps10"


@pytest.mark.realdata
def test_workload_without_token_ids_and_registry(data_path):
    path = data_path("llmservingsim/workloads/workload_me2_01_mixed.jsonl")
    trace = load_trace("llmservingsim", path)
    assert len(trace) == 608
    assert all(r.input_token_ids is None for r in trace.requests)
    assert trace.requests[0].input_tokens == 27369


def test_registry_resolves_relative_path_in_data_dir(tmp_path, monkeypatch):
    (tmp_path / "w").mkdir()
    write_jsonl(tmp_path / "w" / "t.jsonl", [row(0), row(5)])
    monkeypatch.setenv("LLMSIM_DATA_DIR", str(tmp_path))
    assert len(load_trace("LLMServingSim", "w/t.jsonl")) == 2
    with pytest.raises(ConfigError, match="unknown trace format"):
        load_trace("nope", "w/t.jsonl")
    with pytest.raises(ConfigError, match="unexpected keyword"):
        load_trace("llmservingsim", "w/t.jsonl", bogus=1)


def test_agentic_sub_requests_chain_with_tool_time(tmp_path):
    agentic = {
        "arrival_time_ns": 1000,
        "sub_requests": [
            {"input_toks": 10, "output_toks": 4, "tool_duration_ns": 250},
            {"input_toks": 20, "output_toks": 5, "tool_duration_ns": 70},
            {"input_toks": 30, "output_toks": 6},
        ],
    }
    path = write_jsonl(tmp_path / "a.jsonl", [row(0, ids=False), agentic, row(2000, ids=False)])
    trace = load_llmservingsim(path)
    ids = [r.request_id for r in trace.requests]
    assert ids == ["0", "1.0", "1.1", "1.2", "2"]
    subs = trace.requests[1:4]
    assert [r.parent_id for r in subs] == [None, "1.0", "1.1"]
    assert [r.think_time_ns for r in subs] == [0, 250, 70]
    assert [r.turn for r in subs] == [0, 1, 2]
    assert {r.session_id for r in subs} == {"1"}
    assert all(r.arrival_ns == 1000 for r in subs)
    assert trace.requests[0].parent_id is None and trace.requests[4].session_id is None


@pytest.mark.parametrize(
    ("bad", "line", "field"),
    [
        ({"arrival_time_ns": 5, "input_toks": 0, "output_toks": 2}, 2, "input_toks"),
        ({"arrival_time_ns": 5, "input_toks": 3, "output_toks": -1}, 2, "output_toks"),
        ({"arrival_time_ns": 5, "input_toks": 3}, 2, "output_toks"),
        ({"arrival_time_ns": 5, "input_toks": 2.5, "output_toks": 2}, 2, "input_toks"),
        ({"arrival_time_ns": 5, "input_toks": 3, "output_toks": 2, "input_tok_ids": [1, 2]}, 2,
         "input_tok_ids"),
        ({"arrival_time_ns": -5, "input_toks": 3, "output_toks": 2}, 2, "arrival_time_ns"),
        ({"arrival_time_ns": 10**19, "input_toks": 3, "output_toks": 2}, 2, "arrival_time_ns"),
        ("{not json", 2, None),
    ],
)
def test_bad_row_names_file_line_field(tmp_path, bad, line, field):
    path = write_jsonl(tmp_path / "bad.jsonl", [row(0), bad, row(10)])
    with pytest.raises(TraceFormatError) as info:
        load_llmservingsim(path)
    err = info.value
    assert (err.path, err.line, err.field) == (str(path), line, field)
    assert f"bad.jsonl:{line}" in str(err)
    skipped = load_llmservingsim(path, skip_bad_rows=True)
    assert [r.request_id for r in skipped.requests] == ["0", "2"]
    assert skipped.metadata["skipped_rows"] == "1"


def test_unsorted_arrivals_rejected_or_sorted(tmp_path):
    path = write_jsonl(tmp_path / "u.jsonl", [row(0), row(50), row(20), row(60)])
    with pytest.raises(TraceFormatError, match="not sorted") as info:
        load_llmservingsim(path)
    assert (info.value.line, info.value.field) == (3, "arrival_time_ns")
    trace = load_llmservingsim(path, sort=True)
    assert [r.request_id for r in trace.requests] == ["0", "2", "1", "3"]


def test_empty_trace_rejected(tmp_path):
    path = tmp_path / "e.jsonl"
    path.write_text("\n\n")
    with pytest.raises(TraceFormatError, match="no requests"):
        load_llmservingsim(path)
    write_jsonl(path, [{"arrival_time_ns": 0, "input_toks": 0, "output_toks": 1}])
    with pytest.raises(TraceFormatError, match="no valid requests"):
        load_llmservingsim(path, skip_bad_rows=True)
