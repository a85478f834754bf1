"""Plots of a sweep's results: every metric against each swept axis (matplotlib, PNG).

One figure per axis (``plots/<axis>.png``), one panel per metric. The axis values are
categories in the order of first appearance (numbers sorted); each point of the sweep is a
dot at its axis value (the spread of the dots is the effect of the other axes) and the line
joins the mean over the points at each value. Latencies are drawn in ms.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["PLOTTED_METRICS", "plot_axes"]

PLOTTED_METRICS = (
    "ttft_mean_s", "ttft_p99_s", "tpot_mean_s", "tpot_p99_s", "itl_p99_s", "e2e_mean_s",
    "e2e_p99_s", "throughput_requests_per_s", "output_tokens_per_s", "slo_attainment",
    "goodput_requests_per_s",
)
"""Columns drawn (those the table has)."""


def _label(metric: str) -> tuple[str, float]:
    """Axis label and scale of a metric column (seconds drawn as ms)."""
    if metric.endswith("_s") and not metric.endswith("_per_s"):
        return metric[:-2].replace("_", " ") + " (ms)", 1e3
    return metric.replace("_per_s", " (/s)").replace("_", " "), 1.0


def _file_name(axis: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", axis) + ".png"


def plot_axes(table: pd.DataFrame, axes: Sequence[str], out_dir: Path) -> list[Path]:
    """Draw ``plots/<axis>.png`` for each axis of ``table`` into ``out_dir``.

    Returns:
        The PNG files written (none when the table has no successful point).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = table[table["error"].isna()]
    metrics = [m for m in PLOTTED_METRICS if m in ok.columns and ok[m].notna().any()]
    if ok.empty or not metrics:
        return []
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for axis in axes:
        column = ok[axis].astype(object).where(ok[axis].notna(), "unset").tolist()
        values = list(dict.fromkeys(column))
        if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
            values = sorted(values)
        pos = {v: i for i, v in enumerate(values)}
        cols = min(4, len(metrics))
        rows = math.ceil(len(metrics) / cols)
        fig, grid = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.8 * rows), squeeze=False)
        x = [pos[v] for v in column]
        for k, metric in enumerate(metrics):
            ax: Any = grid[k // cols][k % cols]
            label, scale = _label(metric)
            y = ok[metric].astype("float64") * scale
            ax.scatter(x, y, s=10, alpha=0.5)
            means = y.groupby(x).mean()
            ax.plot(means.index, means.to_numpy(), marker="o", linewidth=1.2)
            ax.set_xticks(range(len(values)), [str(v) for v in values], fontsize=7,
                          rotation=30 if len(values) > 4 else 0)
            ax.set_title(label, fontsize=9)
            ax.tick_params(axis="y", labelsize=7)
            ax.grid(alpha=0.3)
        for k in range(len(metrics), rows * cols):
            grid[k // cols][k % cols].axis("off")
        fig.suptitle(f"{len(ok)} points against {axis}", fontsize=10)
        fig.tight_layout()
        path = out_dir / _file_name(axis)
        fig.savefig(path, dpi=90, metadata={"Software": None})
        plt.close(fig)
        written.append(path)
    return written
