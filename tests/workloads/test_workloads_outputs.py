"""Spec files, ``llmsim trace generate``, and the vLLM bench result JSON a replay writes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from workload_factories import TokenCost, replay_spec, vllm_spec, write_experiment

import llmsim.api as api
from llmsim.cli.main import main
from llmsim.errors import ConfigError
from llmsim.experiment import load_experiment
from llmsim.metrics.vllm_bench import vllm_bench_result
from llmsim.replay import run
from llmsim.trace import load_trace
from llmsim.validate import load_measured
from llmsim.workloads import generate_workload, load_workload_spec


def test_spec_errors_name_file_line_and_field(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text("tool: vllm-bench\nseed: 0\nnum_prompts: 10\nrandom_range_ratio: 2\n")
    with pytest.raises(ConfigError) as exc:
        load_workload_spec(path)
    assert (exc.value.path, exc.value.line, exc.value.field) == (str(path), 4, "random_range_ratio")
    path.write_text("tool: locust\n")
    with pytest.raises(ConfigError, match="vllm_bench, inference_perf, guidellm"):
        load_workload_spec(path)
    path.write_text("tool: vllm-bench\nseed: -1\n")
    with pytest.raises(ConfigError) as exc:
        load_workload_spec(path)
    assert exc.value.field == "seed" and exc.value.line == 2


def test_trace_generate_writes_jsonl_that_loads_back_identically(tmp_path, capsys):
    spec = vllm_spec(num_prompts=30, random_range_ratio=0.5, random_prefix_len=20, request_rate=5.0)
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    assert main(["trace", "generate", str(tmp_path / "spec.yaml"), "-o", str(tmp_path / "t.jsonl")]) == 0
    back = load_trace("llmservingsim", tmp_path / "t.jsonl").requests
    want = generate_workload(spec).to_trace().requests
    assert [(r.arrival_ns, r.input_token_ids, r.output_tokens) for r in back] == \
        [(r.arrival_ns, r.input_token_ids, r.output_tokens) for r in want]
    assert "wrote 30 requests" in capsys.readouterr().out


def test_trace_generate_writes_lanes_as_chains(tmp_path):
    spec = vllm_spec(num_prompts=10, max_concurrency=3)
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    assert main(["trace", "generate", str(tmp_path / "spec.yaml"), "-o", str(tmp_path / "t.jsonl")]) == 0
    lines = (tmp_path / "t.jsonl").read_text().splitlines()
    assert len(lines) == 3 and [len(json.loads(x)["sub_requests"]) for x in lines] == [4, 3, 3]
    back = load_trace("llmservingsim", tmp_path / "t.jsonl").requests
    assert sum(r.parent_id is not None for r in back) == 7


def test_trace_generate_refuses_what_jsonl_cannot_express(tmp_path, capsys):
    spec = vllm_spec(num_prompts=10, max_concurrency=3, request_rate=2.0)
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    assert main(["trace", "generate", str(tmp_path / "spec.yaml"), "-o", str(tmp_path / "t.jsonl")]) == 2
    assert "format: workload" in capsys.readouterr().err
    assert not (tmp_path / "t.jsonl").exists()


def _run(tmp_path, spec):
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    exp = load_experiment(write_experiment(tmp_path))
    return exp, run(exp, cost_model=TokenCost())


def test_bench_json_fields_follow_vllm_definitions(tmp_path):
    exp, result = _run(tmp_path, vllm_spec(num_prompts=25, random_range_ratio=0.5, request_rate=20.0,
                                           burstiness=0.5, max_concurrency=4))
    obj = vllm_bench_result(result.requests, result.itls_s, model_id="m",
                            metadata=api.experiment_trace(exp).metadata)
    df = result.requests
    assert obj["ttfts"] == pytest.approx(df["ttft_s"].tolist())
    assert obj["input_lens"] == df["input_tokens"].tolist() and obj["completed"] == 25
    lat = np.array(obj["ttfts"]) + np.array([sum(g) for g in obj["itls"]])
    assert lat == pytest.approx(df["e2e_s"].to_numpy(), abs=1e-9)
    assert obj["mean_e2el_ms"] == pytest.approx(lat.mean() * 1e3)
    out = np.array(obj["output_lens"])
    tpot = (lat - np.array(obj["ttfts"]))[out > 1] / (out[out > 1] - 1)
    assert obj["median_tpot_ms"] == pytest.approx(np.median(tpot) * 1e3)
    itl = np.concatenate([np.array(g) for g in obj["itls"]])
    assert obj["p99_itl_ms"] == pytest.approx(np.percentile(itl, 99) * 1e3)
    assert obj["std_ttft_ms"] == pytest.approx(np.std(obj["ttfts"]) * 1e3)
    assert obj["duration"] == pytest.approx(df["finish_s"].max() - df["arrival_s"].min())
    assert obj["total_token_throughput"] == pytest.approx(
        (sum(obj["input_lens"]) + out.sum()) / obj["duration"])
    assert (obj["request_rate"], obj["burstiness"], obj["max_concurrency"]) == (20.0, 0.5, 4)


def test_bench_json_reads_back_and_validates_to_zero_error(tmp_path):
    exp, result = _run(tmp_path, vllm_spec(num_prompts=20, random_range_ratio=0.3, request_rate=30.0))
    path = api.write_vllm_bench(result, tmp_path / "bench.json", experiment=exp)
    m = load_measured(path)
    assert m.num_requests == 20 and m.engine == {}
    assert m.requests["ttft_s"].to_numpy() == pytest.approx(result.requests["ttft_s"].to_numpy())
    assert m.requests["e2e_s"].to_numpy() == pytest.approx(result.requests["e2e_s"].to_numpy())
    assert m.requests["arrival_s"].to_numpy() == pytest.approx(result.requests["arrival_s"].to_numpy())
    from llmsim.validate import compare
    from llmsim.validate.match import check_match
    from llmsim.validate.pipeline import workload_of

    check_match(m, workload_of(exp, api.experiment_trace(exp)))  # same model, requests, tokens
    comparison = compare(m, result)
    assert len(comparison.latency) == 15 and comparison.itl
    assert comparison.mean_abs_error_pct == pytest.approx(0.0, abs=1e-6)


def test_replay_cli_format_vllm_bench_then_validate_cli(tmp_path, capsys, monkeypatch):
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(vllm_spec(num_prompts=15, request_rate=10.0)))
    exp_path = write_experiment(tmp_path)
    import llmsim.replay as replay_mod

    real_run = replay_mod.run
    monkeypatch.setattr(replay_mod, "run", lambda exp, **kw: real_run(exp, cost_model=TokenCost(), **kw))
    out = tmp_path / "bench.json"
    assert main(["replay", str(exp_path), "--format", "vllm-bench", "--out", str(out), "--no-progress"]) == 0
    obj = json.loads(out.read_text())
    assert obj["num_prompts"] == 15 and len(obj["itls"]) == 15 and obj["model_id"]
    assert not (tmp_path / "out").exists()  # no output directory in this format
    assert main(["validate", str(exp_path), "--measured", str(out), "--out", str(tmp_path / "rep")]) == 0
    text = capsys.readouterr().out
    assert "mean |error|" in text and "0.00%" in text


def test_unfinished_requests_are_failed_rows():
    import pandas as pd

    df = pd.DataFrame({"arrival_s": [0.0, 1.0], "ttft_s": [0.1, np.nan], "e2e_s": [0.3, np.nan],
                       "input_tokens": [5, 6], "output_tokens": [3, 4]})
    obj = vllm_bench_result(df, [np.array([0.1, 0.1]), np.array([])], model_id=None)
    assert obj["errors"][0] == "" and obj["errors"][1]
    assert (obj["completed"], obj["failed"], obj["output_lens"]) == (1, 1, [3, 0])
    assert obj["total_input_tokens"] == 5 and obj["ttfts"] == [0.1, 0.0]


def test_replay_of_a_spec_is_deterministic(tmp_path):
    spec = vllm_spec(num_prompts=20, random_range_ratio=0.5, request_rate=8.0, burstiness=0.3)
    a = replay_spec(tmp_path / "a", spec).requests
    b = replay_spec(tmp_path / "b", spec).requests
    assert a.equals(b)
