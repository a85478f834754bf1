"""The Ray backend: a local Ray instance (2 CPUs, no dashboard) gives the serial rows.

Bounded in time: small points (30 requests), the CLI runs under a subprocess timeout; an
in-process run joins a Ray instance the test started (and leaves it running), and the CLI
joins one by ``--address``."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest
from sweep_helpers import BASE, GRID, deterministic, write_sweep

from llmsim.sweep import load_sweep, run_sweep

RAY_TIMEOUT_S = 300
"""Wall-clock bound of one Ray sweep: Ray's start (~5-10 s on 2 busy cores) + 4 points."""


def test_ray_cli_sweep_gives_the_serial_rows(ray_required, tmp_path, reference):
    path = write_sweep(tmp_path, GRID)
    out = subprocess.run([sys.executable, "-m", "llmsim", "sweep", str(path), "--out",
                          str(tmp_path / "o"), "--backend", "ray", "--workers", "2",
                          "--no-plots"], capture_output=True, text=True, timeout=RAY_TIMEOUT_S)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "4 points (4 run, 0 reused, 0 failed)" in out.stdout and "on ray x2" in out.stdout
    table = pd.read_parquet(tmp_path / "o" / "results" / "results.parquet")
    pd.testing.assert_frame_equal(deterministic(table), deterministic(reference),
                                  check_dtype=False)


def test_ray_backend_joins_a_running_instance(ray_required, tmp_path, reference):
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        spec = load_sweep(write_sweep(tmp_path, GRID))
        res = run_sweep(spec, out_dir=tmp_path / "o", backend="ray", plots=False)
        assert ray.is_initialized()  # not ours to shut down
        assert res.num_run == 4 and res.backend == "ray"
        pd.testing.assert_frame_equal(deterministic(res.table), deterministic(reference))
    finally:
        ray.shutdown()


def test_ray_cli_joins_an_existing_cluster_by_address(ray_required, tmp_path, reference):
    """``--address``: the CLI (another driver) joins the Ray cluster this test started and
    takes its CPU count as the number of workers."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        address = ray.get_runtime_context().gcs_address
        out = subprocess.run([sys.executable, "-m", "llmsim", "sweep",
                              str(write_sweep(tmp_path, GRID)), "--out", str(tmp_path / "o"),
                              "--backend", "ray", "--address", address, "--no-plots"],
                             capture_output=True, text=True, timeout=RAY_TIMEOUT_S)
        assert ray.is_initialized()  # the CLI left the cluster running
    finally:
        ray.shutdown()
    assert out.returncode == 0, out.stderr[-3000:]
    assert "4 points (4 run, 0 reused, 0 failed)" in out.stdout and "on ray x2" in out.stdout
    assert "Connected to Ray cluster" in out.stderr
    table = pd.read_parquet(tmp_path / "o" / "results" / "results.parquet")
    pd.testing.assert_frame_equal(deterministic(table), deterministic(reference),
                                  check_dtype=False)


def test_ray_environment_error_is_the_llmsim_error(ray_required, tmp_path):
    from llmsim.errors import ConfigError

    path = tmp_path / "s.yaml"
    path.write_text(f"experiment: {BASE}\nset:\n  cost_model: grpc://127.0.0.1:9\n"
                    "  trace.transforms: [{truncate: {max_requests: 2}}]\n"
                    "grid:\n  instances: [1]\n")
    with pytest.raises(ConfigError, match="could not run here: CostModelUnavailable") as info:
        run_sweep(load_sweep(path), out_dir=tmp_path / "o", backend="ray", workers=1)
    assert type(info.value) is ConfigError  # not Ray's wrapper (one line in the CLI)
    assert not list((tmp_path / "o" / "points").glob("*.json"))


def test_address_needs_the_ray_backend(tmp_path):
    from llmsim.errors import ConfigError

    spec = load_sweep(write_sweep(tmp_path, GRID))
    with pytest.raises(ConfigError, match="--address applies to the ray backend only"):
        run_sweep(spec, out_dir=tmp_path / "o", backend="local", address="auto")
