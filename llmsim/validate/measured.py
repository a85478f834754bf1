"""Load measured deployments: what a real vLLM server did on a workload.

Two formats are read into one :class:`MeasuredRun`:

1. **vLLM run directory** (the LLMServingSim 2.0 validation layout,
   ``measured/<HW>/<model>/``): ``vllm/requests.jsonl`` (one row per request),
   ``vllm/timeseries.csv`` (1 s samples), ``vllm/meta.json`` (engine settings) and, when
   present, ``llmservingsim_summary.txt`` (LLMServingSim 2.0's own error on the run).
2. **vLLM bench result JSON** written by ``vllm bench serve --save-result --save-detailed``:
   per-request ``ttfts``, ``itls``, ``input_lens``, ``output_lens`` (seconds / tokens), plus
   summary fields such as ``duration`` and ``total_token_throughput``.

Clocks in ``requests.jsonl``
----------------------------
``arrival_time`` is wall-clock epoch seconds stamped by vLLM's frontend; ``queued_ts``,
``scheduled_ts``, ``first_token_ts`` and ``last_token_ts`` are ``time.monotonic()`` seconds
stamped by the engine core. Both are read on the same host, so for every request
``queued_ts - arrival_time = offset + frontend_delay`` with ``frontend_delay >= 0``
(tokenization and the frontend-to-engine hop). The clock offset is therefore estimated as
``offset = min_i(queued_ts_i - arrival_time_i)``: the tightest bound the data allows, biased
by at most the smallest frontend delay (milliseconds). It is used to put the frontend arrival
on the engine clock (``frontend_delay_s`` column, and the run's time origin).

Latency reference point: latencies are measured from ``queued_ts`` (the engine-side arrival),
the definition LLMServingSim 2.0 uses for its published "vLLM" column (we reproduce its
numbers to 0.1 ms), so our errors and its errors are against the same measured values. The
frontend delay this leaves out is reported (median ~15 ms on the given runs).

Time origin: ``t = 0`` is the earliest frontend arrival on the engine clock
(``min_i(arrival_time_i) + offset``), i.e. when the client's first request reached the server.
"""

from __future__ import annotations

import io
import logging
import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from llmsim.errors import MeasuredRunError
from llmsim.safeio import loads_json, read_text

__all__ = [
    "REQUEST_COLUMNS",
    "TIMESERIES_COLUMNS",
    "LatencyOrigin",
    "MeasuredFormat",
    "MeasuredRun",
    "ReferenceMetric",
    "load_bench_json",
    "load_measured",
    "load_vllm_dir",
    "parse_llmservingsim_summary",
    "read_timeseries_csv",
]

logger = logging.getLogger(__name__)

#: Columns of :attr:`MeasuredRun.requests` (same names and units as ``ReplayResult.requests``).
REQUEST_COLUMNS = (
    "request_id",
    "input_tokens",
    "output_tokens",
    "arrival_s",
    "first_scheduled_s",
    "first_token_s",
    "finish_s",
    "ttft_s",
    "tpot_s",
    "e2e_s",
    "frontend_delay_s",
    "success",
)

#: Columns of vLLM's ``timeseries.csv`` (and of ``ReplayResult.timeseries``).
TIMESERIES_COLUMNS = ("t", "prompt_throughput", "gen_throughput", "running", "waiting", "kv_cache_pct")

_REQUEST_FIELDS = (
    "request_id",
    "input_toks",
    "output_toks",
    "arrival_time",
    "queued_ts",
    "scheduled_ts",
    "first_token_ts",
    "last_token_ts",
)
_BENCH_FIELDS = ("ttfts", "itls", "input_lens", "output_lens")
# Timestamps may disagree by float rounding only (they are stamped by one process).
_CLOCK_TOLERANCE_S = 1e-6
# Largest token count accepted per request (2^31 - 1: far above any context length, and
# exact as a double, so integral floats such as 100.0 convert without loss).
_MAX_TOKENS = 2**31 - 1
# Ceiling on one measured-run file, bytes (the published requests.jsonl files are ~100 KB).
MAX_MEASURED_BYTES = 1 * 2**30


class MeasuredFormat(StrEnum):
    """Which file layout a measured run came from."""

    VLLM_DIR = "vllm_dir"
    BENCH_JSON = "bench_json"


