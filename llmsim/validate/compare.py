"""Compare a simulated replay with a measured run, metric by metric.

Definitions (all from per-request timestamps; see ``docs/validation.md`` and ``docs/engine-semantics.md``):

- TTFT = first token - arrival; TPOT = (last token - first token) / (output tokens - 1),
  only for requests with more than one output token; E2E = last token - arrival; ITL = every
  gap between consecutive tokens of every request, pooled (as vLLM bench does).
- Statistics: mean and the 50/90/95/99th percentiles with linear interpolation
  (``numpy.percentile``, as vLLM bench and LLMServingSim 2.0 compute them), in ms.
- Latency origin: both sides count from the same event. A vLLM run directory's latencies
  start at ``queued_ts``, when the engine loop picked the request up (LLMServingSim 2.0's
  published vLLM numbers use the same origin); the simulated side then starts at the first
  ``schedule()`` call at or after the request's arrival (from the step log), the simulated
  counterpart of that pick-up. On both given runs the simulated pick-up wait and the
  measured frontend delay have the same distribution (median 16.4 vs 16.2 ms on RTXPRO6000,
  15.1 vs 15.2 ms on RTX4090). A vLLM bench JSON counts from the client's send, so the
  simulated side counts from the trace arrival. Without a step log the arrival is used.
- Signed error % = (simulated - measured) / measured x 100. The headline figure,
  ``mean_abs_error_pct``, is the mean of |error %| over the 15 TTFT/TPOT/E2E metrics
  (ITL is reported but not part of it, because not every measured format has it).
- Paired per-request errors: requests are aligned by ``request_id`` when both sides use the
  same ids, else by position (both lists are in workload order); for TTFT, TPOT and E2E we
  report the median and 90th percentile of |sim - measured| in ms and of
  |sim - measured| / measured in percent.
- Time series: both sides on the simulation's 1 s grid (tick ``t`` covers ``(t-1, t]`` s of
  the simulation clock; ticks past either side's end count as idle, value 0). The measured
  series is first moved onto the simulation clock by the same shift as the request tables
  (its own origin, ``meta.json`` ``started_at``, relative to the first arrival, plus the
  median arrival gap), then re-binned: rates through their cumulative count, gauges by
  linear interpolation between samples.
  Error measure: normalized mean absolute error ``NMAE % = sum|sim - meas| / sum|meas| x 100``
  and Pearson correlation r; plus the error of the series' mean.
- Run totals: makespan (first arrival -> last token), token and request throughput over the
  makespan; preemptions and prefix-hit tokens are compared where the measured run has them.

The simulated side is anything shaped like ``llmsim.replay.ReplayResult`` (``requests``,
``itls_s``, ``timeseries``, ``summary``, ``num_steps``, ``wall_time_s``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, overload

import numpy as np
import pandas as pd

from llmsim.errors import MeasuredRunError
from llmsim.validate.match import check_requests
from llmsim.validate.measured import TIMESERIES_COLUMNS, LatencyOrigin, MeasuredRun, ReferenceMetric

__all__ = [
    "LATENCY_METRICS",
    "LATENCY_STATS",
    "SERIES",
    "Comparison",
    "MetricRow",
    "PairedError",
    "ReplayLike",
    "SeriesComparison",
    "TotalRow",
    "compare",
    "error_pct",
    "latency_stats_ms",
]

logger = logging.getLogger(__name__)

#: The latency metrics of the headline table, in order.
LATENCY_METRICS = ("ttft", "tpot", "e2e")
#: Their statistics, in order (p50 is the median).
LATENCY_STATS = ("mean", "p50", "p90", "p95", "p99")
#: Time series compared on the 1 s grid (``timeseries.csv`` column names).
SERIES = TIMESERIES_COLUMNS[1:]
_PERCENTILES = {"p50": 50.0, "p90": 90.0, "p95": 95.0, "p99": 99.0}


class ReplayLike(Protocol):
    """What :func:`compare` reads from a simulated run (``llmsim.replay.ReplayResult``;
    read-only, so frozen dataclasses qualify)."""

    @property
    def requests(self) -> pd.DataFrame: ...
    @property
    def itls_s(self) -> list[np.ndarray]: ...
    @property
    def timeseries(self) -> pd.DataFrame: ...
    @property
    def summary(self) -> dict[str, Any]: ...
    @property
    def num_steps(self) -> int: ...
    @property
    def wall_time_s(self) -> float: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class MetricRow:
    """One latency statistic on both sides.

    Attributes:
        metric: ``ttft``, ``tpot``, ``e2e`` or ``itl``.
        stat: ``mean``, ``p50``, ``p90``, ``p95`` or ``p99``.
        measured_ms: measured value, ms.
        simulated_ms: our simulated value, ms.
        error_pct: signed (simulated - measured) / measured x 100.
        reference_simulated_ms: LLMServingSim 2.0's simulated value, ms (None if unknown).
        reference_error_pct: LLMServingSim 2.0's signed error as published, percent.
        reference_measured_ms: the measured value LLMServingSim compared against, ms.
    """

    metric: str
    stat: str
    measured_ms: float
    simulated_ms: float
    error_pct: float
    reference_simulated_ms: float | None = None
    reference_error_pct: float | None = None
    reference_measured_ms: float | None = None

    @property
    def key(self) -> str:
        """``"<metric>_<stat>"``, e.g. ``"ttft_p90"``."""
        return f"{self.metric}_{self.stat}"

    @property
    def no_worse_than_reference(self) -> bool | None:
        """|our error| <= |LLMServingSim's error| (to its printed 0.1% precision), or None."""
        if self.reference_error_pct is None:
            return None
        return abs(self.error_pct) <= abs(self.reference_error_pct) + 0.05


