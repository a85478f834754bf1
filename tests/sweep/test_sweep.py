"""``llmsim sweep``: validation with file/line errors, the results table, resuming after an
interruption (in process and after SIGKILL), atomic outputs, the local pool and serial giving
the same rows, config hashes, SLO metrics."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sweep_helpers import BASE, GRID, deterministic, write_sweep

from llmsim.errors import ConfigError
from llmsim.experiment import load_experiment
from llmsim.sweep import load_sweep, plan_sweep, run_sweep
from llmsim.sweep.point import config_hash, slo_metrics


# ----------------------------------------------------------------------- validation
@pytest.mark.parametrize(("body", "line", "field", "text"), [
    ("grid:\n  engine.max_num_seq: [8]\n", 6, "grid.engine.max_num_seq", "unknown key"),
    ("grid:\n  engine.max_num_seqs: [8, 0]\n", 6, "grid.engine.max_num_seqs", "must be >= 1"),
    ("grid:\n  engine.max_num_seqs: []\n", 6, "grid.engine.max_num_seqs", "at least 1"),
    ("grid:\n  instances: [1]\nbogus: 1\n", 7, "bogus", "unknown key (known: experiment, grid"),
    ("points:\n  - {instances: 2}\n  - {router: nope}\n", 7, "points.1.router",
     "unknown value 'nope'"),
    ("grid:\n  instances: [1]\nslo: {attainment: 0.5}\n", 7, "slo", "give ttft_s, tpot_s"),
    ("slo: {ttft_s: 1}\n", None, None, "needs a grid, points"),
])
def test_bad_sweep_files_name_file_line_and_field(tmp_path, body, line, field, text):
    path = write_sweep(tmp_path, body)
    with pytest.raises(ConfigError) as info:
        plan_sweep(load_sweep(path))
    err = info.value
    assert err.path == str(path)
    assert err.line == line, str(err)
    assert err.field == field, str(err)
    assert text in str(err)


def test_bad_set_key_is_blamed_on_the_set_line(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(f"experiment: {BASE}\nset:\n  engine.bogus: 1\ngrid:\n  instances: [1, 2]\n")
    with pytest.raises(ConfigError) as info:
        plan_sweep(load_sweep(path))
    assert (info.value.line, info.value.field) == (3, "set.engine.bogus")


def test_missing_base_experiment(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("experiment: nowhere.yaml\ngrid: {instances: [1]}\n")
    with pytest.raises(ConfigError, match="base experiment file not found") as info:
        load_sweep(path)
    assert info.value.line == 1


# ----------------------------------------------------------------------- hashes
def test_config_hash_covers_the_resolved_config_only():
    a = load_experiment(BASE, {"engine.max_num_seqs": 64})
    same = load_experiment(BASE, {"engine.max_num_seqs": 64, "name": "other",
                                  "output_dir": "/tmp/elsewhere", "description": "x"})
    other = load_experiment(BASE, {"engine.max_num_seqs": 65})
    default_sizes = load_experiment(BASE, {"engine.max_num_seqs": 64,
                                           "engine.cudagraph_capture_sizes": None})
    assert config_hash(a, None) == config_hash(same, None)
    assert config_hash(a, None) != config_hash(other, None)
    assert config_hash(a, None) != config_hash(a, {"ttft_s": 1.0})
    # the file lists sizes up to 256; vLLM's default for 64 seqs stops at 128
    assert config_hash(a, None) != config_hash(default_sizes, None)


def test_config_hash_does_not_depend_on_the_working_directory(tmp_path, monkeypatch):
    path = tmp_path / "s.yaml"
    path.write_text(f"experiment: {os.path.relpath(BASE, tmp_path)}\n"
                    "grid:\n  instances: [1, 2]\n")
    here = [p.task.config_hash for p in plan_sweep(load_sweep(path))]
    monkeypatch.chdir(tmp_path)
    there = plan_sweep(load_sweep(path.name))
    assert [p.task.config_hash for p in there] == here
    assert Path(there[0].task.experiment).is_absolute()


# ----------------------------------------------------------------------- SLO metrics
def test_slo_metrics_follow_vllm_bench_goodput_rules():
    requests = pd.DataFrame({
        "ttft_s": [0.1, 0.2, 0.9, 0.1, np.nan],
        "tpot_s": [0.01, 0.05, 0.01, np.nan, np.nan],
        "output_tokens": [10, 10, 10, 1, 10],
        "finish_s": [1.0, 2.0, 3.0, 0.5, np.nan],
    })
    slo = {"ttft_s": 0.5, "tpot_s": 0.02, "attainment": 0.6, "ttft_percentile": 50,
           "tpot_percentile": None}
    out = slo_metrics(requests, slo, duration_s=4.0)
    # good: request 0, and 3 (one output token: TPOT counts as 0); 1 misses TPOT, 2 TTFT,
    # 4 never finished
    assert out["slo_attainment"] == pytest.approx(2 / 5)
    assert out["goodput_requests_per_s"] == pytest.approx(2 / 4.0)
    assert out["slo_ttft_p50_s"] == pytest.approx(0.2)
    assert out["slo_met"] is False
    out = slo_metrics(requests, {**slo, "attainment": 0.4}, duration_s=4.0)
    assert out["slo_met"] is True
    # p99 reaches the unfinished request: infinite, so not met and reported as missing
    out = slo_metrics(requests, {**slo, "attainment": 0.4, "ttft_percentile": 99},
                      duration_s=4.0)
    assert out["slo_ttft_p99_s"] is None and out["slo_met"] is False


# ----------------------------------------------------------------------- running
def test_serial_sweep_writes_one_row_per_point(reference, tmp_path):
    t = reference
    assert list(t["point"]) == [0, 1, 2, 3]
    assert list(t["engine.max_num_seqs"]) == [8, 8, 64, 64]
    assert list(t["instances"]) == [1, 2, 1, 2]
    assert t["error"].isna().all()
    assert (t["num_finished"] == 30).all()
    for col in ("ttft_mean_s", "ttft_p50_s", "ttft_p99_s", "tpot_p99_s", "itl_p99_s",
                "e2e_p99_s", "throughput_requests_per_s", "output_tokens_per_s",
                "slo_attainment", "goodput_requests_per_s", "slo_ttft_p99_s", "slo_met"):
        assert col in t.columns, col
    # 8 sequences queue more than 64 on one instance; 2 instances queue less than 1
    assert t.loc[0, "ttft_mean_s"] > t.loc[2, "ttft_mean_s"]
    assert t.loc[0, "ttft_mean_s"] > t.loc[1, "ttft_mean_s"]
    assert len(set(t["config_hash"])) == 4


def test_sweep_directory_layout_and_rerun_reuses_everything(tmp_path, reference):
    spec = load_sweep(write_sweep(tmp_path, GRID))
    first = run_sweep(spec, out_dir=tmp_path / "out", backend="serial")
    out = tmp_path / "out"
    assert sorted(p.name for p in (out / "results").iterdir()) == [
        ".llmsim-output.json", "plots", "results.csv", "results.parquet", "sweep.json"]
    assert sorted(p.name for p in (out / "results" / "plots").iterdir()) == [
        "engine.max_num_seqs.png", "instances.png"]
    assert len(list((out / "points").glob("*.json"))) == 4
    pd.testing.assert_frame_equal(deterministic(first.table), deterministic(reference))
    csv = pd.read_csv(out / "results" / "results.csv")
    assert list(csv.columns) == list(first.table.columns)
    again = run_sweep(spec, out_dir=out, backend="serial", plots=False)
    assert (again.num_run, again.num_reused) == (0, 4)
    pd.testing.assert_frame_equal(again.table, first.table)


class Stop(Exception):
    pass


def test_interrupted_sweep_resumes_and_leaves_no_table(tmp_path, reference):
    spec = load_sweep(write_sweep(tmp_path, GRID))
    out = tmp_path / "out"
    seen = []

    def stop_after_two(task, record):
        seen.append(task.config_hash)
        if len(seen) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_sweep(spec, out_dir=out, backend="serial", on_record=stop_after_two)
    assert not (out / "results").exists()
    assert sorted(p.stem for p in (out / "points").glob("*.json")) == sorted(seen)
    ran = []
    res = run_sweep(spec, out_dir=out, backend="serial", plots=False,
                    on_record=lambda t, r: ran.append(t.config_hash))
    assert (res.num_run, res.num_reused) == (2, 2)
    assert not set(ran) & set(seen)
    pd.testing.assert_frame_equal(deterministic(res.table), deterministic(reference))


def test_failed_rerun_removes_the_previous_table(tmp_path):
    spec = load_sweep(write_sweep(tmp_path, "grid:\n  instances: [1, 2]\n", n_requests=10))
    out = tmp_path / "out"
    run_sweep(spec, out_dir=out, backend="serial", plots=False)
    assert (out / "results" / "results.parquet").is_file()
    spec2 = load_sweep(write_sweep(tmp_path, "grid:\n  instances: [1, 3]\n", n_requests=10))

    def boom(task, record):
        raise Stop

    with pytest.raises(Stop):
        run_sweep(spec2, out_dir=out, backend="serial", on_record=boom)
    assert not (out / "results").exists()  # no table of the old sweep looking like the new
    res = run_sweep(spec2, out_dir=out, backend="serial", plots=False)
    assert (res.num_run, res.num_reused) == (0, 2)  # instances=1 stored earlier, 3 by boom's run
    assert list(res.table["instances"]) == [1, 3]


def test_sigkilled_sweep_resumes(tmp_path, reference):
    """A sweep killed with SIGKILL mid-way keeps its finished points and writes no table."""
    path = write_sweep(tmp_path, GRID)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "llmsim", "sweep", str(path), "--out", str(out),
           "--backend", "serial", "--no-plots"]
    with open(tmp_path / "err.txt", "w") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and not list((out / "points").glob("*.json")):
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    done = len(list((out / "points").glob("*.json")))
    assert done >= 1, (tmp_path / "err.txt").read_text()[-2000:]
    if done < 4:  # the kill landed mid-sweep (almost always): no table
        assert not (out / "results").exists()
    res = run_sweep(load_sweep(path), out_dir=out, backend="serial", plots=False)
    assert res.num_reused == done and res.num_run == 4 - done
    pd.testing.assert_frame_equal(deterministic(res.table), deterministic(reference))


def test_local_pool_gives_the_serial_rows(tmp_path, reference):
    spec = load_sweep(write_sweep(tmp_path, GRID))
    res = run_sweep(spec, out_dir=tmp_path / "out", backend="local", workers=2, plots=False)
    assert res.workers == 2 and res.num_run == 4
    pd.testing.assert_frame_equal(deterministic(res.table), deterministic(reference))


def test_refused_replay_is_a_row_with_its_error(tmp_path):
    # 64 KV blocks of 16 tokens cannot hold the trace's longest request
    body = "points:\n  - {instances: 1}\n  - {engine.num_gpu_blocks_override: 64}\n"
    res = run_sweep(load_sweep(write_sweep(tmp_path, body, n_requests=10)),
                    out_dir=tmp_path / "out", backend="serial", plots=False)
    assert res.num_failed == 1
    assert pd.isna(res.table.loc[0, "error"])
    assert "more than an instance holds" in res.table.loc[1, "error"]
    assert np.isnan(res.table.loc[1, "ttft_mean_s"])
    assert (tmp_path / "out" / "results" / "results.parquet").is_file()


@pytest.mark.parametrize("backend", ["serial", "local"])
def test_environment_errors_stop_the_sweep_and_are_not_recorded(tmp_path, backend):
    """An unreachable cost bridge is the environment's fault, not the point's: no record."""
    body = "set:\n  cost_model: grpc://127.0.0.1:9\ngrid:\n  instances: [1]\n"
    path = tmp_path / "s.yaml"
    path.write_text(f"experiment: {BASE}\n" + body.replace(
        "set:\n", "set:\n  trace.transforms: [{truncate: {max_requests: 2}}]\n"))
    with pytest.raises(ConfigError, match="could not run here: CostModelUnavailable"):
        run_sweep(load_sweep(path), out_dir=tmp_path / "out", backend=backend, workers=1)
    assert not list((tmp_path / "out" / "points").glob("*.json"))
    assert not (tmp_path / "out" / "results").exists()


def test_worker_cache_changes_no_result():
    """Points run after others (reused trace and cost model) equal fresh replays."""
    import llmsim
    from llmsim.sweep import point

    common = {"engine.cudagraph_capture_sizes": None,
              "trace.transforms": [{"truncate": {"max_requests": 20}}]}
    order = [{"engine.max_num_seqs": 8}, {"engine.max_num_seqs": 64, "instances": 2},
             {"engine.max_num_seqs": 8, "router": "least_loaded", "instances": 2}]
    point._TRACES.clear()
    point._COST_MODELS.clear()
    records = [point.run_point(point.PointTask(config_hash="x", experiment=str(BASE),
                                               overrides={**common, **o})) for o in order]
    assert len(point._COST_MODELS) == 2 and len(point._TRACES) == 1  # reused
    for o, record in zip(order, records, strict=True):
        fresh = point.point_metrics(llmsim.run(load_experiment(BASE, {**common, **o})))
        assert record["metrics"] == fresh


def test_foreign_output_directory_is_refused(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    spec = load_sweep(write_sweep(tmp_path, "grid:\n  instances: [1]\n", n_requests=5))
    with pytest.raises(ConfigError, match="not an llmsim sweep directory"):
        run_sweep(spec, out_dir=out, backend="serial")
    assert (out / "notes.txt").read_text() == "keep me"


def test_cli_sweep(tmp_path):
    path = write_sweep(tmp_path, "grid:\n  router: [round_robin, least_loaded]\n"
                       "  instances: [2]\n", n_requests=50)
    out = subprocess.run([sys.executable, "-m", "llmsim", "sweep", str(path), "--out",
                          str(tmp_path / "o"), "--backend", "serial", "--no-plots",
                          "--set", "trace.transforms=[{truncate: {max_requests: 10}}]"],
                         capture_output=True, text=True, timeout=300,
                         env={**os.environ, "LLMSIM_NO_CACHE": "0"})
    assert out.returncode == 0, out.stderr
    assert "2 points (2 run, 0 reused, 0 failed)" in out.stdout
    info = json.loads((tmp_path / "o" / "results" / "sweep.json").read_text())
    assert info["axes"] == ["router", "instances"] and info["num_points"] == 2
    table = pd.read_csv(tmp_path / "o" / "results" / "results.csv")
    assert (table["num_requests"] == 10).all()  # --set replaced the file's truncation
    bad = write_sweep(tmp_path, "grid:\n  routr: [x]\n", name="bad.yaml")
    out = subprocess.run([sys.executable, "-m", "llmsim", "sweep", str(bad)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 2
    assert f"{bad}:6: field 'grid.routr': point 0 (routr='x'): unknown key" in out.stderr
