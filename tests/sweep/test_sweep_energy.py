"""Energy columns of the sweep table (llmsim/sweep/point.py ``energy_metrics``)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from llmsim.power.accumulator import unavailable_summary
from llmsim.sweep.point import PointTask, energy_metrics
from llmsim.sweep.runner import PlannedPoint, sweep_table

ENERGY_COLUMNS = ("energy_j", "avg_power_w", "j_per_output_token", "tokens_per_j")


def test_energy_metrics_reads_the_summary_entry():
    entry = {"available": True, "reason": "", "energy_j": 120.0, "avg_power_w": 60.0,
             "j_per_output_token": 0.5, "tokens_per_j": 4.0, "peak_power_w": 80.0}
    out = energy_metrics(entry)
    assert out == {"energy_j": 120.0, "avg_power_w": 60.0, "j_per_output_token": 0.5,
                   "tokens_per_j": 4.0, "energy_unavailable_reason": None}


def test_energy_metrics_unavailable_keeps_the_reason():
    out = energy_metrics(unavailable_summary("no sourced idle power for H100"))
    assert all(out[k] is None for k in ENERGY_COLUMNS)
    assert out["energy_unavailable_reason"] == "no sourced idle power for H100"
    # available, but no output tokens: that one figure is missing, and named
    part = energy_metrics({"available": True, "reason": "", "energy_j": 3.0,
                           "avg_power_w": 1.5, "j_per_output_token": "unavailable",
                           "tokens_per_j": 2.0})
    assert part["j_per_output_token"] is None and part["energy_j"] == 3.0
    assert "j_per_output_token" in part["energy_unavailable_reason"]
    assert energy_metrics(None)["energy_unavailable_reason"]


def test_sweep_table_energy_columns_are_float_with_nan_where_unavailable():
    ok = energy_metrics({"available": True, "reason": "", "energy_j": 10.0,
                         "avg_power_w": 5.0, "j_per_output_token": 0.1,
                         "tokens_per_j": 20.0})
    na = energy_metrics(unavailable_summary("no hardware power file for 'A100'"))
    points = [PlannedPoint(index=i, values={"x": i},
                           task=PointTask(config_hash=h, experiment="e.yaml", overrides={}))
              for i, h in enumerate(("a", "b"))]
    records = {"a": {"metrics": ok, "error": None, "wall_s": 0.0, "cpu_s": 0.0},
               "b": {"metrics": na, "error": None, "wall_s": 0.0, "cpu_s": 0.0}}
    t = sweep_table(points, records, ["x"])
    for col in ENERGY_COLUMNS:
        assert t[col].dtype == np.float64, col
        assert not math.isnan(t.loc[0, col]) and math.isnan(t.loc[1, col])
    assert pd.isna(t.loc[0, "energy_unavailable_reason"])
    assert t.loc[1, "energy_unavailable_reason"] == "no hardware power file for 'A100'"


def test_sweep_rows_carry_each_points_energy(reference):
    """The 4-point grid over the RTX PRO 6000 example (sourced power file): every row has
    energy, consistent with its own token counts, and more instances idle more watts."""
    t = reference
    for col in ENERGY_COLUMNS:
        assert col in t.columns and (t[col] > 0).all() and np.isfinite(t[col]).all(), col
    assert t["energy_unavailable_reason"].isna().all()
    # J/output token x output tokens = energy (ML.ENERGY's convention: all energy)
    out_tok = t["output_tokens_per_s"] * t["duration_s"]
    assert (t["j_per_output_token"] * out_tok).to_numpy() == pytest.approx(
        t["energy_j"].to_numpy(), rel=0.05)
    # 2 instances draw twice the idle power of 1 at the same max_num_seqs
    assert (t.loc[1, "avg_power_w"] > t.loc[0, "avg_power_w"]
            and t.loc[3, "avg_power_w"] > t.loc[2, "avg_power_w"])
