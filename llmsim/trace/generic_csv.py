"""Generic CSV traces with a column mapping, and the Vidur request-trace preset.

The mapping names, for each normalized field, the CSV column that holds it::

    {"arrival": "ts", "input_tokens": "prompt", "output_tokens": "completion",
     "session_id": "conv", "model": "model"}

Required: ``arrival``, ``input_tokens``, ``output_tokens``. Optional: ``request_id``,
``session_id``, ``parent_id``, ``turn``, ``think_time`` (same unit as ``arrival``), ``model``.
When ``session_id`` is mapped but ``parent_id`` is not, each request's parent is the previous
request of its session (turns chained in arrival order), so the serving loop releases a turn
at max(arrival, parent finish + think time). ``time_unit`` is one of :class:`TimeUnit`;
``datetime`` parses ISO-8601 wall-clock times and rebases them to the first request. Numeric
times are taken as offsets from the trace start unless ``rebase=True``. Request ids default
to the 0-based data row index.

Vidur (``format: vidur``): ``arrived_at`` (s), ``num_prefill_tokens``, ``num_decode_tokens``
(Agrawal et al., "Vidur", MLSys'24, https://github.com/microsoft/vidur).
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from llmsim.errors import ConfigError, TraceFormatError
from llmsim.trace.frame import (
    DEFAULT_MAX_SPAN_S,
    NS_PER_S,
    RowCheck,
    TraceFrame,
    finish_frame,
    range_checks,
)
from llmsim.trace.inputs import MAX_TOKENS
from llmsim.trace.tabular import read_csv_table


class TimeUnit(StrEnum):
    """Unit of a CSV time column."""

    S = "s"
    MS = "ms"
    US = "us"
    NS = "ns"
    DATETIME = "datetime"


_NS_PER_UNIT = {TimeUnit.S: 1e9, TimeUnit.MS: 1e6, TimeUnit.US: 1e3, TimeUnit.NS: 1.0}
REQUIRED_KEYS = ("arrival", "input_tokens", "output_tokens")
OPTIONAL_KEYS = ("request_id", "session_id", "parent_id", "turn", "think_time", "model")
VIDUR_COLUMNS = {"arrival": "arrived_at", "input_tokens": "num_prefill_tokens",
                 "output_tokens": "num_decode_tokens"}
DEFAULT_COLUMNS = {"arrival": "arrival_s", "input_tokens": "input_tokens", "output_tokens": "output_tokens"}


def load_csv_frame(
    path: str | Path,
    *,
    columns: dict[str, str] | None = None,
    time_unit: str = "s",
    rebase: bool | None = None,
    skip_bad_rows: bool = False,
    sort: bool = False,
    fmt: str = "csv",
) -> TraceFrame:
    """Load a CSV trace through a column mapping.

    Args:
        path: the CSV file (header on line 1).
        columns: normalized key -> CSV column (default :data:`DEFAULT_COLUMNS`).
        time_unit: unit of the arrival and think-time columns (:class:`TimeUnit`).
        rebase: shift arrivals so the first is 0 (default: only for ``datetime``).
        skip_bad_rows: skip malformed rows (counted in ``metadata["skipped_rows"]``).
        sort: stable-sort by arrival instead of rejecting an unsorted file.
        fmt: format name recorded in the metadata.

    Raises:
        ConfigError: a mapping that is not strings to strings, unknown mapping key or time
            unit.
        TraceFormatError: not a regular UTF-8 file, a mapped column missing from the header
            (line 1), empty file, bad row (file, line, field: counts, times, ``turn`` and
            think time finite and in range; request ids present and unique), unsorted
            arrivals.
    """
    path = Path(path)
    if columns is not None and not (isinstance(columns, dict)
                                    and all(isinstance(k, str) and isinstance(v, str) for k, v in columns.items())):
        raise ConfigError(f"column mapping must map names to column names (strings), got {columns!r}"[:300],
                          field="columns")
    if not isinstance(time_unit, str):
        raise ConfigError(f"time unit must be a string, got {time_unit!r}", field="time_unit")
    mapping = dict(DEFAULT_COLUMNS if columns is None else columns)
    unknown = set(mapping) - set(REQUIRED_KEYS) - set(OPTIONAL_KEYS)
    if unknown:
        raise ConfigError(f"unknown column mapping key(s) {sorted(unknown)}", field="columns")
    for key in REQUIRED_KEYS:
        if key not in mapping:
            raise ConfigError(f"column mapping needs '{key}'", field="columns")
    try:
        unit = TimeUnit(time_unit)
    except ValueError:
        raise ConfigError(f"unknown time unit {time_unit!r}", field="time_unit") from None
    types = {mapping["input_tokens"]: pa.int64(), mapping["output_tokens"]: pa.int64()}
    for key in ("request_id", "session_id", "parent_id", "model"):
        if key in mapping:
            types[mapping[key]] = pa.string()
    if unit is TimeUnit.DATETIME:
        types[mapping["arrival"]] = pa.string()
    table, lines, skipped, _ = read_csv_table(path, types, skip_bad_rows=skip_bad_rows)
    if table.num_rows == 0:
        raise TraceFormatError("trace has no requests", path=path)
    missing = [c for c in mapping.values() if c not in table.schema.names]
    if missing:
        raise TraceFormatError(f"missing column(s) {missing} (have {table.schema.names})", path=path, line=1,
                               field=missing[0])
    arrival = _times_ns(table.column(mapping["arrival"]), unit)
    arrival[~np.isfinite(arrival)] = np.nan  # reported as unparsable by the row checks
    if (rebase or (rebase is None and unit is TimeUnit.DATETIME)) and not np.isnan(arrival).all():
        arrival = arrival - np.nanmin(arrival)
    df = pd.DataFrame(
        {
            "request_id": _strings(table, mapping["request_id"]) if "request_id" in mapping else lines - 2,
            "arrival_ns": np.round(arrival),
            "input_tokens": _numbers(table.column(mapping["input_tokens"])),
            "output_tokens": _numbers(table.column(mapping["output_tokens"])),
        }
    )
    for key in ("session_id", "parent_id", "model"):
        if key in mapping:
            df[key] = _strings(table, mapping[key])
    checks: list[RowCheck] = []
    if "request_id" in mapping:
        ids = df["request_id"]
        checks.append(RowCheck(bad=ids.isna().to_numpy(), field=mapping["request_id"], reason="missing request id"))
        checks.append(RowCheck(bad=(ids.duplicated(keep="first") & ids.notna()).to_numpy(),
                               field=mapping["request_id"], reason="duplicate request id"))
    if "turn" in mapping:
        turn = _numbers(table.column(mapping["turn"])).to_numpy(dtype=float)
        checks += range_checks(turn, field=mapping["turn"], minimum=0, maximum=MAX_TOKENS, integer=True)
        df["turn"] = _safe_int64(turn)
    if "think_time" in mapping:
        think = np.round(_times_ns(table.column(mapping["think_time"]),
                                   unit if unit is not TimeUnit.DATETIME else TimeUnit.S))
        checks += range_checks(think, field=mapping["think_time"], minimum=0,
                               maximum=DEFAULT_MAX_SPAN_S * NS_PER_S)
        df["think_time_ns"] = _safe_int64(think)
    fields = {"arrival_ns": mapping["arrival"], "input_tokens": mapping["input_tokens"],
              "output_tokens": mapping["output_tokens"]}
    frame = finish_frame(df, path=path, lines=lines, fields=fields, skip_bad_rows=skip_bad_rows, sort=sort,
                         extra_checks=checks, metadata={"format": fmt})
    if skipped:
        frame = frame.with_data(frame.data, skipped_rows=str(skipped + int(frame.metadata.get("skipped_rows", "0"))))
    if "session_id" in mapping and "parent_id" not in mapping:
        frame = frame.with_data(link_session_turns(frame.data, set_turn="turn" not in mapping))
    return frame


def link_session_turns(df: pd.DataFrame, *, set_turn: bool = True) -> pd.DataFrame:
    """Chain each request to the previous request of its session (arrival order).

    ``parent_id`` = previous request of the same ``session_id`` (None for the first turn and
    for rows without a session); ``turn`` = index in the session when ``set_turn``.
    ``think_time_ns`` is left as given (0 when absent).
    """
    out = df.copy()
    has = out["session_id"].notna().to_numpy()
    g = out.loc[has].groupby("session_id", sort=False)
    parent = np.full(len(out), None, dtype=object)
    prev = g["request_id"].shift(1).to_numpy(dtype=object)
    parent[has] = [None if pd.isna(v) else str(int(v)) if isinstance(v, float) else str(v) for v in prev]
    out["parent_id"] = pd.Series(parent, dtype=object)
    if set_turn:
        turn = np.zeros(len(out), dtype=np.int64)
        turn[has] = g.cumcount().to_numpy()
        out["turn"] = turn
    if "think_time_ns" not in out.columns:
        out["think_time_ns"] = 0
    return out


def load_vidur_frame(path: str | Path, *, skip_bad_rows: bool = False, sort: bool = False) -> TraceFrame:
    """Load a Vidur request trace (``arrived_at`` s, ``num_prefill_tokens``, ``num_decode_tokens``)."""
    return load_csv_frame(path, columns=VIDUR_COLUMNS, time_unit="s", skip_bad_rows=skip_bad_rows, sort=sort,
                          fmt="vidur")


def _times_ns(col: pa.ChunkedArray, unit: TimeUnit) -> np.ndarray:
    """Times as float ns (NaN where unparsable)."""
    if unit is TimeUnit.DATETIME:
        parsed = pd.to_datetime(pd.Series(col.to_pandas(), dtype=object), format="ISO8601", utc=True,
                                errors="coerce")
        index = pd.DatetimeIndex(parsed)
        out = index.as_unit("us").asi8.astype(np.float64) * 1000.0
        out[index.isna()] = np.nan
        return out
    with np.errstate(over="ignore", invalid="ignore"):  # overflow -> inf, refused by the row checks
        return _numbers(col).to_numpy(dtype=float) * _NS_PER_UNIT[unit]


def _safe_int64(values: np.ndarray) -> np.ndarray:
    """Floats as int64, 0 where missing or beyond int64 (such rows fail a range check)."""
    ok = np.isfinite(values) & (np.abs(values) < 2.0**62)
    return np.where(ok, values, 0).astype(np.int64)


def _numbers(col: pa.ChunkedArray) -> pd.Series:
    if pa.types.is_integer(col.type) and col.null_count == 0:
        return pd.Series(col.to_numpy())
    return pd.to_numeric(pd.Series(col.to_pandas()), errors="coerce")


def _strings(table: pa.Table, name: str) -> list[str | None]:
    values = table.column(name).to_pylist()
    return [None if v is None or (isinstance(v, str) and not v.strip()) else str(v).strip() for v in values]
