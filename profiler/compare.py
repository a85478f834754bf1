"""Per-operator ratios between two profiles (two devices, or a re-measurement).

For every TP degree and operator present in both profiles, points with identical axis
values are paired and ``ratio = b / a`` of the chosen latency statistic is taken; each
operator is summarized by the geometric mean, median, min and max ratio over its points.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from llmsim.errors import ConfigError
from llmsim.v1 import profile_pb2 as pb

_KIND_NAMES = {pb.OP_KIND_DENSE: "dense", pb.OP_KIND_PER_SEQUENCE: "per_sequence",
               pb.OP_KIND_ATTENTION: "attention", pb.OP_KIND_MOE: "moe",
               pb.OP_KIND_COLLECTIVE: "collective"}


@dataclass(frozen=True, slots=True, kw_only=True)
class OpRatio:
    """Ratios ``b / a`` of one operator over its common points.

    Attributes:
        tp: TP degree. op: operator name. kind: table kind name.
        first_axis: values of the table's first axis at each common point.
        ratios: ``b / a`` per common point (same order).
    """

    tp: int
    op: str
    kind: str
    first_axis: tuple[int, ...]
    ratios: tuple[float, ...]

    @property
    def geomean(self) -> float:
        """Geometric mean ratio."""
        return math.exp(sum(math.log(r) for r in self.ratios) / len(self.ratios))

    @property
    def median(self) -> float:
        """Median ratio."""
        s = sorted(self.ratios)
        mid = len(s) // 2
        return s[mid] if len(s) % 2 else 0.5 * (s[mid - 1] + s[mid])


def _latencies(table: pb.OpTable, stat: str) -> list[float]:
    for name in (f"{stat}_ns", "median_ns", "mean_ns"):
        vals = list(getattr(table, name))
        if vals:
            return vals
    return []


def _points(table: pb.OpTable, stat: str) -> dict[tuple[int, ...], float]:
    lat = _latencies(table, stat)
    cols = [list(a.values) for a in table.axes]
    return {tuple(c[i] for c in cols): lat[i] for i in range(len(lat))}


def compare_profiles(a: pb.Profile, b: pb.Profile, *, stat: str = "median") -> list[OpRatio]:
    """Per-op ratios ``b / a`` over the points both profiles measured.

    Raises:
        ConfigError: ``stat`` is not a kept statistic, or the profiles share no TP degree.
    """
    if stat not in ("median", "mean", "p90", "min", "max"):
        raise ConfigError(f"unknown statistic {stat!r}", field="stat")
    tps_b = {t.tp_degree: t for t in b.tp}
    out: list[OpRatio] = []
    common_tp = [t for t in a.tp if t.tp_degree in tps_b]
    if not common_tp:
        raise ConfigError("the two profiles share no TP degree", field="tp")
    for ta in common_tp:
        ops_b = {o.op: o for o in tps_b[ta.tp_degree].ops}
        for oa in ta.ops:
            ob = ops_b.get(oa.op)
            if ob is None:
                continue
            pa, pb_ = _points(oa, stat), _points(ob, stat)
            common = sorted(k for k in pa if k in pb_ and pa[k] > 0 and pb_[k] > 0)
            if common:
                out.append(OpRatio(tp=ta.tp_degree, op=oa.op, kind=_KIND_NAMES.get(oa.kind, "?"),
                                   first_axis=tuple(k[0] for k in common),
                                   ratios=tuple(pb_[k] / pa[k] for k in common)))
    return out


def format_table(ratios: list[OpRatio], *, label_a: str, label_b: str) -> str:
    """A fixed-width text table of per-op ratio summaries."""
    head = f"ratio = {label_b} / {label_a}\n"
    cols = f"{'tp':>3} {'op':<16} {'kind':<13} {'points':>6} {'geomean':>8} {'median':>8} " \
           f"{'min':>8} {'max':>8}"
    lines = [head + cols, "-" * len(cols)]
    for r in ratios:
        lines.append(f"{r.tp:>3} {r.op:<16} {r.kind:<13} {len(r.ratios):>6} {r.geomean:>8.3f} "
                     f"{r.median:>8.3f} {min(r.ratios):>8.3f} {max(r.ratios):>8.3f}")
    return "\n".join(lines)


def plot_ratios(ratios: list[OpRatio], path: Path, *, title: str) -> None:
    """Two panels: per-op ratio distribution (box plot, log scale) and ratio vs the first
    axis for dense / per-sequence ops. Written atomically as PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import io

    import matplotlib.pyplot as plt

    from llmsim.data.atomic import atomic_write_bytes

    fig, (left, right) = plt.subplots(1, 2, figsize=(14, 5))
    labels = [f"{r.op} tp{r.tp}" for r in ratios]
    left.boxplot([list(r.ratios) for r in ratios], showfliers=True)
    left.set_xticks(range(1, len(labels) + 1), labels, rotation=60, ha="right", fontsize=8)
    left.set_yscale("log")
    left.axhline(1.0, color="grey", lw=0.8)
    left.set_ylabel("latency ratio (b / a)")
    left.set_title("per-op ratio over common points")
    for r in ratios:
        if r.kind in ("dense", "per_sequence"):
            right.plot(r.first_axis, r.ratios, marker=".", lw=1, label=f"{r.op} tp{r.tp}")
    right.set_xscale("log")
    right.set_yscale("log")
    right.axhline(1.0, color="grey", lw=0.8)
    right.set_xlabel("tokens / sequences")
    right.set_ylabel("latency ratio (b / a)")
    right.legend(fontsize=7, ncol=2)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
