"""Accuracy of llmsim on the two measured runs (RTX4090, RTXPRO6000; Llama-3.1-8B, TP1).

Prints, for both runs, every TTFT/TPOT/E2E statistic (measured, simulated, signed error) next
to LLMServingSim 2.0's published error, the mean |error| over the 15 metrics, and the host
time of each replay. Engine settings come from the example experiments (each run's
``meta.json``); no parameter is set per run, but some modelling choices were selected while
looking at these two runs: docs/validation.md lists them and which run each was chosen on.
The whole suite with error bars: ``llmsim validate --suite examples/suites/measured-runs.yaml``.

Run as a benchmark (``make bench``) or a script::

    LLMSIM_DATA_DIR=/work/shared/data python benchmarks/validate/test_bench_validate_accuracy.py
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RUNS = {
    "RTX4090": (ROOT / "examples" / "rtx4090-llama-3.1-8b.yaml",
                "llmservingsim/measured/RTX4090/Llama-3.1-8B"),
    "RTXPRO6000": (ROOT / "examples" / "rtxpro6000-llama-3.1-8b.yaml",
                   "llmservingsim/measured/RTXPRO6000/Llama-3.1-8B"),
}


def validate_all(overrides: dict | None = None) -> dict:
    """Validate both runs (no report written); returns ``{hw: ValidationRun}``."""
    from llmsim.validate.pipeline import validate_experiment

    return {hw: validate_experiment(exp, measured, write=False, overrides=overrides)
            for hw, (exp, measured) in RUNS.items()}


def _f(x: float | None, fmt: str) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else fmt.format(x)


def accuracy_table(done: dict) -> str:
    """The side-by-side accuracy table of :func:`validate_all`'s result."""
    hws = list(done)
    top = f"{'':<10}" + "".join(f"| {hw:<45}" for hw in hws)
    head = f"{'metric':<10}" + "".join(
        f"| {'measured ms':>12}{'llmsim ms':>12}{'error':>10}{'LSS 2.0':>10} " for hw in hws)
    lines = [top, head, "-" * len(head)]
    rows = {hw: done[hw].comparison.latency for hw in hws}
    for i, row in enumerate(rows[hws[0]]):
        line = f"{row.metric.upper() + ' ' + row.stat:<10}"
        for hw in hws:
            r = rows[hw][i]
            line += (
                f"| {_f(r.measured_ms, '{:.1f}'):>12}{_f(r.simulated_ms, '{:.1f}'):>12}"
                f"{_f(r.error_pct, '{:+.2f}%'):>10}{_f(r.reference_error_pct, '{:+.1f}%'):>10} "
            )
        lines.append(line)
    lines.append("-" * len(head))
    for hw in hws:
        c = done[hw].comparison
        worse = [r.key for r in c.latency if r.no_worse_than_reference is False]
        lines.append(
            f"{hw}: mean |error| {c.mean_abs_error_pct:.2f}% (LLMServingSim 2.0: "
            f"{_f(c.reference_mean_abs_error_pct, '{:.2f}%')}); worse than LLMServingSim on "
            f"{len(worse)}/15 metrics; replay {c.sim_wall_time_s:.2f} s host time, {c.sim_num_steps} steps"
        )
    return "\n".join(lines)


def _data_or_skip():
    import pytest

    from llmsim.data import dataset_path
    from llmsim.errors import DataNotFoundError

    try:
        for _, measured in RUNS.values():
            dataset_path(measured)
    except DataNotFoundError as exc:
        if os.environ.get("LLMSIM_REQUIRE_DATA", "") not in ("", "0", "false", "no"):
            pytest.fail(str(exc))
        pytest.skip(str(exc))


def test_validate_accuracy_both_runs(benchmark):
    _data_or_skip()
    done = benchmark.pedantic(validate_all, rounds=1, iterations=1)
    print()
    print(accuracy_table(done))
    for run in done.values():
        assert run.comparison.measured.num_requests == 300
        assert len(run.comparison.latency) == 15


if __name__ == "__main__":
    print(accuracy_table(validate_all()))
    sys.exit(0)