@dataclass(frozen=True, slots=True, kw_only=True)
class PairedError:
    """Distribution of per-request errors for one metric.

    Attributes:
        metric: ``ttft``, ``tpot`` or ``e2e``.
        num_pairs: requests with a finite value on both sides.
        median_abs_error_ms: median of |sim - measured|, ms.
        p90_abs_error_ms: 90th percentile of |sim - measured|, ms.
        median_abs_error_pct: median of |sim - measured| / measured x 100.
        p90_abs_error_pct: 90th percentile of the same, percent.
        mean_signed_error_ms: mean of (sim - measured), ms (bias).
    """

    metric: str
    num_pairs: int
    median_abs_error_ms: float
    p90_abs_error_ms: float
    median_abs_error_pct: float
    p90_abs_error_pct: float
    mean_signed_error_ms: float


@dataclass(frozen=True, slots=True, kw_only=True)
class SeriesComparison:
    """One time series on the common 1 s grid.

    Attributes:
        name: ``timeseries.csv`` column (``running``, ``kv_cache_pct``, ...).
        measured: False when the measured run did not record it (then errors are NaN).
        measured_mean: mean of the measured series over the grid.
        simulated_mean: mean of the simulated series over the grid.
        error_pct: signed error of the mean, percent.
        nmae_pct: sum|sim - meas| / sum|meas| x 100.
        pearson_r: Pearson correlation of the two series (NaN if either is constant).
        num_ticks: grid length, ticks of 1 s.
    """

    name: str
    measured: bool
    measured_mean: float
    simulated_mean: float
    error_pct: float
    nmae_pct: float
    pearson_r: float
    num_ticks: int


