"""The shipped sweep and search files: the >= 50-point engine/cluster grid plans, and runs
from one command under a local Ray instance (points cut to 40 requests to bound the time)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from llmsim.sweep import load_sweep, plan_sweep
from llmsim.sweep.search import SearchGoal, load_search

SWEEPS = Path(__file__).resolve().parents[2] / "examples" / "sweeps"
GRID = SWEEPS / "rtxpro6000-engine-grid.yaml"
AXES = ["engine.max_num_seqs", "engine.max_num_batched_tokens", "instances", "router"]


def test_example_grid_has_50_points_over_the_four_axes():
    spec = load_sweep(GRID)
    assert spec.axes == AXES
    points = plan_sweep(spec)
    assert len(points) >= 50
    assert len({p.task.config_hash for p in points}) == len(points)


def test_example_searches_load():
    assert load_search(SWEEPS / "rtxpro6000-capacity.yaml").find == SearchGoal.MAX_RATE
    spec = load_search(SWEEPS / "rtxpro6000-min-instances.yaml")
    assert spec.find == SearchGoal.MIN_INSTANCES and spec.instances is not None


@pytest.mark.slow
def test_example_grid_runs_under_ray(ray_required, tmp_path):
    raw = yaml.safe_load(GRID.read_text())
    raw["experiment"] = str(GRID.parent / raw["experiment"])
    raw["set"]["trace.transforms"] = [{"truncate": {"max_requests": 40}}, {"scale_rate": 3.0}]
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    out = subprocess.run([sys.executable, "-m", "llmsim", "sweep", str(path), "--out",
                          str(tmp_path / "o"), "--backend", "ray", "--workers", "2"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    n = len(plan_sweep(load_sweep(GRID)))
    assert f"{n} points ({n} run, 0 reused, 0 failed)" in out.stdout
    t = pd.read_parquet(tmp_path / "o" / "results" / "results.parquet")
    assert len(t) == n and t["error"].isna().all() and (t["num_finished"] == 40).all()
    assert sorted(p.name for p in (tmp_path / "o" / "results" / "plots").iterdir()) == sorted(
        f"{a}.png" for a in AXES)
    # four instances finish every setting's requests sooner than one
    key = ["engine.max_num_seqs", "engine.max_num_batched_tokens", "router"]
    by = t.set_index([*key, "instances"])["e2e_mean_s"].unstack("instances")
    assert (by[4] < by[1]).all()