class LatencyOrigin(StrEnum):
    """Where a measured run's TTFT / E2E start counting.

    ``engine_queue``: when the engine core put the request in its waiting queue (vLLM's
    ``queued_ts``), i.e. excluding the wait for the engine loop to pick the request up;
    ``client``: when the client sent the request (vLLM bench's TTFT).
    """

    ENGINE_QUEUE = "engine_queue"
    CLIENT = "client"


@dataclass(frozen=True, slots=True, kw_only=True)
class ReferenceMetric:
    """One row of LLMServingSim 2.0's published validation (``llmservingsim_summary.txt``).

    Attributes:
        key: our metric key, e.g. ``"ttft_p90"``.
        measured_ms: the vLLM value it compared against, ms.
        simulated_ms: LLMServingSim 2.0's simulated value, ms.
        error_pct: its signed error as printed, percent.
    """

    key: str
    measured_ms: float
    simulated_ms: float
    error_pct: float


@dataclass(frozen=True, slots=True, kw_only=True)
class MeasuredRun:
    """A measured deployment, normalized.

    Attributes:
        source: the file or directory it was read from.
        format: which layout it came from.
        requests: one row per request in workload order, columns :data:`REQUEST_COLUMNS`:
            ``request_id`` (str), ``input_tokens``/``output_tokens`` (int),
            ``arrival_s``, ``first_scheduled_s``, ``first_token_s``, ``finish_s`` (float s
            from the run's time origin; NaN when the format has no timeline),
            ``ttft_s``, ``tpot_s`` (NaN when output_tokens == 1), ``e2e_s`` (float s),
            ``frontend_delay_s`` (s between the frontend and the engine queue; NaN when
            unknown), ``success`` (bool; failed bench requests are kept but flagged).
        itls_s: per request, the inter-token gaps in seconds, or None when not measured.
        timeseries: 1 s samples with :data:`TIMESERIES_COLUMNS`, or None.
        kv_usage_measured: False when the KV-usage column is absent or all zero while
            requests were running (the engine did not report it).
        engine: engine settings found in the run's metadata, by vLLM argument name
            (``max_num_seqs``, ``max_num_batched_tokens``, ``block_size``,
            ``enable_prefix_caching``, ``gpu_memory_utilization``, ``num_gpu_blocks``,
            ``cudagraph_capture_sizes``, ``async_scheduling``, ...); only keys present.
        meta: the raw metadata (``meta.json`` or the bench JSON's summary fields).
        clock_offset_s: estimated ``monotonic - epoch`` offset, s (None for bench JSON).
        duration_s: measured run duration when the format records it (bench JSON), else None.
        reference: LLMServingSim 2.0's published numbers by metric key, or None.
        reference_path: the file ``reference`` came from.
        latency_origin: where measured TTFT/E2E start (the simulated side is aligned to it).
        timeseries_origin_s: where ``timeseries.csv``'s ``t = 0`` lies on the request
            timeline (s; ``meta.json`` ``started_at`` minus the first frontend arrival, both
            epoch), or None when the metadata does not say.
    """

    source: Path
    format: MeasuredFormat
    requests: pd.DataFrame
    itls_s: list[np.ndarray] | None = None
    timeseries: pd.DataFrame | None = None
    kv_usage_measured: bool = False
    engine: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    clock_offset_s: float | None = None
    duration_s: float | None = None
    reference: dict[str, ReferenceMetric] | None = None
    reference_path: Path | None = None
    latency_origin: LatencyOrigin = LatencyOrigin.ENGINE_QUEUE
    timeseries_origin_s: float | None = None

    @property
    def num_requests(self) -> int:
        """Requests in the run (including failed ones)."""
        return len(self.requests)

    @property
    def requests_path(self) -> Path:
        """The file holding the per-request rows (for error messages)."""
        if self.format is MeasuredFormat.VLLM_DIR:
            return _vllm_subdir(self.source) / "requests.jsonl"
        return self.source


def load_measured(path: str | Path) -> MeasuredRun:
    """Load a measured run from a vLLM run directory or a vLLM bench result JSON.

    Args:
        path: a directory (``measured/<HW>/<model>/`` or its ``vllm/`` subdirectory) or a
            ``.json`` file written by ``vllm bench serve --save-result --save-detailed``.

    Raises:
        MeasuredRunError: the path does not exist or its content is malformed (the message
            names file, line and field).
    """
    p = Path(path)
    if p.is_dir():
        return load_vllm_dir(p)
    if p.is_file():
        return load_bench_json(p)
    raise MeasuredRunError("no such measured run (expected a directory or a JSON file)", path=p)