@dataclass(frozen=True, slots=True, kw_only=True)
class TotalRow:
    """A run total (makespan, throughput, preemptions, prefix-hit tokens).

    Attributes:
        key: e.g. ``makespan_s``, ``total_token_throughput_tok_per_s``.
        measured: measured value, or None when the measured run does not record it.
        simulated: simulated value (None when the simulation does not report it).
        error_pct: signed error percent, or None.
    """

    key: str
    measured: float | None
    simulated: float | None
    error_pct: float | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Comparison:
    """Everything the report shows.

    Attributes:
        name: experiment name.
        measured: the measured run.
        latency: the 15 TTFT/TPOT/E2E rows, in table order.
        itl: the 5 ITL rows when the measured run has ITLs, else empty.
        mean_abs_error_pct: mean |error %| over ``latency``.
        reference_mean_abs_error_pct: the same for LLMServingSim 2.0 (None without summary).
        paired: per-request error distributions for ttft, tpot, e2e.
        series: per time series comparison (empty when either side has none).
        totals: run totals.
        pairs: per-request frame, ``request_id``, ``input_tokens``, ``output_tokens`` and
            ``<metric>_measured_s`` / ``<metric>_simulated_s`` for ttft/tpot/e2e, plus the
            timeline columns of both sides on the simulation's clock when available.
        grid: the common 1 s grid, ``t`` plus ``<series>_measured`` / ``<series>_simulated``.
        measured_itls_s / simulated_itls_s: pooled ITLs in s (empty when not measured).
        timeline_shift_s: added to measured timestamps to put them on the simulation clock.
        sim_wall_time_s: host time the simulation took.
        sim_num_steps: engine steps simulated.
        notes: remarks for the reader (engine-setting mismatches, token mismatches...).
        sim_energy: the replay's ``summary["energy"]`` (None when the result has none).
        sim_power: the replay's 1 s power series (``ReplayResult.power``; None without).
    """

    name: str
    measured: MeasuredRun
    latency: tuple[MetricRow, ...]
    itl: tuple[MetricRow, ...]
    mean_abs_error_pct: float
    reference_mean_abs_error_pct: float | None
    paired: tuple[PairedError, ...]
    series: tuple[SeriesComparison, ...]
    totals: tuple[TotalRow, ...]
    pairs: pd.DataFrame
    grid: pd.DataFrame | None
    measured_itls_s: np.ndarray = field(default_factory=lambda: np.zeros(0))
    simulated_itls_s: np.ndarray = field(default_factory=lambda: np.zeros(0))
    timeline_shift_s: float | None = None
    sim_wall_time_s: float | None = None
    sim_num_steps: int | None = None
    notes: tuple[str, ...] = ()
    sim_energy: dict[str, Any] | None = None
    sim_power: pd.DataFrame | None = None

    @property
    def all_no_worse_than_reference(self) -> bool | None:
        """Every latency metric's |error| <= LLMServingSim's (None without its summary)."""
        flags = [row.no_worse_than_reference for row in self.latency]
        if any(f is None for f in flags):
            return None
        return all(flags)


@overload
def error_pct(measured: float, simulated: float) -> float: ...
@overload
def error_pct(measured: float | None, simulated: float | None) -> float | None: ...
def error_pct(measured: float | None, simulated: float | None) -> float | None:
    """Signed relative error in percent; None if a side is missing, NaN if measured is 0."""
    if measured is None or simulated is None:
        return None
    if not (math.isfinite(measured) and math.isfinite(simulated)) or measured == 0:
        return math.nan
    return (simulated - measured) / measured * 100.0


def latency_stats_ms(values_s: np.ndarray) -> dict[str, float]:
    """Mean and p50/p90/p95/p99 of finite values (s in, ms out); NaN when empty."""
    v = np.asarray(values_s, dtype=np.float64)
    v = v[np.isfinite(v)] * 1e3
    if v.size == 0:
        return {s: math.nan for s in LATENCY_STATS}
    out = {"mean": float(v.mean())}
    for stat, q in _PERCENTILES.items():
        out[stat] = float(np.percentile(v, q))
    return out


def compare(
    measured: MeasuredRun,
    result: ReplayLike,
    *,
    name: str = "",
    notes: Sequence[str] = (),
) -> Comparison:
    """Compare a replay with a measured run (definitions in the module docstring).

    Args:
        measured: from :func:`llmsim.validate.measured.load_measured`.
        result: the simulated run (``ReplayResult`` or an object with the same fields).
        name: experiment name for the report.
        notes: remarks to carry into the report.

    Raises:
        MeasuredRunError: the two runs have different numbers of requests, or a pair of
            requests has different token counts (:func:`llmsim.validate.match.check_requests`
            names the measured file and the first differing request), or the simulation lacks
            a required column.
    """
    sim = result.requests
    for col in ("request_id", "arrival_s", "first_token_s", "finish_s", "ttft_s", "tpot_s", "e2e_s"):
        if col not in sim.columns:
            raise MeasuredRunError(f"simulated requests lack column '{col}'", field=col)
    meas = measured.requests
    check_requests(measured, sim["request_id"].tolist(),
                   sim["input_tokens"].tolist() if "input_tokens" in sim.columns else meas["input_tokens"].tolist(),
                   sim["output_tokens"].tolist() if "output_tokens" in sim.columns else meas["output_tokens"].tolist())
    notes = list(notes)
    sim = _align(meas, sim, notes)
    sim = _align_latency_origin(sim, getattr(result, "steps", None), measured.latency_origin, notes)
    ok = meas["success"].to_numpy(dtype=bool)
    if not ok.all():
        notes.append(f"{int((~ok).sum())} measured requests failed; excluded from both sides")
    shift = _timeline_shift(meas, sim)
    pairs = _pairs_frame(meas, sim, ok, shift)
    latency, itl, m_itl, s_itl = _latency_rows(measured, result, pairs)
    mae = float(np.mean([abs(r.error_pct) for r in latency]))
    ref_mae = None
    ref_errs = [r.reference_error_pct for r in latency if r.reference_error_pct is not None]
    if measured.reference and len(ref_errs) == len(latency):
        ref_mae = float(np.mean([abs(e) for e in ref_errs]))
    grid, series = _series(measured, getattr(result, "timeseries", None), shift, notes)
    return Comparison(
        name=name,
        measured=measured,
        latency=latency,
        itl=itl,
        mean_abs_error_pct=mae,
        reference_mean_abs_error_pct=ref_mae,
        paired=tuple(_paired(pairs, m) for m in LATENCY_METRICS),
        series=series,
        totals=_totals(measured, result, pairs, shift),
        pairs=pairs,
        grid=grid,
        measured_itls_s=m_itl,
        simulated_itls_s=s_itl,
        timeline_shift_s=shift,
        sim_wall_time_s=_float_or_none(getattr(result, "wall_time_s", None)),
        sim_num_steps=getattr(result, "num_steps", None),
        notes=tuple(notes),
        sim_energy=(getattr(result, "summary", None) or {}).get("energy"),
        sim_power=getattr(result, "power", None),
    )


