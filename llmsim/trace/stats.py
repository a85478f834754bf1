"""Trace characterization: counts, rates, burstiness, length distributions, prefix reuse.

``ideal_prefix_reuse`` is the share of prompt tokens an infinite prefix cache would serve:
each request's prompt is cut into blocks (the trace's ``hash_block_size`` for hash-id
traces, ``block_size`` token ids otherwise), block ``k`` is identified by the chain of ids of
blocks ``0..k`` (so equal ids after a different prefix do not match), and a request hits the
longest leading run of blocks already seen in an earlier request. Hit tokens are capped at
the prompt length (the last block may be partial).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from llmsim.data.atomic import atomic_write_bytes
from llmsim.errors import ConfigError
from llmsim.trace.frame import DEFAULT_MAX_SPAN_S, NS_PER_S, TraceFrame

logger = logging.getLogger(__name__)

PERCENTILES = (50, 90, 99)
#: Most arrival-rate bins :func:`trace_stats` builds: the default 1 s bins over the longest
#: trace the loaders accept (400 days = 34.56M bins, ~280 MB of int64 counts).
MAX_RATE_BINS = DEFAULT_MAX_SPAN_S
#: Largest token-id block size for prefix reuse, tokens (vLLM block sizes are 1-256).
MAX_BLOCK_SIZE = 1 << 20
_UNDEFINED = "n/a (all requests arrive at one instant)"


@dataclass(frozen=True, slots=True, kw_only=True)
class LengthStats:
    """Distribution of a token count (tokens)."""

    mean: float
    std: float
    min: int
    p50: float
    p90: float
    p99: float
    max: int


@dataclass(frozen=True, slots=True, kw_only=True)
class TraceStats:
    """Summary of a trace.

    Attributes:
        name: trace name.
        num_requests: number of requests.
        span_s: last arrival - first arrival, s.
        mean_rate_per_s: requests / span (``None`` when all requests arrive at one instant).
        peak_rate_per_s: busiest ``bin_s`` bin, requests per second.
        empty_bin_share: share of ``bin_s`` bins with no arrival.
        interarrival_cv: std / mean of inter-arrival gaps (1 for Poisson; > 1 bursty;
            ``None`` when the mean gap is 0, i.e. a single arrival instant).
        input_tokens: prompt length distribution.
        output_tokens: output length distribution.
        num_sessions: distinct session ids (0 when none).
        prefix_reuse_ratio: ideal prefix-cache hit share of prompt tokens (None when the
            trace has neither block hashes nor token ids).
        prefix_block_size: block size used for ``prefix_reuse_ratio``, tokens.
        bin_s: width of the rate bins, s.
        rate_per_s: arrival rate per bin, shape (num_bins,).
    """

    name: str
    num_requests: int
    span_s: float
    mean_rate_per_s: float | None
    peak_rate_per_s: float
    empty_bin_share: float
    interarrival_cv: float | None
    input_tokens: LengthStats
    output_tokens: LengthStats
    num_sessions: int
    prefix_reuse_ratio: float | None
    prefix_block_size: int
    bin_s: float
    rate_per_s: np.ndarray = field(repr=False)

    def to_dict(self) -> dict[str, object]:
        """JSON-able summary (without the rate series)."""
        d = {k: v for k, v in asdict(self).items() if k != "rate_per_s"}
        return d


def _lengths(values: np.ndarray) -> LengthStats:
    p = np.percentile(values, PERCENTILES)
    return LengthStats(mean=float(values.mean()), std=float(values.std()), min=int(values.min()),
                       p50=float(p[0]), p90=float(p[1]), p99=float(p[2]), max=int(values.max()))


def check_stats_options(*, bin_s: object, block_size: object) -> None:
    """Validate :func:`trace_stats` options before a (long) trace load.

    Raises:
        ConfigError: ``bin_s`` not a finite number > 0, or ``block_size`` not an integer in
            [1, :data:`MAX_BLOCK_SIZE`].
    """
    _check_block_size(block_size)
    if not isinstance(bin_s, (int, float, np.integer, np.floating)) or isinstance(bin_s, bool) \
            or not (math.isfinite(bin_s) and bin_s > 0):
        raise ConfigError(f"bin width must be a finite number of seconds > 0, got {bin_s!r}", field="bin_s")


def _check_block_size(block_size: object) -> None:
    if not isinstance(block_size, (int, np.integer)) or isinstance(block_size, bool) \
            or not 1 <= block_size <= MAX_BLOCK_SIZE:
        raise ConfigError(f"block size must be an integer in [1, {MAX_BLOCK_SIZE}] tokens, got {block_size!r}",
                          field="block_size")


def ideal_prefix_reuse(frame: TraceFrame, *, block_size: int = 16) -> tuple[float | None, int]:
    """Ideal (infinite-cache) prefix hit share of prompt tokens; see the module docstring.

    Returns:
        ``(ratio, block size used)``; ratio is None without hashes or token ids.

    Raises:
        ConfigError: ``block_size`` not an integer in [1, :data:`MAX_BLOCK_SIZE`].
    """
    _check_block_size(block_size)
    df = frame.data
    if "block_hashes" in df.columns and frame.hash_block_size:
        bs = frame.hash_block_size
        blocks_iter = (() if v is None else v for v in df["block_hashes"])
    elif "input_token_ids" in df.columns:
        bs = block_size
        blocks_iter = (
            () if v is None else tuple(tuple(v[i : i + bs]) for i in range(0, len(v), bs))
            for v in df["input_token_ids"]
        )
    else:
        return None, 0
    seen: set[int] = set()
    hit_tokens = 0
    for n_in, blocks in zip(df["input_tokens"].tolist(), blocks_iter, strict=True):
        h = 0
        hit = 0
        matching = True
        for b in blocks:
            h = hash((h, b))
            if matching and h in seen:
                hit += 1
            else:
                matching = False
                seen.add(h)
        hit_tokens += min(hit * bs, n_in)
    total = int(df["input_tokens"].sum())
    return (hit_tokens / total if total else 0.0), bs


def trace_stats(frame: TraceFrame, *, bin_s: float = 1.0, block_size: int = 16) -> TraceStats:
    """Characterize a trace (vectorized except for the prefix-reuse pass).

    Args:
        frame: the trace (non-empty).
        bin_s: width of the arrival-rate bins, s (finite, > 0, and at most
            :data:`MAX_RATE_BINS` bins over the trace span).
        block_size: block size for token-id prefix reuse, tokens (an integer in
            [1, :data:`MAX_BLOCK_SIZE`]).

    Raises:
        ConfigError: empty trace, or ``bin_s`` / ``block_size`` out of range.
    """
    check_stats_options(bin_s=bin_s, block_size=block_size)
    df = frame.data
    if len(df) == 0:
        raise ConfigError("trace has no requests to characterize", field="trace")
    arrival_s = df["arrival_ns"].to_numpy(dtype=np.int64) / NS_PER_S
    span_s = float(arrival_s[-1] - arrival_s[0])
    bins = (span_s + 1e-12) / bin_s
    if not bins <= MAX_RATE_BINS:
        raise ConfigError(f"{bin_s!r} s bins over a {span_s:,.3f} s trace make more than {MAX_RATE_BINS:,} "
                          "bins; use wider bins", field="bin_s")
    gaps = np.diff(arrival_s)
    cv = float(gaps.std() / gaps.mean()) if gaps.size and gaps.mean() > 0 else None
    num_bins = max(1, int(np.ceil(bins)))
    counts = np.bincount(np.minimum(((arrival_s - arrival_s[0]) / bin_s).astype(np.int64), num_bins - 1),
                         minlength=num_bins)
    rate = counts / bin_s
    reuse, bs = ideal_prefix_reuse(frame, block_size=block_size)
    sessions = int(df["session_id"].nunique()) if "session_id" in df.columns else 0
    return TraceStats(
        name=frame.name,
        num_requests=len(df),
        span_s=span_s,
        mean_rate_per_s=len(df) / span_s if span_s > 0 else None,
        peak_rate_per_s=float(rate.max()),
        empty_bin_share=float((counts == 0).mean()),
        interarrival_cv=cv,
        input_tokens=_lengths(df["input_tokens"].to_numpy()),
        output_tokens=_lengths(df["output_tokens"].to_numpy()),
        num_sessions=sessions,
        prefix_reuse_ratio=reuse,
        prefix_block_size=bs,
        bin_s=bin_s,
        rate_per_s=rate,
    )


def format_table(stats: TraceStats) -> str:
    """Human-readable table of the summary."""
    rows = [
        ("trace", stats.name),
        ("requests", f"{stats.num_requests:,}"),
        ("span", f"{stats.span_s:,.1f} s"),
        ("mean rate", _UNDEFINED if stats.mean_rate_per_s is None else f"{stats.mean_rate_per_s:.3f} req/s"),
        (f"peak rate ({stats.bin_s:g} s bins)", f"{stats.peak_rate_per_s:.1f} req/s"),
        ("empty bins", f"{100 * stats.empty_bin_share:.1f} %"),
        ("inter-arrival CV", _UNDEFINED if stats.interarrival_cv is None else f"{stats.interarrival_cv:.3f}"),
    ]
    for label, ls in (("input tokens", stats.input_tokens), ("output tokens", stats.output_tokens)):
        rows.append((label, (f"mean {ls.mean:.1f}  p50 {ls.p50:.0f}  p90 {ls.p90:.0f}  p99 {ls.p99:.0f}  "
                             f"min {ls.min}  max {ls.max}")))
    if stats.num_sessions:
        rows.append(("sessions", f"{stats.num_sessions:,}"))
    if stats.prefix_reuse_ratio is not None:
        rows.append((f"ideal prefix reuse ({stats.prefix_block_size}-token blocks)",
                     f"{100 * stats.prefix_reuse_ratio:.1f} % of prompt tokens"))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def write_stats(frame: TraceFrame, stats: TraceStats, out_dir: str | Path) -> list[Path]:
    """Write ``stats.json``, ``rate.csv`` and ``trace_stats.png`` into ``out_dir``.

    All three are rendered in memory first and then each written atomically, so a failure
    (e.g. while plotting) leaves none of them behind rather than a partial set.

    Returns:
        The written paths.

    Raises:
        OSError: ``out_dir`` cannot be written.
    """
    out = Path(out_dir)
    rate = pd.DataFrame({"t_s": np.arange(len(stats.rate_per_s)) * stats.bin_s, "rate_per_s": stats.rate_per_s})
    payloads = {
        out / "stats.json": json.dumps(stats.to_dict(), indent=2, sort_keys=True).encode(),
        out / "rate.csv": rate.to_csv(index=False).encode(),
        out / "trace_stats.png": _plot_png(frame, stats, rate),
    }
    for path, data in payloads.items():
        atomic_write_bytes(path, data)
    return list(payloads)


def _plot_png(frame: TraceFrame, stats: TraceStats, rate: pd.DataFrame) -> bytes:
    """The 2x2 characterization figure (rate, inter-arrival gaps, input, output) as PNG bytes."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    df = frame.data
    fig, axes = plt.subplots(2, 2, figsize=(11, 7))
    try:
        ax = axes[0, 0]
        ax.plot(rate["t_s"], rate["rate_per_s"], lw=0.7)
        ax.set(title=f"arrival rate ({stats.bin_s:g} s bins)", xlabel="time (s)", ylabel="req/s")
        ax = axes[0, 1]
        gaps_s = np.diff(df["arrival_ns"].to_numpy()) / NS_PER_S
        gaps_s = gaps_s[gaps_s > 0]
        if gaps_s.size:
            ax.hist(gaps_s, bins=np.logspace(np.log10(gaps_s.min()), np.log10(gaps_s.max()) + 1e-9, 60))
            ax.set_xscale("log")
        cv = "n/a" if stats.interarrival_cv is None else f"{stats.interarrival_cv:.2f}"
        ax.set(title=f"inter-arrival (CV {cv})", xlabel="gap (s)", ylabel="count")
        for ax, col, label in ((axes[1, 0], "input_tokens", "input"), (axes[1, 1], "output_tokens", "output")):
            ax.hist(df[col].to_numpy(), bins=60)
            ax.set(title=f"{label} length", xlabel="tokens", ylabel="count")
        fig.suptitle(f"{stats.name}: {stats.num_requests:,} requests over {stats.span_s:,.0f} s")
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=100)
    finally:
        plt.close(fig)
    return buf.getvalue()
