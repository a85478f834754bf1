"""Measured runs (vLLM run directory, vllm bench JSON): every input loads into a consistent
MeasuredRun or raises a MeasuredRunError naming file, line and field."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from readers_factories import FIXTURES, JSON_VALUES, load_or_error, mutated_bytes

from llmsim.errors import MeasuredRunError
from llmsim.validate.measured import MeasuredRun, load_measured

RUN = FIXTURES / "validate" / "vllm_run"
BENCH = FIXTURES / "validate" / "bench_result.json"
FUZZ = settings(max_examples=120, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])
RUN_FILES = ("vllm/requests.jsonl", "vllm/timeseries.csv", "vllm/meta.json",
             "llmservingsim_summary.txt")


def _run_copy(tmp_path, **replace: str | bytes):
    """A copy of the fixture run with files replaced (keys: requests, timeseries, meta,
    summary)."""
    root = tmp_path / "run"
    shutil.copytree(RUN, root)
    names = dict(zip(("requests", "timeseries", "meta", "summary"), RUN_FILES, strict=True))
    for key, content in replace.items():
        path = root / names[key]
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    return root


def _rows() -> list[dict]:
    return [json.loads(x) for x in (RUN / RUN_FILES[0]).read_text().splitlines() if x.strip()]


def _jsonl(rows) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def _error(root) -> MeasuredRunError:
    with pytest.raises(MeasuredRunError) as exc:
        load_measured(root)
    return exc.value


# --------------------------------------------------------------------------- requests.jsonl


def test_non_utf8_requests_name_the_line(tmp_path):
    data = (RUN / RUN_FILES[0]).read_bytes().replace(b'"bench-2"', b'"bench-\xff2"')
    err = _error(_run_copy(tmp_path, requests=data))
    assert err.path.endswith("requests.jsonl") and err.line == 3 and "UTF-8" in err.reason


@pytest.mark.parametrize(("text", "match"), [
    ('{"request_id": ' + "[" * 500 + "]" * 500 + "}", "nests deeper"),
    ('{"request_id": "a", "input_toks": NaN}', "not a number"),
    ('{"request_id": "a", "input_toks": 1e999}', "overflows"),
    ('{"request_id": "a", "input_toks": 99999999999999999999}', "64-bit"),
])
def test_hostile_json_rows(tmp_path, text, match):
    rows = _jsonl(_rows()[:2]) + text + "\n"
    err = _error(_run_copy(tmp_path, requests=rows))
    assert err.line == 3 and match in err.reason


@pytest.mark.parametrize(("field", "value"), [
    ("input_toks", 1.5), ("input_toks", 0), ("output_toks", 2**40), ("output_toks", "3"),
    ("queued_ts", -1.0), ("arrival_time", True), ("request_id", ["x"]), ("request_id", ""),
    ("first_token_ts", 5000.0),  # before scheduled_ts (5000.001)
    ("last_token_ts", 5000.05),  # before first_token_ts
])
def test_request_fields(tmp_path, field, value):
    rows = _rows()
    rows[0][field] = value
    err = _error(_run_copy(tmp_path, requests=_jsonl(rows)))
    assert err.line == 1 and err.field == field


# --------------------------------------------------------------------------- meta.json


@pytest.mark.parametrize(("patch", "field"), [
    ({"num_requests": "4"}, "num_requests"),
    ({"num_requests": 5}, "num_requests"),
    ({"engine_kwargs": [1]}, "engine_kwargs"),
    ({"engine_kwargs": {"max_num_seqs": "8"}}, "engine_kwargs.max_num_seqs"),
    ({"engine_kwargs": {"max_num_seqs": 0}}, "engine_kwargs.max_num_seqs"),
    ({"kv_cache": {"gpu_memory_utilization": 2}}, "kv_cache.gpu_memory_utilization"),
    ({"kv_cache": {"enable_prefix_caching": "yes"}}, "kv_cache.enable_prefix_caching"),
    ({"resolved_config": {"compilation_config": {"cudagraph_capture_sizes": [1, 0]}}},
     "resolved_config.compilation_config.cudagraph_capture_sizes[1]"),
    ({"resolved_config": {"compilation_config": {"cudagraph_capture_sizes": 8}}},
     "resolved_config.compilation_config.cudagraph_capture_sizes"),
    ({"resolved_config": {"scheduler_config": {"async_scheduling": 1}}},
     "resolved_config.scheduler_config.async_scheduling"),
])
def test_meta_json_types(tmp_path, patch, field):
    meta = {**json.loads((RUN / RUN_FILES[2]).read_text()), **patch}
    err = _error(_run_copy(tmp_path, meta=json.dumps(meta)))
    assert err.path.endswith("meta.json") and err.field == field


def test_meta_json_deep_nesting(tmp_path):
    err = _error(_run_copy(tmp_path, meta='{"a": ' + "[" * 1000 + "]" * 1000 + "}"))
    assert "nests deeper" in err.reason


# --------------------------------------------------------------------------- timeseries.csv


@pytest.mark.parametrize(("old", "new", "line", "field"), [
    ("2.0,110.0", "1.0,110.0", 3, "t"),
    ("2.0,110.0,20.0,3,0,2.0", "2.0,110.0,20.0,3,0,150", 3, "kv_cache_pct"),
    ("2.0,110.0,20.0,3,0,2.0", "2.0,110.0,20.0,-3,0,2.0", 3, "running"),
    ("2.0,110.0,20.0,3,0,2.0", "2.0,110.0,inf,3,0,2.0", 3, "gen_throughput"),
    ("2.0,110.0,20.0,3,0,2.0", "\n2.0,110.0,20.0,3,0,2.0", 3, "t"),
])
def test_timeseries(tmp_path, old, new, line, field):
    text = (RUN / RUN_FILES[1]).read_text()
    assert old in text
    err = _error(_run_copy(tmp_path, timeseries=text.replace(old, new, 1)))
    assert err.path.endswith("timeseries.csv") and (err.line, err.field) == (line, field)


def test_timeseries_non_utf8(tmp_path):
    data = (RUN / RUN_FILES[1]).read_bytes().replace(b"3.0,0.0", b"3.0,\xe90.0")
    err = _error(_run_copy(tmp_path, timeseries=data))
    assert err.line == 4 and "UTF-8" in err.reason


def test_summary_rows(tmp_path):
    text = (RUN / RUN_FILES[3]).read_text()
    first = next(x for x in text.splitlines() if x.startswith("TTFT"))
    n = text.splitlines().index(first) + 1
    bad = text.replace(first, first.split()[0] + " " + first.split()[1] + " 1..2 3 4%", 1)
    err = _error(_run_copy(tmp_path, summary=bad))
    assert err.line == n and err.path.endswith("llmservingsim_summary.txt")
    err = _error(_run_copy(tmp_path / "b", summary=text + first + "\n"))
    assert "twice" in err.reason


# --------------------------------------------------------------------------- bench JSON


@pytest.mark.parametrize(("patch", "field"), [
    ({"input_lens": [120.5, 64, 32, 256]}, "input_lens[0]"),
    ({"output_lens": [4, 3, 1, 2**40]}, "output_lens[3]"),
    ({"completed": "4"}, "completed"),
    ({"duration": True}, "duration"),
    ({"duration": -1}, "duration"),
    ({"max_concurrency": 0}, "max_concurrency"),
    ({"ttfts": [0.05, -0.1, 0.15, 0.2]}, "ttfts[1]"),
    ({"itls": [[0.02], "x", [], []]}, "itls[1]"),
])
def test_bench_fields(tmp_path, patch, field):
    obj = json.loads(BENCH.read_text())
    n = len(obj["ttfts"])
    for key, value in patch.items():
        obj[key] = value[:n] if isinstance(value, list) else value
    path = tmp_path / "b.json"
    path.write_text(json.dumps(obj))
    assert _error(path).field == field


def test_bench_non_utf8_and_nan(tmp_path):
    path = tmp_path / "b.json"
    path.write_bytes(BENCH.read_bytes().replace(b'"vllm"', b'"vl\xffm"', 1))
    assert "UTF-8" in _error(path).reason
    path.write_text(BENCH.read_text().replace("0.05", "NaN", 1))
    assert "not a number" in _error(path).reason


# --------------------------------------------------------------------------- real data


def test_real_runs_load(data_path):
    for hw in ("RTX4090", "RTXPRO6000"):
        run = load_measured(data_path(f"llmservingsim/measured/{hw}/Llama-3.1-8B"))
        _consistent(run)
        assert run.num_requests == 300 and run.reference is not None


# --------------------------------------------------------------------------- fuzzing


def _consistent(run: MeasuredRun) -> None:
    """'Loaded correctly': counts are positive integers, latencies finite and ordered."""
    req = run.requests
    assert len(req) > 0
    assert (req["input_tokens"] >= 0).all() and (req["output_tokens"] >= 0).all()
    ok = req["success"].to_numpy()
    for col in ("ttft_s", "e2e_s"):
        values = req[col].to_numpy()[ok]
        assert np.isfinite(values).all() and (values >= -1e-6).all(), col
    assert (req["e2e_s"][ok] >= req["ttft_s"][ok] - 1e-6).all()
    if run.timeseries is not None:
        assert np.isfinite(run.timeseries.to_numpy()).all()
        assert (np.diff(run.timeseries["t"].to_numpy()) > 0).all()
    if run.duration_s is not None:
        assert math.isfinite(run.duration_s)


@FUZZ
@given(rel=st.sampled_from(RUN_FILES), data=st.data())
def test_fuzz_run_dir_bytes(tmp_path_factory, rel, data):
    root = tmp_path_factory.mktemp("m") / "run"
    shutil.copytree(RUN, root)
    (root / rel).write_bytes(data.draw(mutated_bytes((RUN / rel).read_bytes())))
    run = load_or_error(lambda: load_measured(root))
    if run is not None:
        _consistent(run)


_ROW_FIELDS = ("request_id", "input_toks", "output_toks", "arrival_time", "queued_ts",
               "scheduled_ts", "first_token_ts", "last_token_ts")


@FUZZ
@given(edits=st.lists(st.tuples(st.integers(0, 3), st.sampled_from(_ROW_FIELDS),
                                JSON_VALUES | st.floats(0, 6000)), min_size=1, max_size=3))
def test_fuzz_request_values(tmp_path_factory, edits):
    rows = _rows()
    for r, key, value in edits:
        rows[r][key] = value
    root = tmp_path_factory.mktemp("r") / "run"
    shutil.copytree(RUN, root)
    (root / RUN_FILES[0]).write_text(_jsonl(rows))
    run = load_or_error(lambda: load_measured(root))
    if run is not None:
        _consistent(run)


_BENCH_KEYS = ("ttfts", "itls", "input_lens", "output_lens", "errors", "start_times",
               "completed", "duration", "max_concurrency")


@FUZZ
@given(edits=st.lists(st.tuples(st.sampled_from(_BENCH_KEYS), st.integers(0, 3),
                                JSON_VALUES), min_size=1, max_size=3))
def test_fuzz_bench_values(tmp_path_factory, edits):
    obj = json.loads(BENCH.read_text())
    for key, i, value in edits:
        if isinstance(obj.get(key), list) and obj[key] and i % 2:
            obj[key][i % len(obj[key])] = value  # one entry
        else:
            obj[key] = value  # the whole field
    path = tmp_path_factory.mktemp("b") / "b.json"
    path.write_text(json.dumps(obj))
    run = load_or_error(lambda: load_measured(path))
    if run is not None:
        _consistent(run)