def _float_or_none(x: Any) -> float | None:
    return None if x is None else float(x)


def _align(meas: pd.DataFrame, sim: pd.DataFrame, notes: list[str]) -> pd.DataFrame:
    """Reorder the simulated rows to the measured order (by id if ids match, else by position)."""
    sim = sim.reset_index(drop=True)
    sim_ids = sim["request_id"].astype(str)
    if set(sim_ids) == set(meas["request_id"]) and sim_ids.is_unique:
        sim = sim.set_index(sim_ids).loc[meas["request_id"].tolist()].reset_index(drop=True)
        how = "request_id"
    else:
        how = "position (workload order)"
    logger.debug("paired requests by %s", how)
    notes.append(f"requests paired by {how}")
    return sim


def _align_latency_origin(
    sim: pd.DataFrame, steps: pd.DataFrame | None, origin: LatencyOrigin, notes: list[str]
) -> pd.DataFrame:
    """Recount simulated TTFT/E2E from the engine pick-up when the measured run does.

    The pick-up of a request is the first ``schedule()`` (step log ``scheduled_s``) of its
    instance at or after its arrival. Adds ``pickup_wait_s``.
    """
    sim = sim.copy()
    sim["pickup_wait_s"] = 0.0
    if origin is not LatencyOrigin.ENGINE_QUEUE:
        notes.append("simulated TTFT/E2E counted from the trace arrival (measured side counts from the client send)")
        return sim
    if steps is None or len(steps) == 0 or "scheduled_s" not in steps.columns:
        notes.append("no simulated step log: simulated TTFT/E2E counted from the arrival, not the engine pick-up")
        return sim
    arrival = sim["arrival_s"].to_numpy(dtype=np.float64)
    pickup = arrival.copy()
    inst_req = (sim["instance_id"].to_numpy() if "instance_id" in sim.columns
                else np.zeros(len(sim), dtype=np.int64))
    inst_step = (steps["instance_id"].to_numpy() if "instance_id" in steps.columns
                 else np.zeros(len(steps), dtype=np.int64))
    sched = steps["scheduled_s"].to_numpy(dtype=np.float64)
    for inst in np.unique(inst_req):
        times = np.sort(sched[inst_step == inst])
        rows = np.flatnonzero(inst_req == inst)
        if times.size == 0:
            continue
        idx = np.searchsorted(times, arrival[rows] - 1e-9, side="left")
        found = idx < times.size
        pickup[rows[found]] = times[idx[found]]
    wait = np.maximum(pickup - arrival, 0.0)
    sim["pickup_wait_s"] = wait
    sim["ttft_s"] = sim["ttft_s"].to_numpy(dtype=np.float64) - wait
    sim["e2e_s"] = sim["e2e_s"].to_numpy(dtype=np.float64) - wait
    notes.append(
        "latencies on both sides count from the engine pick-up (measured queued_ts; simulated first "
        f"schedule() after arrival): simulated pick-up wait median {np.median(wait) * 1e3:.1f} ms"
    )
    return sim


