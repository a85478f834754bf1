"""Replay end to end: determinism, outputs, bad input, experiment files, real data."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from serving_helpers import MS, const_cost, make_request, trace_of

from llmsim.errors import ConfigError, TraceFormatError
from llmsim.experiment import default_cudagraph_capture_sizes, load_experiment
from llmsim.model.config import model_config_from_dict
from llmsim.replay import run, validate_trace, write_outputs
from llmsim.trace.record import Request

TINY_MODEL = {"architectures": ["LlamaForCausalLM"], "num_hidden_layers": 2, "hidden_size": 64,
              "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 128,
              "vocab_size": 1000}


def _write_experiment(tmp_path: Path, engine: str = "", extra: str = "") -> Path:
    (tmp_path / "model.json").write_text(json.dumps(TINY_MODEL))
    (tmp_path / "trace.jsonl").write_text("\n".join(
        json.dumps({"arrival_time_ns": i * 3_000_000, "input_toks": 20 + 7 * (i % 5),
                    "output_toks": 3 + i % 4,
                    "input_tok_ids": [i % 3] * (20 + 7 * (i % 5)),
                    "output_tok_ids": list(range(3 + i % 4))})
        for i in range(40)) + "\n")
    path = tmp_path / "exp.yaml"
    path.write_text(f"""name: tiny