# --------------------------------------------------------------------------- vLLM run dir


def _vllm_subdir(root: Path) -> Path:
    return root if (root / "requests.jsonl").exists() else root / "vllm"


def load_vllm_dir(root: str | Path) -> MeasuredRun:
    """Load the LLMServingSim/vLLM layout (see the module docstring for the clocks).

    Raises:
        MeasuredRunError: a file is missing or malformed, or ``meta.json``'s
            ``num_requests`` disagrees with the rows of ``requests.jsonl``.
    """
    root = Path(root)
    vdir = _vllm_subdir(root)
    req_path = vdir / "requests.jsonl"
    if not req_path.is_file():
        raise MeasuredRunError("missing requests.jsonl (expected <run>/vllm/requests.jsonl)", path=req_path)
    rows = _read_request_rows(req_path)
    meta_path = vdir / "meta.json"
    meta = _read_json_object(meta_path) if meta_path.is_file() else {}
    expected = meta.get("num_requests")
    if expected is not None and (isinstance(expected, bool) or not isinstance(expected, int)):
        raise MeasuredRunError(f"expected an integer, got {expected!r}", path=meta_path,
                               field="num_requests")
    if expected is not None and expected != len(rows):
        raise MeasuredRunError(
            f"meta.json says {expected} requests but requests.jsonl has {len(rows)} rows",
            path=meta_path,
            field="num_requests",
        )
    requests, offset_s = _requests_from_rows(rows)
    ts_path = vdir / "timeseries.csv"
    timeseries = read_timeseries_csv(ts_path) if ts_path.is_file() else None
    summary_dir = root if vdir != root else root.parent
    summary_path = summary_dir / "llmservingsim_summary.txt"
    reference = None
    if summary_path.is_file():
        text = read_text(summary_path, what="LLMServingSim summary", error=MeasuredRunError,
                         max_bytes=MAX_MEASURED_BYTES)
        reference = parse_llmservingsim_summary(text, path=summary_path)
    return MeasuredRun(
        source=root,
        format=MeasuredFormat.VLLM_DIR,
        requests=requests,
        timeseries=timeseries,
        kv_usage_measured=_kv_usage_measured(timeseries),
        engine=_engine_settings(meta, meta_path),
        meta=meta,
        clock_offset_s=offset_s,
        reference=reference,
        reference_path=summary_path if reference is not None else None,
        timeseries_origin_s=_series_origin(meta, rows) if timeseries is not None else None,
    )


# A series origin further than this from the first arrival is not the same run's clock.
_MAX_SERIES_ORIGIN_S = 3600.0


def _series_origin(meta: dict[str, Any], rows: list[tuple[int, dict[str, Any]]]) -> float | None:
    """``started_at`` (ISO 8601, UTC) minus the first ``arrival_time`` (epoch s), or None."""
    started = meta.get("started_at")
    if not isinstance(started, str):
        return None
    try:
        stamp = datetime.fromisoformat(started)  # Python >= 3.11 reads a trailing Z
    except ValueError:
        logger.warning("meta.json started_at %r is not an ISO 8601 time; series origin unknown", started[:80])
        return None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    origin = stamp.timestamp() - min(float(r["arrival_time"]) for _, r in rows)
    if not math.isfinite(origin) or abs(origin) > _MAX_SERIES_ORIGIN_S:
        logger.warning("meta.json started_at is %.0f s from the first arrival; series origin unknown", origin)
        return None
    return origin


def _read_json_object(path: Path) -> dict[str, Any]:
    text = read_text(path, what="measured-run JSON", error=MeasuredRunError,
                     max_bytes=MAX_MEASURED_BYTES)
    obj = loads_json(text, path=path, error=MeasuredRunError)
    if not isinstance(obj, dict):
        raise MeasuredRunError("expected a JSON object", path=path)
    return obj