def _timeline_shift(meas: pd.DataFrame, sim: pd.DataFrame) -> float | None:
    """Offset (s) that puts measured timestamps on the simulation clock: median arrival gap."""
    gap = sim["arrival_s"].to_numpy(dtype=np.float64) - meas["arrival_s"].to_numpy(dtype=np.float64)
    gap = gap[np.isfinite(gap)]
    return float(np.median(gap)) if gap.size else None


def _pairs_frame(meas: pd.DataFrame, sim: pd.DataFrame, ok: np.ndarray, shift: float | None) -> pd.DataFrame:
    out = pd.DataFrame(
        {
            "request_id": meas["request_id"].to_numpy(),
            "input_tokens": meas["input_tokens"].to_numpy(),
            "output_tokens": meas["output_tokens"].to_numpy(),
        }
    )
    for m in LATENCY_METRICS:
        out[f"{m}_measured_s"] = np.where(ok, meas[f"{m}_s"].to_numpy(dtype=np.float64), np.nan)
        out[f"{m}_simulated_s"] = np.where(ok, sim[f"{m}_s"].to_numpy(dtype=np.float64), np.nan)
    for col in ("arrival_s", "first_scheduled_s", "first_token_s", "finish_s"):
        m_vals = meas[col].to_numpy(dtype=np.float64)
        out[f"{col[:-2]}_measured_s"] = m_vals + (shift if shift is not None else np.nan)
        out[f"{col[:-2]}_simulated_s"] = (
            sim[col].to_numpy(dtype=np.float64) if col in sim.columns else np.full(len(sim), np.nan)
        )
    out["pickup_wait_simulated_s"] = sim["pickup_wait_s"].to_numpy(dtype=np.float64)
    out["pickup_wait_measured_s"] = meas["frontend_delay_s"].to_numpy(dtype=np.float64)
    if "num_preemptions" in sim.columns:
        out["num_preemptions_simulated"] = sim["num_preemptions"].to_numpy()
    if "prefix_hit_tokens" in sim.columns:
        out["prefix_hit_tokens_simulated"] = sim["prefix_hit_tokens"].to_numpy()
    out["ok"] = ok
    return out


def _latency_rows(
    measured: MeasuredRun, result: ReplayLike, pairs: pd.DataFrame
) -> tuple[tuple[MetricRow, ...], tuple[MetricRow, ...], np.ndarray, np.ndarray]:
    ref = measured.reference or {}
    rows: list[MetricRow] = []
    for metric in LATENCY_METRICS:
        m_stats = latency_stats_ms(pairs[f"{metric}_measured_s"].to_numpy())
        s_stats = latency_stats_ms(pairs[f"{metric}_simulated_s"].to_numpy())
        rows.extend(_rows(metric, m_stats, s_stats, ref))
    itl_rows: tuple[MetricRow, ...] = ()
    m_itl = s_itl = np.zeros(0)
    if measured.itls_s is not None:
        ok = pairs["ok"].to_numpy()
        m_itl = _pool([g for g, keep in zip(measured.itls_s, ok, strict=True) if keep])
        sim_itls = getattr(result, "itls_s", None)
        if sim_itls is not None and len(sim_itls) == len(ok):
            s_itl = _pool([np.asarray(g) for g, keep in zip(sim_itls, ok, strict=True) if keep])
        if m_itl.size and s_itl.size:
            itl_rows = tuple(_rows("itl", latency_stats_ms(m_itl), latency_stats_ms(s_itl), ref))
    return tuple(rows), itl_rows, m_itl, s_itl