model: model.json
cost_model: profile
profile: model.json
hardware: {{name: fake, gpu_memory_bytes: 1000000000}}
engine:
  max_num_seqs: 8
  max_num_batched_tokens: 64
  block_size: 16
  num_gpu_blocks_override: 40
{engine}trace: {{format: llmservingsim, path: trace.jsonl}}
check_invariants: full
{extra}""")
    return path


def _cost():
    return const_cost(5 * MS)


def test_same_experiment_twice_gives_byte_identical_outputs(tmp_path):
    exp = load_experiment(_write_experiment(tmp_path))
    dirs = []
    for k in range(2):
        result = run(exp, cost_model=_cost(), keep_steps=True)
        dirs.append(write_outputs(result, tmp_path / f"out{k}"))
    names = sorted(p.name for p in dirs[0].iterdir())
    assert names == [".llmsim-output.json", "itls.parquet", "power.csv", "requests.csv",
                     "requests.parquet", "steps.csv", "summary.json", "timeseries.csv"]
    for name in names:
        assert (dirs[0] / name).read_bytes() == (dirs[1] / name).read_bytes(), name


def test_outputs_are_consistent(tmp_path):
    exp = load_experiment(_write_experiment(tmp_path))
    r = run(exp, cost_model=_cost(), keep_steps=True)
    df = r.requests
    assert len(df) == 40 and df["finish_s"].notna().all()
    assert (df["ttft_s"] > 0).all() and (df["first_token_s"] <= df["finish_s"]).all()
    for row, itl in zip(df.itertuples(), r.itls_s, strict=True):
        assert len(itl) == row.output_tokens - 1
        assert itl.sum() == pytest.approx(row.finish_s - row.first_token_s)
    assert r.summary["num_finished"] == 40
    assert r.summary["prefix_cache"]["hit_tokens"] > 0  # identical prompts share blocks
    assert int(r.timeseries["gen_throughput"].sum()) == int(df["output_tokens"].sum())
    assert int(r.timeseries["prompt_throughput"].sum()) == int(df["input_tokens"].sum())
    assert r.steps is not None and len(r.steps) == r.num_steps


def test_write_outputs_replaces_existing_dir_atomically(tmp_path):
    exp = load_experiment(_write_experiment(tmp_path))
    out = tmp_path / "out"
    write_outputs(run(exp, cost_model=_cost(), keep_steps=True), out, steps_log=True)  # a previous llmsim output
    assert (out / "steps.csv").exists()
    write_outputs(run(exp, cost_model=_cost()), out, steps_log=False)
    assert (out / "summary.json").exists()
    assert not (out / "steps.csv").exists()  # replaced wholesale (foreign dirs: tests/reliability)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_overrides_and_batch_limit_smaller_than_a_block(tmp_path):
    path = _write_experiment(tmp_path)
    exp = load_experiment(path, {"engine.max_num_seqs": 3})
    assert exp.engine.max_num_seqs == 3
    with pytest.raises(ConfigError) as err:
        load_experiment(path, {"engine.max_num_batched_tokens": 8})
    assert "exp.yaml" in str(err.value) and err.value.field == "engine.max_num_batched_tokens"
    assert err.value.line == 8
    bad = _write_experiment(tmp_path, engine="  max_num_seqs_typo: 3\n")
    with pytest.raises(ConfigError, match=r"exp.yaml:\d+: field 'engine.max_num_seqs_typo'"):
        load_experiment(bad)


def test_bad_trace_file_rows_name_file_and_line(tmp_path):
    path = _write_experiment(tmp_path)
    lines = (tmp_path / "trace.jsonl").read_text().splitlines()
    cases = {
        "unsorted": (3, {"arrival_time_ns": 1, "input_toks": 5, "output_toks": 2}),
        "zero": (3, {"arrival_time_ns": 10**9, "input_toks": 0, "output_toks": 2}),
        "negative": (3, {"arrival_time_ns": 10**9, "input_toks": 5, "output_toks": -1}),
        "ids": (3, {"arrival_time_ns": 10**9, "input_toks": 5, "output_toks": 2,
                    "input_tok_ids": [1, 2]}),
    }
    for lineno, row in cases.values():
        broken = list(lines)
        broken[lineno - 1] = json.dumps(row)
        (tmp_path / "trace.jsonl").write_text("\n".join(broken) + "\n")
        with pytest.raises(TraceFormatError) as err:
            run(load_experiment(path), cost_model=_cost())
        assert err.value.path.endswith("trace.jsonl") and err.value.line == lineno


def test_validate_trace_rejects_bad_requests_built_in_code():
    good = make_request("a", prompt=4, output=2)
    cases = [
        ([make_request("a", arrival_ms=5), make_request("b", arrival_ms=1)], "sorted"),
        ([Request(request_id="a", arrival_ns=0, input_tokens=0, output_tokens=1)], "> 0"),
        ([Request(request_id="a", arrival_ns=0, input_tokens=3, output_tokens=1,
                  input_token_ids=(1, 2))], "2 ids for 3"),
        ([good, good], "duplicate"),
    ]
    for reqs, msg in cases:
        with pytest.raises(TraceFormatError, match=msg) as err:
            validate_trace(trace_of(reqs, source="mem.jsonl"), capacity_tokens=10_000)
        assert err.value.path == "mem.jsonl" and err.value.line is not None
    with pytest.raises(ConfigError, match="more than an instance holds"):
        validate_trace(trace_of([make_request("a", prompt=100, output=20)]), capacity_tokens=64)


def test_parent_requests_release_children_after_think_time(tmp_path):
    exp = load_experiment(_write_experiment(tmp_path))
    a = make_request("a", prompt=8, output=2)
    b = make_request("b", prompt=8, output=2, parent_id="a", think_time_ns=7 * MS)
    r = run(exp, trace=trace_of([a, b]), cost_model=_cost())
    df = r.requests.set_index("request_id")
    assert df.loc["b", "arrival_s"] == pytest.approx(df.loc["a", "finish_s"] + 0.007)
    with pytest.raises(TraceFormatError, match="parent 'zz' is not an earlier") as err:
        run(exp, trace=trace_of([a, make_request("c", parent_id="zz")], source="t.jsonl"),
            cost_model=_cost())
    assert (err.value.path, err.value.line, err.value.field) == ("t.jsonl", 2, "parent_id")


def test_default_capture_sizes_match_the_recorded_vllm_list():
    recorded_4090 = [1, 2, 4] + list(range(8, 256, 8)) + list(range(256, 513, 16))
    assert list(default_cudagraph_capture_sizes(256)) == recorded_4090
    assert default_cudagraph_capture_sizes(128)[-1] == 256


def test_tiny_model_config_builds():
    model = model_config_from_dict(TINY_MODEL, name="tiny")
    assert model.kv_bytes_per_token() == 2 * 2 * 2 * 16 * 2


@pytest.mark.realdata
@pytest.mark.parametrize("example", ["rtxpro6000-llama-3.1-8b", "rtx4090-llama-3.1-8b"])
def test_examples_replay_end_to_end(example, data_path, tmp_path):
    data_path("llmservingsim/workloads/sharegpt-llama-3.1-8b-300-sps10.jsonl")
    root = Path(__file__).resolve().parents[2]
    exp = load_experiment(root / "examples" / f"{example}.yaml")
    r = run(exp)
    assert r.summary["num_finished"] == 300
    out = write_outputs(r, tmp_path / "out")
    ts = pd.read_csv(out / "timeseries.csv")
    assert list(ts.columns) == ["t", "prompt_throughput", "gen_throughput", "running",
                                "waiting", "kv_cache_pct"]
    if example.startswith("rtx4090"):
        assert r.summary["kv_cache"]["num_gpu_blocks"] == 2588
        assert r.summary["num_preemptions"] > 0  # the KV cache saturates in this run
    else:
        assert r.summary["kv_cache"]["source"] == "memory_model"
        assert (ts["running"] <= 128).all()


def test_outputs_identical_across_processes_and_hash_seeds(tmp_path):
    import os
    import subprocess
    import sys

    path = _write_experiment(tmp_path)
    script = (
        "import sys; sys.path.insert(0, sys.argv[3])\n"
        "from serving_helpers import const_cost, MS\n"
        "from llmsim.experiment import load_experiment\n"
        "from llmsim.replay import run, write_outputs\n"
        "r = run(load_experiment(sys.argv[1]), cost_model=const_cost(5 * MS))\n"
        "write_outputs(r, sys.argv[2])\n")
    here = str(Path(__file__).parent)
    for seed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=seed)
        subprocess.run([sys.executable, "-c", script, str(path), str(tmp_path / f"o{seed}"), here],
                       check=True, env=env)
    for f in sorted((tmp_path / "o1").iterdir()):
        assert f.read_bytes() == (tmp_path / "o2" / f.name).read_bytes(), f.name


def test_kv_cache_too_small_names_the_experiment_file(tmp_path):
    path = _write_experiment(tmp_path, extra="")
    text = path.read_text().replace("  num_gpu_blocks_override: 40\n", "")
    path.write_text(text.replace("gpu_memory_bytes: 1000000000", "gpu_memory_bytes: 100000"))
    with pytest.raises(ConfigError, match="no room for the KV cache") as err:
        run(load_experiment(path), cost_model=_cost())
    assert err.value.path == str(path) and err.value.field == "hardware.gpu_memory_bytes"
