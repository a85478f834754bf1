"""The accuracy on the two given measured runs is pinned: a change that moves any metric's
error past its margin fails CI.

Pinned figures: signed error % of each of the 15 TTFT/TPOT/E2E metrics and the mean |error|,
as measured by ``llmsim validate`` on the example experiments (engine settings from each run's
``meta.json``) at the commit that introduced this file. Replays are deterministic (byte-
identical across runs and hash seeds), so the margins are not noise allowances: they are the
largest change we accept without looking (0.25 percentage points per metric, 0.05 on the
mean). An improvement also trips the pin, on purpose: update the figures in the same commit and
say why in its message.

The perturbation test shows the pins can fail: 5% more kernel time (a deliberately wrong cost
model) breaks them on both runs.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from llmsim.validate.pipeline import validate_experiment
from tests.conftest import require_data

ROOT = Path(__file__).resolve().parents[2]
METRIC_MARGIN_PP = 0.25
MEAN_MARGIN_PP = 0.05

PINS = {
    "RTX4090": {
        "experiment": ROOT / "examples" / "rtx4090-llama-3.1-8b.yaml",
        "measured": "llmservingsim/measured/RTX4090/Llama-3.1-8B",
        "mean_abs_error_pct": 0.435,
        "errors_pct": {
            "ttft_mean": 0.24, "ttft_p50": 0.04, "ttft_p90": 0.24, "ttft_p95": 0.25,
            "ttft_p99": -0.21, "tpot_mean": 0.05, "tpot_p50": 0.12, "tpot_p90": 2.12,
            "tpot_p95": 1.13, "tpot_p99": 0.54, "e2e_mean": 0.20, "e2e_p50": 1.22,
            "e2e_p90": -0.14, "e2e_p95": 0.00, "e2e_p99": 0.02,
        },
    },
    "RTXPRO6000": {
        "experiment": ROOT / "examples" / "rtxpro6000-llama-3.1-8b.yaml",
        "measured": "llmservingsim/measured/RTXPRO6000/Llama-3.1-8B",
        "mean_abs_error_pct": 1.936,
        "errors_pct": {
            "ttft_mean": -4.00, "ttft_p50": -7.98, "ttft_p90": -4.75, "ttft_p95": -2.44,
            "ttft_p99": -1.36, "tpot_mean": -0.79, "tpot_p50": 0.18, "tpot_p90": -0.04,
            "tpot_p95": -0.37, "tpot_p99": -0.40, "e2e_mean": -1.65, "e2e_p50": -1.06,
            "e2e_p90": -1.64, "e2e_p95": -1.01, "e2e_p99": -1.36,
        },
    },
}


def violations(comparison, pin: dict) -> list[str]:
    """Every pinned figure the comparison misses by more than its margin."""
    out = []
    mean = comparison.mean_abs_error_pct
    if abs(mean - pin["mean_abs_error_pct"]) > MEAN_MARGIN_PP:
        out.append(f"mean |error| {mean:.3f}% vs pinned {pin['mean_abs_error_pct']:.3f}%")
    got = {row.key: row.error_pct for row in comparison.latency}
    assert set(got) == set(pin["errors_pct"]), sorted(got)
    for key, pinned in pin["errors_pct"].items():
        if abs(got[key] - pinned) > METRIC_MARGIN_PP:
            out.append(f"{key} {got[key]:+.2f}% vs pinned {pinned:+.2f}%")
    return out


def _validate(hw: str, overrides: dict | None = None):
    pin = PINS[hw]
    require_data(pin["measured"])
    return validate_experiment(pin["experiment"], pin["measured"], write=False,
                               overrides=overrides).comparison


@pytest.mark.realdata
@pytest.mark.parametrize("hw", sorted(PINS))
def test_accuracy_is_pinned(hw):
    comparison = _validate(hw)
    assert comparison.measured.num_requests == 300
    assert violations(comparison, PINS[hw]) == []


@pytest.mark.realdata
@pytest.mark.parametrize("hw", sorted(PINS))
def test_pins_catch_a_perturbed_cost_model(hw, monkeypatch):
    from llmsim.costmodel import profile_model

    original = profile_model.ProfileCostModel.step_cost

    def slower(self, batch):
        cost = original(self, batch)
        return type(cost)(duration_ns=int(cost.duration_ns * 1.05),
                          breakdown_ns={k: int(v * 1.05) for k, v in cost.breakdown_ns.items()},
                          energy_j=cost.energy_j)

    monkeypatch.setattr(profile_model.ProfileCostModel, "step_cost", slower)
    found = violations(_validate(hw), PINS[hw])
    assert len(found) >= 3, found