def _pool(gaps: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(gaps).astype(np.float64) if gaps else np.zeros(0)


def _rows(metric: str, m_stats: dict[str, float], s_stats: dict[str, float],
          ref: dict[str, ReferenceMetric]) -> list[MetricRow]:
    rows = []
    for stat in LATENCY_STATS:
        r = ref.get(f"{metric}_{stat}")
        rows.append(
            MetricRow(
                metric=metric,
                stat=stat,
                measured_ms=m_stats[stat],
                simulated_ms=s_stats[stat],
                error_pct=error_pct(m_stats[stat], s_stats[stat]),
                reference_simulated_ms=r.simulated_ms if r else None,
                reference_error_pct=r.error_pct if r else None,
                reference_measured_ms=r.measured_ms if r else None,
            )
        )
    return rows


def _paired(pairs: pd.DataFrame, metric: str) -> PairedError:
    m = pairs[f"{metric}_measured_s"].to_numpy(dtype=np.float64)
    s = pairs[f"{metric}_simulated_s"].to_numpy(dtype=np.float64)
    keep = np.isfinite(m) & np.isfinite(s)
    m, s = m[keep], s[keep]
    if m.size == 0:
        nan = math.nan
        return PairedError(
            metric=metric,
            num_pairs=0,
            median_abs_error_ms=nan,
            p90_abs_error_ms=nan,
            median_abs_error_pct=nan,
            p90_abs_error_pct=nan,
            mean_signed_error_ms=nan,
        )
    abs_ms = np.abs(s - m) * 1e3
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.abs(s - m) / m * 100.0
    rel = rel[np.isfinite(rel)]
    return PairedError(
        metric=metric,
        num_pairs=int(m.size),
        median_abs_error_ms=float(np.median(abs_ms)),
        p90_abs_error_ms=float(np.percentile(abs_ms, 90)),
        median_abs_error_pct=float(np.median(rel)) if rel.size else math.nan,
        p90_abs_error_pct=float(np.percentile(rel, 90)) if rel.size else math.nan,
        mean_signed_error_ms=float(np.mean(s - m) * 1e3),
    )


def _series(
    measured: MeasuredRun, sim_ts: pd.DataFrame | None, shift: float | None, notes: list[str]
) -> tuple[pd.DataFrame | None, tuple[SeriesComparison, ...]]:
    """Both series on the simulation's 1 s grid, the measured one moved by the request shift.

    Measured tick ``t`` covers ``(o + t - 1, o + t]`` on the measured request axis, ``o`` =
    :attr:`MeasuredRun.timeseries_origin_s`; adding ``shift`` (the request tables' offset)
    puts it on the simulation clock. Rates (prompt / generation throughput) are re-binned
    through their cumulative token count, interpolated linearly inside a tick; gauges
    (running, waiting, KV usage: samples at the tick's end) are interpolated linearly
    between samples, held for half a tick past either end, idle (0) beyond.
    """
    meas_ts = measured.timeseries
    if meas_ts is None or sim_ts is None or len(sim_ts) == 0:
        return None, ()
    for col in TIMESERIES_COLUMNS:
        if col not in sim_ts.columns:
            raise MeasuredRunError(f"simulated timeseries lacks column '{col}'", field=col)
    origin = measured.timeseries_origin_s
    move = (origin if origin is not None else 0.0) + (shift if shift is not None else 0.0)
    m_end = meas_ts["t"].to_numpy(dtype=np.float64) + move
    s_idx = np.rint(sim_ts["t"].to_numpy(dtype=np.float64)).astype(np.int64)
    last = int(max(math.ceil(m_end.max() - 1e-9), s_idx.max()))
    ticks = np.arange(1, last + 1)
    grid = pd.DataFrame({"t": ticks.astype(np.float64)})
    out = []
    for name in SERIES:
        values = meas_ts[name].to_numpy(dtype=np.float64)
        m = _rebin_rate(m_end, values, last) if name in _RATE_SERIES else _resample_gauge(m_end, values, last)
        s = _on_grid(s_idx, sim_ts[name].to_numpy(dtype=np.float64), last)
        grid[f"{name}_measured"] = m
        grid[f"{name}_simulated"] = s
        recorded = measured.kv_usage_measured if name == "kv_cache_pct" else True
        out.append(_series_row(name, m, s, recorded))
    where = ("meta.json started_at" if origin is not None else
             "assumed at the first arrival (no started_at in the metadata)")
    notes.append(f"measured time series moved by {move * 1e3:+.1f} ms onto the simulation clock "
                 f"(series origin: {where}; plus the request timeline shift)")
    return grid, tuple(out)


#: Series that are rates over their tick (re-binned by cumulative count, not interpolated).
_RATE_SERIES = frozenset({"prompt_throughput", "gen_throughput"})


def _rebin_rate(end_s: np.ndarray, rate: np.ndarray, last: int) -> np.ndarray:
    """A per-tick rate (ticks ``(e - 1, e]``) on the integer ticks ``1..last`` (same unit)."""
    cum = np.cumsum(rate)
    xs = np.maximum.accumulate(np.column_stack([end_s - 1.0, end_s]).ravel())  # float-safe order
    cs = np.column_stack([np.concatenate([[0.0], cum[:-1]]), cum]).ravel()
    at = np.interp(np.arange(0, last + 1, dtype=np.float64), xs, cs, left=0.0, right=float(cum[-1]))
    return np.asarray(np.diff(at), dtype=np.float64)


def _resample_gauge(end_s: np.ndarray, values: np.ndarray, last: int) -> np.ndarray:
    """Samples taken at ``end_s`` read at ``1..last``: linear between samples, the edge sample
    within half a tick of either end (a sub-second shift moves no sample off the grid), idle
    (0) further out."""
    at = np.arange(1, last + 1, dtype=np.float64)
    out: np.ndarray = np.interp(at, end_s, values)
    out[(at < end_s[0] - 0.5) | (at > end_s[-1] + 0.5)] = 0.0
    return out


def _on_grid(idx: np.ndarray, values: np.ndarray, last: int) -> np.ndarray:
    """Values placed on ticks 1..last (a duplicated tick keeps the later sample; gaps = 0)."""
    out = np.zeros(last, dtype=np.float64)
    keep = (idx >= 1) & (idx <= last)
    out[idx[keep] - 1] = values[keep]
    return out


def _series_row(name: str, m: np.ndarray, s: np.ndarray, recorded: bool) -> SeriesComparison:
    nan = math.nan
    if not recorded:
        return SeriesComparison(
            name=name,
            measured=False,
            measured_mean=nan,
            simulated_mean=float(s.mean()),
            error_pct=nan,
            nmae_pct=nan,
            pearson_r=nan,
            num_ticks=int(m.size),
        )
    denom = np.abs(m).sum()
    nmae = float(np.abs(s - m).sum() / denom * 100.0) if denom > 0 else nan
    r = float(np.corrcoef(m, s)[0, 1]) if m.std() > 0 and s.std() > 0 else nan
    return SeriesComparison(
        name=name,
        measured=True,
        measured_mean=float(m.mean()),
        simulated_mean=float(s.mean()),
        error_pct=error_pct(float(m.mean()), float(s.mean())),
        nmae_pct=nmae,
        pearson_r=r,
        num_ticks=int(m.size),
    )


def _totals(measured: MeasuredRun, result: ReplayLike, pairs: pd.DataFrame, shift: float | None
            ) -> tuple[TotalRow, ...]:
    ok = pairs["ok"].to_numpy()
    in_tok = float(pairs.loc[ok, "input_tokens"].sum())
    out_tok = float(pairs.loc[ok, "output_tokens"].sum())
    n = float(ok.sum())
    m_span = _makespan(pairs["arrival_measured_s"], pairs["finish_measured_s"])
    if m_span is None:
        m_span = measured.duration_s
    s_span = _makespan(pairs["arrival_simulated_s"], pairs["finish_simulated_s"])

    def per_span(x: float, span: float | None) -> float | None:
        return x / span if span else None

    rows = [
        ("makespan_s", m_span, s_span),
        ("total_token_throughput_tok_per_s", per_span(in_tok + out_tok, m_span), per_span(in_tok + out_tok, s_span)),
        ("output_throughput_tok_per_s", per_span(out_tok, m_span), per_span(out_tok, s_span)),
        ("request_throughput_req_per_s", per_span(n, m_span), per_span(n, s_span)),
    ]
    sim = result.requests
    for key, col in (("num_preemptions", "num_preemptions"), ("prefix_hit_tokens", "prefix_hit_tokens")):
        s_val = float(sim[col].sum()) if col in sim.columns else None
        m_val = measured.meta.get(key) if isinstance(measured.meta.get(key), int | float) else None
        rows.append((key, m_val, s_val))
    return tuple(TotalRow(key=k, measured=m, simulated=s, error_pct=error_pct(m, s)) for k, m, s in rows)


def _makespan(arrival: pd.Series, finish: pd.Series) -> float | None:
    a = arrival.to_numpy(dtype=np.float64)
    f = finish.to_numpy(dtype=np.float64)
    if not (np.isfinite(a).any() and np.isfinite(f).any()):
        return None
    return float(np.nanmax(f) - np.nanmin(a))