def _read_request_rows(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """Parse and check ``requests.jsonl``; returns ``(line number, row)`` pairs."""
    rows: list[tuple[int, dict[str, Any]]] = []
    seen: dict[str, int] = {}
    content = read_text(path, what="requests.jsonl", error=MeasuredRunError, max_bytes=MAX_MEASURED_BYTES)
    for lineno, text in enumerate(content.split("\n"), start=1):
        if not text.strip():
            continue
        row = loads_json(text, path=path, line=lineno, error=MeasuredRunError, what="JSON row")
        if not isinstance(row, dict):
            raise MeasuredRunError("expected a JSON object", path=path, line=lineno)
        _check_request_row(row, path, lineno)
        rid = str(row["request_id"])
        if rid in seen:
            raise MeasuredRunError(
                f"duplicate request_id {rid!r} (first on line {seen[rid]})",
                path=path,
                line=lineno,
                field="request_id",
            )
        seen[rid] = lineno
        rows.append((lineno, row))
    if not rows:
        raise MeasuredRunError("no requests", path=path)
    return rows


def _check_request_row(row: dict[str, Any], path: Path, lineno: int) -> None:
    for name in _REQUEST_FIELDS:
        if name not in row or row[name] is None:
            raise MeasuredRunError("missing field", path=path, line=lineno, field=name)
        value = row[name]
        if name == "request_id":
            if isinstance(value, bool) or not isinstance(value, str | int) or value == "":
                raise MeasuredRunError(f"expected a string or integer id, got {value!r}"[:200],
                                       path=path, line=lineno, field=name)
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise MeasuredRunError(f"expected a finite number, got {value!r}"[:200], path=path, line=lineno, field=name)
        if value < 0:
            raise MeasuredRunError(f"a timestamp or count cannot be negative, got {value!r}",
                                   path=path, line=lineno, field=name)
    for name in ("input_toks", "output_toks"):
        value = row[name]
        if not 1 <= value <= _MAX_TOKENS or int(value) != value:
            raise MeasuredRunError(f"expected an integer in [1, {_MAX_TOKENS}], got {value!r}",
                                   path=path, line=lineno, field=name)
    order = ("queued_ts", "scheduled_ts", "first_token_ts", "last_token_ts")
    for before, after in zip(order, order[1:], strict=False):
        if row[after] < row[before] - _CLOCK_TOLERANCE_S:
            raise MeasuredRunError(
                f"{after}={row[after]} is earlier than {before}={row[before]}",
                path=path,
                line=lineno,
                field=after,
            )


def _requests_from_rows(rows: list[tuple[int, dict[str, Any]]]) -> tuple[pd.DataFrame, float]:
    """Normalize rows onto one clock; returns the frame and the monotonic-epoch offset (s)."""
    col = {name: np.array([r[name] for _, r in rows], dtype=np.float64) for name in _REQUEST_FIELDS[1:]}
    clock_gap = col["queued_ts"] - col["arrival_time"]
    offset_s = float(np.min(clock_gap))
    frontend_delay = clock_gap - offset_s  # >= 0 exactly (differences of one subtraction)
    t0 = float(np.min(col["queued_ts"] - frontend_delay))  # first frontend arrival, monotonic clock
    out_toks = col["output_toks"].astype(np.int64)
    ttft = col["first_token_ts"] - col["queued_ts"]
    e2e = col["last_token_ts"] - col["queued_ts"]
    with np.errstate(divide="ignore", invalid="ignore"):
        tpot = np.where(out_toks > 1, (col["last_token_ts"] - col["first_token_ts"]) / (out_toks - 1), np.nan)
    frame = pd.DataFrame(
        {
            "request_id": [str(r["request_id"]) for _, r in rows],
            "input_tokens": col["input_toks"].astype(np.int64),
            "output_tokens": out_toks,
            "arrival_s": col["queued_ts"] - t0,
            "first_scheduled_s": col["scheduled_ts"] - t0,
            "first_token_s": col["first_token_ts"] - t0,
            "finish_s": col["last_token_ts"] - t0,
            "ttft_s": ttft,
            "tpot_s": tpot,
            "e2e_s": e2e,
            "frontend_delay_s": frontend_delay,
            "success": np.ones(len(rows), dtype=bool),
        }
    )
    return frame, offset_s


def read_timeseries_csv(path: Path) -> pd.DataFrame:
    """Read vLLM's 1 s ``timeseries.csv`` (columns :data:`TIMESERIES_COLUMNS`).

    Raises:
        MeasuredRunError: a column is missing or a value is not a finite number
            (names the 1-based file line).
    """
    text = read_text(path, what="timeseries.csv", error=MeasuredRunError, max_bytes=MAX_MEASURED_BYTES)
    header = text.split("\n", 1)[0].split(",")
    for name in TIMESERIES_COLUMNS:
        if sum(h.strip() == name for h in header) > 1:
            raise MeasuredRunError("column appears twice in the header", path=path, line=1, field=name)
    try:
        frame = pd.read_csv(io.StringIO(text), skip_blank_lines=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as exc:
        raise MeasuredRunError(f"unreadable CSV: {exc}".splitlines()[0], path=path) from None
    frame.columns = [str(c).strip() for c in frame.columns]
    for name in TIMESERIES_COLUMNS:
        if name not in frame.columns:
            raise MeasuredRunError("missing column", path=path, line=1, field=name)
    frame = frame[list(TIMESERIES_COLUMNS)]
    values = frame.apply(pd.to_numeric, errors="coerce")
    bad = ~np.isfinite(values.to_numpy(dtype=np.float64))
    if bad.any():
        row, colno = map(int, np.argwhere(bad)[0])
        raise MeasuredRunError(
            f"expected a finite number, got {frame.iat[row, colno]!r}",
            path=path,
            line=row + 2,
            field=TIMESERIES_COLUMNS[colno],
        )
    out: pd.DataFrame = values.astype(np.float64).reset_index(drop=True)
    _check_timeseries(out, path)
    return out


def _check_timeseries(values: pd.DataFrame, path: Path) -> None:
    """Non-negative samples, KV usage within [0, 100] %, strictly increasing ``t``."""
    arr = values.to_numpy()
    for colno, name in enumerate(TIMESERIES_COLUMNS):
        col = arr[:, colno]
        limit = 100.0 if name == "kv_cache_pct" else math.inf
        bad = np.flatnonzero((col < 0) | (col > limit))
        if bad.size:
            raise MeasuredRunError(
                f"expected a value in [0, {limit:g}], got {col[bad[0]]!r}",
                path=path, line=int(bad[0]) + 2, field=name)
    t = arr[:, 0]
    back = np.flatnonzero(np.diff(t) <= 0)
    if back.size:
        i = int(back[0]) + 1
        raise MeasuredRunError(f"t={t[i]!r} does not come after t={t[i - 1]!r} on the previous line",
                               path=path, line=i + 2, field="t")


def _kv_usage_measured(ts: pd.DataFrame | None) -> bool:
    if ts is None or ts.empty:
        return False
    busy = ts["running"] > 0
    return bool(busy.any() and (ts.loc[busy, "kv_cache_pct"] > 0).any())


def _section(meta: dict[str, Any], key: str, path: Path | None, prefix: str = "") -> dict[str, Any]:
    value = meta.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise MeasuredRunError(f"expected an object, got {value!r}"[:200], path=path, field=prefix + key)
    return value


def _setting(section: dict[str, Any], key: str, kind: str, path: Path | None, field: str) -> Any:
    """``section[key]`` checked as a positive int, a fraction in (0, 1] or a bool."""
    value = section[key]
    if kind == "bool":
        ok = isinstance(value, bool)
    elif kind == "fraction":
        ok = not isinstance(value, bool) and isinstance(value, int | float) and 0 < value <= 1
    else:
        ok = not isinstance(value, bool) and isinstance(value, int) and value >= 1
    if not ok:
        want = {"bool": "true or false", "fraction": "a number in (0, 1]"}.get(kind, "a positive integer")
        raise MeasuredRunError(f"expected {want}, got {value!r}"[:200], path=path, field=field)
    return value


def _engine_settings(meta: dict[str, Any], path: Path | None = None) -> dict[str, Any]:
    """Engine settings by vLLM argument name, from whichever part of meta.json has them.

    Raises:
        MeasuredRunError: a section is not an object or a setting has the wrong type.
    """
    out: dict[str, Any] = {}
    kwargs = _section(meta, "engine_kwargs", path)
    for key in ("tensor_parallel_size", "max_num_seqs", "max_num_batched_tokens", "max_model_len"):
        if kwargs.get(key) is not None:
            out[key] = _setting(kwargs, key, "int", path, f"engine_kwargs.{key}")
    kv = _section(meta, "kv_cache", path)
    kinds = {"gpu_memory_utilization": "fraction", "enable_prefix_caching": "bool"}
    for key in ("num_gpu_blocks", "block_size", "gpu_memory_utilization", "enable_prefix_caching"):
        if kv.get(key) is not None:
            out[key] = _setting(kv, key, kinds.get(key, "int"), path, f"kv_cache.{key}")
    resolved = _section(meta, "resolved_config", path)
    comp = _section(resolved, "compilation_config", path, "resolved_config.")
    sizes = comp.get("cudagraph_capture_sizes")
    if sizes is not None:
        field = "resolved_config.compilation_config.cudagraph_capture_sizes"
        if not isinstance(sizes, list):
            raise MeasuredRunError(f"expected a list of batch sizes, got {sizes!r}"[:200], path=path, field=field)
        out["cudagraph_capture_sizes"] = [
            _setting({str(i): v for i, v in enumerate(sizes)}, str(i), "int", path, f"{field}[{i}]")
            for i in range(len(sizes))
        ]
    sched = _section(resolved, "scheduler_config", path, "resolved_config.")
    if sched.get("async_scheduling") is not None:
        out["async_scheduling"] = _setting(
            sched, "async_scheduling", "bool", path, "resolved_config.scheduler_config.async_scheduling"
        )
    return out


# --------------------------------------------------------------------------- LLMServingSim summary

_SUMMARY_ROW = re.compile(
    r"^(?P<metric>TTFT|TPOT|ITL|Latency|E2E)\s+(?P<stat>Mean|Median|P\d+)\s+"
    r"(?P<meas>[-+0-9.eE]+)\s+(?P<sim>[-+0-9.eE]+)\s+(?P<err>[-+0-9.eE]+)%\s*$"
)
_SUMMARY_METRIC = {"TTFT": "ttft", "TPOT": "tpot", "ITL": "itl", "Latency": "e2e", "E2E": "e2e"}


def parse_llmservingsim_summary(text: str, *, path: str | Path | None = None) -> dict[str, ReferenceMetric]:
    """Parse LLMServingSim 2.0's ``llmservingsim_summary.txt`` into metric rows.

    Rows look like ``TTFT Mean  7097.2  6815.7  -4.0%`` (ms; ``Latency`` is E2E).
    Header, rule and blank lines are skipped.

    Returns:
        ``{"ttft_mean": ReferenceMetric, "e2e_p99": ..., ...}`` (stat ``Median`` -> ``p50``).

    Raises:
        MeasuredRunError: a line that starts like a metric row does not parse, or no row does.
    """
    out: dict[str, ReferenceMetric] = {}
    for lineno, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith(("Metric", "-", "=")):
            continue
        m = _SUMMARY_ROW.match(stripped)
        if m is None:
            first = stripped.split()[0]
            if first in _SUMMARY_METRIC:
                raise MeasuredRunError(f"unparsable metric row {stripped!r}", path=path, line=lineno)
            continue
        stat = m["stat"].lower()
        key = f"{_SUMMARY_METRIC[m['metric']]}_{'p50' if stat == 'median' else stat}"
        numbers = []
        for group in ("meas", "sim", "err"):
            try:
                value = float(m[group])
            except ValueError:
                value = math.nan
            if not math.isfinite(value):
                raise MeasuredRunError(f"not a finite number: {m[group]!r}",
                                       path=path, line=lineno, field=f"{key}.{group}")
            numbers.append(value)
        if key in out:
            raise MeasuredRunError("metric row appears twice", path=path, line=lineno, field=key)
        out[key] = ReferenceMetric(key=key, measured_ms=numbers[0], simulated_ms=numbers[1], error_pct=numbers[2])
    if not out:
        raise MeasuredRunError("no metric rows found", path=path)
    return out


# --------------------------------------------------------------------------- vLLM bench JSON


def load_bench_json(path: str | Path) -> MeasuredRun:
    """Load ``vllm bench serve --save-result --save-detailed`` output.

    Per request: ``ttfts[i]`` (s), ``itls[i]`` (list of s), ``input_lens[i]``,
    ``output_lens[i]``; optional ``errors[i]`` (non-empty = failed) and ``start_times[i]``
    (s, any clock: gives the run a timeline when present). E2E = TTFT + sum(ITLs), as vLLM
    bench computes latency; TPOT = (E2E - TTFT) / (output_lens - 1).

    Raises:
        MeasuredRunError: a required field is missing, lists differ in length, a value is
            not a number, or ``completed`` disagrees with the successful rows.
    """
    path = Path(path)
    obj = _read_json_object(path)
    for name in _BENCH_FIELDS:
        if name not in obj:
            raise MeasuredRunError(
                "missing field (was the run saved with --save-result --save-detailed?)", path=path, field=name
            )
        if not isinstance(obj[name], list):
            raise MeasuredRunError("expected a list", path=path, field=name)
    n = len(obj["ttfts"])
    optional = [k for k in ("errors", "start_times") if isinstance(obj.get(k), list)]
    for name in (*_BENCH_FIELDS[1:], *optional):
        if len(obj[name]) != n:
            raise MeasuredRunError(f"has {len(obj[name])} entries but ttfts has {n}", path=path, field=name)
    if n == 0:
        raise MeasuredRunError("no requests", path=path, field="ttfts")
    errors = [str(e or "") for e in obj["errors"]] if "errors" in optional else [""] * n
    ttft = _bench_numbers(obj["ttfts"], path, "ttfts")
    in_lens = _bench_numbers(obj["input_lens"], path, "input_lens", integer=True)
    out_lens = _bench_numbers(obj["output_lens"], path, "output_lens", integer=True)
    success = np.array([e == "" for e in errors]) & (out_lens > 0)
    itls: list[np.ndarray] = []
    for i, gaps in enumerate(obj["itls"]):
        if not isinstance(gaps, list):
            raise MeasuredRunError("expected a list of seconds", path=path, field=f"itls[{i}]")
        itls.append(_bench_numbers(gaps, path, f"itls[{i}]") if gaps else np.zeros(0))
    completed = obj.get("completed")
    if completed is not None and (isinstance(completed, bool) or not isinstance(completed, int)):
        raise MeasuredRunError(f"expected an integer, got {completed!r}"[:200], path=path, field="completed")
    if completed is not None and completed != int(success.sum()):
        raise MeasuredRunError(
            f"completed={completed} but {int(success.sum())} requests succeeded", path=path, field="completed"
        )
    e2e = ttft + np.array([g.sum() for g in itls])
    with np.errstate(divide="ignore", invalid="ignore"):
        tpot = np.where(out_lens > 1, (e2e - ttft) / (out_lens - 1), np.nan)
    if "start_times" in optional:
        start = _bench_numbers(obj["start_times"], path, "start_times")
        arrival = start - start.min()
    else:
        arrival = np.full(n, np.nan)
    nan = np.full(n, np.nan)
    frame = pd.DataFrame(
        {
            "request_id": [str(i) for i in range(n)],
            "input_tokens": in_lens.astype(np.int64),
            "output_tokens": out_lens.astype(np.int64),
            "arrival_s": arrival,
            "first_scheduled_s": nan,
            "first_token_s": arrival + ttft,
            "finish_s": arrival + e2e,
            "ttft_s": np.where(success, ttft, np.nan),
            "tpot_s": np.where(success, tpot, np.nan),
            "e2e_s": np.where(success, e2e, np.nan),
            "frontend_delay_s": nan,
            "success": success,
        }
    )
    meta = {k: v for k, v in obj.items() if k not in (*_BENCH_FIELDS, "generated_texts", "errors", "start_times")}
    engine = {}
    if meta.get("max_concurrency") is not None:
        engine["max_concurrency"] = _setting(meta, "max_concurrency", "int", path, "max_concurrency")
    duration = meta.get("duration")
    if duration is not None and (
        isinstance(duration, bool) or not isinstance(duration, int | float) or duration < 0
    ):
        raise MeasuredRunError(f"expected a non-negative number of seconds, got {duration!r}"[:200],
                               path=path, field="duration")
    return MeasuredRun(
        source=path,
        format=MeasuredFormat.BENCH_JSON,
        requests=frame,
        itls_s=itls,
        engine=engine,
        meta=meta,
        duration_s=float(duration) if isinstance(duration, int | float) else None,
        latency_origin=LatencyOrigin.CLIENT,
    )


def _bench_numbers(values: list[Any], path: Path, name: str, *, integer: bool = False) -> np.ndarray:
    for i, v in enumerate(values):
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v < 0:
            raise MeasuredRunError(f"expected a non-negative number, got {v!r}"[:200], path=path, field=f"{name}[{i}]")
        if integer and (v > _MAX_TOKENS or int(v) != v):
            raise MeasuredRunError(f"expected an integer in [0, {_MAX_TOKENS}], got {v!r}",
                                   path=path, field=f"{name}[{i}]")
    return np.asarray(values, dtype=np.float64)
