"""Measured-run loaders: both formats parse to known values; bad data names file/line/field."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from validate_factories import FIXTURES

from llmsim.errors import MeasuredRunError
from llmsim.validate.compare import latency_stats_ms
from llmsim.validate.measured import (
    MeasuredFormat,
    load_measured,
    parse_llmservingsim_summary,
)

VLLM_RUN = FIXTURES / "vllm_run"
BENCH = FIXTURES / "bench_result.json"


def _copy_run(tmp_path: Path) -> Path:
    dst = tmp_path / "run"
    shutil.copytree(VLLM_RUN, dst)
    return dst


def _rewrite_line(path: Path, lineno: int, **changes) -> None:
    lines = path.read_text().splitlines()
    row = json.loads(lines[lineno - 1])
    for key, value in changes.items():
        if value is _DROP:
            del row[key]
        else:
            row[key] = value
    lines[lineno - 1] = json.dumps(row)
    path.write_text("\n".join(lines) + "\n")


_DROP = object()


# --------------------------------------------------------------------------- vLLM dir


def test_vllm_dir_latencies_and_clock_offset():
    run = load_measured(VLLM_RUN)
    assert run.format is MeasuredFormat.VLLM_DIR
    r = run.requests
    assert list(r["request_id"]) == ["bench-0", "bench-1", "bench-2", "bench-3"]
    # latencies from queued_ts (engine arrival)
    np.testing.assert_allclose(r["ttft_s"], [0.101, 0.2, 0.3, 0.4], atol=1e-9)
    np.testing.assert_allclose(r["e2e_s"], [1.101, 2.2, 0.3, 2.4], atol=1e-9)
    np.testing.assert_allclose(r["tpot_s"][[0, 1, 3]], [0.1, 0.1, 0.5], atol=1e-9)
    assert math.isnan(r["tpot_s"][2])  # one output token: no TPOT
    # clock offset = min(queued_ts - arrival_time) = 5000 - 1.7e9; frontend delays recovered
    assert run.clock_offset_s == pytest.approx(5000.0 - 1700000000.0, abs=1e-6)
    np.testing.assert_allclose(r["frontend_delay_s"], [0.0, 0.01, 0.002, 0.005], atol=1e-6)
    # time origin = first frontend arrival; arrival_s is the engine arrival on that clock
    np.testing.assert_allclose(r["arrival_s"], [0.0, 0.51, 1.002, 1.505], atol=1e-6)
    np.testing.assert_allclose(r["finish_s"], [1.101, 2.71, 1.302, 3.905], atol=1e-6)


def test_vllm_dir_accepts_vllm_subdir_and_reads_meta_timeseries_summary():
    run = load_measured(VLLM_RUN / "vllm")
    assert run.engine == {
        "tensor_parallel_size": 1,
        "max_num_seqs": 8,
        "max_num_batched_tokens": 256,
        "num_gpu_blocks": 64,
        "block_size": 16,
        "gpu_memory_utilization": 0.9,
        "enable_prefix_caching": True,
        "cudagraph_capture_sizes": [1, 2, 4, 8],
        "async_scheduling": True,
    }
    assert list(run.timeseries["running"]) == [2, 3, 2, 1]
    assert run.kv_usage_measured
    assert run.reference is not None and len(run.reference) == 15
    ref = run.reference["e2e_p50"]
    assert (ref.measured_ms, ref.simulated_ms, ref.error_pct) == (1650.5, 1600.0, -3.1)
    assert run.reference["ttft_p90"].error_pct == 0.0


def test_kv_usage_all_zero_means_not_recorded(tmp_path):
    run_dir = _copy_run(tmp_path)
    ts = run_dir / "vllm" / "timeseries.csv"
    lines = ts.read_text().splitlines()
    ts.write_text("\n".join([lines[0]] + [",".join(ln.split(",")[:-1] + ["0.0"]) for ln in lines[1:]]) + "\n")
    assert not load_measured(run_dir).kv_usage_measured


@pytest.mark.parametrize("field", ["first_token_ts", "arrival_time", "request_id", "output_toks"])
def test_missing_request_field_names_file_line_field(tmp_path, field):
    run_dir = _copy_run(tmp_path)
    req = run_dir / "vllm" / "requests.jsonl"
    _rewrite_line(req, 3, **{field: _DROP})
    with pytest.raises(MeasuredRunError) as exc:
        load_measured(run_dir)
    assert exc.value.path == str(req) and exc.value.line == 3 and exc.value.field == field
    assert f"requests.jsonl:3: field '{field}'" in str(exc.value)


def test_non_numeric_and_out_of_order_timestamps(tmp_path):
    run_dir = _copy_run(tmp_path)
    req = run_dir / "vllm" / "requests.jsonl"
    _rewrite_line(req, 2, queued_ts="soon")
    with pytest.raises(MeasuredRunError, match="finite number") as exc:
        load_measured(run_dir)
    assert (exc.value.line, exc.value.field) == (2, "queued_ts")
    shutil.copy(VLLM_RUN / "vllm" / "requests.jsonl", req)
    _rewrite_line(req, 4, last_token_ts=5001.0)  # before its first token
    with pytest.raises(MeasuredRunError, match="earlier than first_token_ts") as exc:
        load_measured(run_dir)
    assert (exc.value.line, exc.value.field) == (4, "last_token_ts")


def test_bad_json_line_and_duplicate_id(tmp_path):
    run_dir = _copy_run(tmp_path)
    req = run_dir / "vllm" / "requests.jsonl"
    text = req.read_text().splitlines()
    req.write_text("\n".join(text[:2] + ["{not json"] + text[3:]) + "\n")
    with pytest.raises(MeasuredRunError, match="invalid JSON") as exc:
        load_measured(run_dir)
    assert exc.value.line == 3
    req.write_text("\n".join(text + [text[0]]) + "\n")
    with pytest.raises(MeasuredRunError, match="duplicate request_id 'bench-0'") as exc:
        load_measured(run_dir)
    assert exc.value.line == 5


def test_request_count_disagreeing_with_meta(tmp_path):
    run_dir = _copy_run(tmp_path)
    req = run_dir / "vllm" / "requests.jsonl"
    req.write_text("\n".join(req.read_text().splitlines()[:3]) + "\n")
    with pytest.raises(MeasuredRunError, match="meta.json says 4 requests but requests.jsonl has 3") as exc:
        load_measured(run_dir)
    assert exc.value.field == "num_requests"


def test_missing_requests_file_and_path(tmp_path):
    with pytest.raises(MeasuredRunError, match="missing requests.jsonl"):
        load_measured(tmp_path)
    with pytest.raises(MeasuredRunError, match="no such measured run"):
        load_measured(tmp_path / "absent.json")


def test_bad_timeseries_value_names_line_and_column(tmp_path):
    run_dir = _copy_run(tmp_path)
    ts = run_dir / "vllm" / "timeseries.csv"
    lines = ts.read_text().splitlines()
    lines[3] = "3.0,0.0,ten,2,0,1.0"
    ts.write_text("\n".join(lines) + "\n")
    with pytest.raises(MeasuredRunError) as exc:
        load_measured(run_dir)
    assert (exc.value.line, exc.value.field) == (4, "gen_throughput")
    ts.write_text("t,running\n1.0,2\n")
    with pytest.raises(MeasuredRunError, match="missing column") as exc:
        load_measured(run_dir)
    assert exc.value.field == "prompt_throughput"


def test_summary_parser_rejects_broken_rows():
    with pytest.raises(MeasuredRunError) as exc:
        parse_llmservingsim_summary("Metric vLLM Sim Diff%\nTTFT Mean 1.0 oops +1%\n", path="s.txt")
    assert exc.value.line == 2
    with pytest.raises(MeasuredRunError, match="no metric rows"):
        parse_llmservingsim_summary("nothing here\n")


# --------------------------------------------------------------------------- bench JSON


def test_bench_json_matches_its_own_summary_fields():
    run = load_measured(BENCH)
    assert run.format is MeasuredFormat.BENCH_JSON
    meta = run.meta
    r = run.requests
    np.testing.assert_allclose(r["e2e_s"], [0.11, 0.16, 0.15, 0.24])
    for metric, col in (("ttft", "ttft_s"), ("tpot", "tpot_s"), ("e2el", "e2e_s")):
        stats = latency_stats_ms(r[col].to_numpy())
        assert stats["mean"] == pytest.approx(meta[f"mean_{metric}_ms"])
        assert stats["p50"] == pytest.approx(meta[f"median_{metric}_ms"])
        assert stats["p99"] == pytest.approx(meta[f"p99_{metric}_ms"])
    itl = latency_stats_ms(np.concatenate(run.itls_s))
    assert itl["mean"] == pytest.approx(meta["mean_itl_ms"])
    assert run.duration_s == 1.0
    assert r["arrival_s"].isna().all()  # no start_times: no timeline


def test_bench_json_failed_request_and_start_times(tmp_path):
    obj = json.loads(BENCH.read_text())
    obj["errors"][1] = "HTTP 500"
    obj["completed"] = 3
    obj["start_times"] = [100.0, 100.5, 101.0, 101.5]
    p = tmp_path / "b.json"
    p.write_text(json.dumps(obj))
    run = load_measured(p)
    assert list(run.requests["success"]) == [True, False, True, True]
    assert math.isnan(run.requests["ttft_s"][1])
    np.testing.assert_allclose(run.requests["arrival_s"], [0.0, 0.5, 1.0, 1.5])
    np.testing.assert_allclose(run.requests["finish_s"][3], 1.5 + 0.24)


@pytest.mark.parametrize(
    ("mutate", "field", "message"),
    [
        (lambda o: o.pop("itls"), "itls", "--save-detailed"),
        (lambda o: o["output_lens"].pop(), "output_lens", "has 3 entries but ttfts has 4"),
        (lambda o: o["ttfts"].__setitem__(2, "x"), "ttfts[2]", "non-negative number"),
        (lambda o: o["itls"].__setitem__(0, [0.1, None]), "itls[0][1]", "non-negative number"),
        (lambda o: o.__setitem__("completed", 7), "completed", "completed=7 but 4"),
    ],
)
def test_bench_json_bad_input(tmp_path, mutate, field, message):
    obj = json.loads(BENCH.read_text())
    mutate(obj)
    p = tmp_path / "b.json"
    p.write_text(json.dumps(obj))
    with pytest.raises(MeasuredRunError, match=message.replace("[", r"\[")) as exc:
        load_measured(p)
    assert exc.value.field == field and exc.value.path == str(p)


# --------------------------------------------------------------------------- real data


@pytest.mark.realdata
@pytest.mark.parametrize("hw", ["RTX4090", "RTXPRO6000"])
def test_real_runs_reproduce_published_vllm_column(data_path, hw):
    """Our reading of requests.jsonl gives LLMServingSim's published vLLM numbers (0.1 ms print)."""
    run = load_measured(data_path(f"llmservingsim/measured/{hw}/Llama-3.1-8B"))
    assert run.num_requests == 300 and run.reference is not None
    for metric in ("ttft", "tpot", "e2e"):
        stats = latency_stats_ms(run.requests[f"{metric}_s"].to_numpy())
        for stat, value in stats.items():
            assert value == pytest.approx(run.reference[f"{metric}_{stat}"].measured_ms, abs=0.051)
    assert 0 <= run.requests["frontend_delay_s"].min() < 1e-3
    assert run.requests["frontend_delay_s"].max() < 0.5
    assert run.engine["max_num_batched_tokens"] == 2048
