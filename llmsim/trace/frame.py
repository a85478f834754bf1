"""Columnar traces (:class:`TraceFrame`) and the row checks every loader shares.

A :class:`~llmsim.trace.record.Trace` holds one frozen :class:`Request` per row: fine for the
tens of thousands of requests of an hour-long trace, wasteful for the week-long Azure 2024
files (16.8M / 27.3M rows). Loaders therefore build a :class:`TraceFrame` first, a pandas
DataFrame with one column per :class:`Request` field, validate it with vectorized checks
(:func:`check_rows`), and only materialize ``Request`` objects on :meth:`TraceFrame.to_trace`.

Columns (names and units follow :class:`~llmsim.trace.record.Request`):

=================  ==========  =====================================================
column             dtype       meaning
=================  ==========  =====================================================
request_id         object str  unique id within the trace
arrival_ns         int64       arrival from the trace start, ns
input_tokens       int64       prompt tokens (> 0)
output_tokens      int64       tokens to generate (> 0)
input_token_ids    object      tuple[int, ...] or None            (optional column)
output_token_ids   object      tuple[int, ...] or None            (optional column)
block_hashes       object      tuple[int, ...] or None            (optional column)
session_id         object      str or None                        (optional column)
parent_id          object      str or None                        (optional column)
turn               int64       turn index in the session           (optional column)
think_time_ns      int64       delay after the parent finishes, ns (optional column)
model              object      str or None                        (optional column)
=================  ==========  =====================================================
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from itertools import repeat
from pathlib import Path

import numpy as np
import pandas as pd

from llmsim.errors import TraceFormatError
from llmsim.trace.inputs import MAX_TOKENS
from llmsim.trace.record import Request, Trace

logger = logging.getLogger(__name__)

NS_PER_S = 1_000_000_000
NS_PER_MS = 1_000_000

REQUIRED_COLUMNS = ("request_id", "arrival_ns", "input_tokens", "output_tokens")
OPTIONAL_COLUMNS = (
    "input_token_ids",
    "output_token_ids",
    "block_hashes",
    "session_id",
    "parent_id",
    "turn",
    "think_time_ns",
    "model",
)
_OPTIONAL_DEFAULTS = {
    "input_token_ids": None,
    "output_token_ids": None,
    "block_hashes": None,
    "session_id": None,
    "parent_id": None,
    "turn": 0,
    "think_time_ns": 0,
    "model": None,
}

#: Default limit on the span of a trace; a later arrival is an "absurd timestamp"
#: (typically milliseconds read as seconds or an epoch read as an offset). 400 days covers
#: every public trace (the longest, Azure 2024, is one week; BurstGPT is 121 days).
DEFAULT_MAX_SPAN_S = 400 * 86_400


@dataclass(frozen=True, slots=True, kw_only=True)
class TraceFrame:
    """A trace in columnar form (see the module docstring for the columns).

    Treat ``data`` as read-only: transforms return new frames.

    Attributes:
        data: one row per request, sorted by ``arrival_ns`` (ties keep file order).
        hash_block_size: prompt tokens per ``block_hashes`` entry (0 when absent).
        source: file or generator description.
        name: short name for reports.
        metadata: loader notes (e.g. ``skipped_rows``, ``dropped_failed``).
    """

    data: pd.DataFrame
    hash_block_size: int = 0
    source: str = ""
    name: str = ""
    metadata: dict[str, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.data)

    def with_data(self, data: pd.DataFrame, **notes: str) -> TraceFrame:
        """Return a copy with ``data`` replaced and ``notes`` added to the metadata."""
        meta = dict(self.metadata)
        meta.update(notes)
        return replace(self, data=data.reset_index(drop=True), metadata=meta)

    def to_trace(self) -> Trace:
        """Materialize one frozen :class:`Request` per row (about 1 us per row)."""
        df = self.data
        n = len(df)
        cols: dict[str, object] = {
            "request_id": df["request_id"].astype(str).tolist(),
            "arrival_ns": df["arrival_ns"].tolist(),
            "input_tokens": df["input_tokens"].tolist(),
            "output_tokens": df["output_tokens"].tolist(),
        }
        for name in OPTIONAL_COLUMNS:
            if name in df.columns:
                values = df[name].tolist()
                if name in ("session_id", "parent_id", "model"):
                    values = [None if _is_missing(v) else str(v) for v in values]
                cols[name] = values
            else:
                cols[name] = repeat(_OPTIONAL_DEFAULTS[name], n)
        hbs = self.hash_block_size if "block_hashes" in df.columns else 0
        requests = tuple(
            Request(
                request_id=rid,
                arrival_ns=arr,
                input_tokens=n_in,
                output_tokens=n_out,
                input_token_ids=in_ids,
                output_token_ids=out_ids,
                block_hashes=hashes,
                hash_block_size=hbs if hashes is not None else 0,
                session_id=sid,
                parent_id=pid,
                turn=turn,
                think_time_ns=think,
                model=model,
            )
            for rid, arr, n_in, n_out, in_ids, out_ids, hashes, sid, pid, turn, think, model in zip(
                *cols.values()
            , strict=True)
        )
        return Trace(
            requests=requests, source=self.source, name=self.name, metadata=dict(self.metadata)
        )

    @classmethod
    def from_trace(cls, trace: Trace) -> TraceFrame:
        """Columnar copy of a :class:`Trace` (inverse of :meth:`to_trace`)."""
        reqs = trace.requests
        data: dict[str, object] = {
            "request_id": [r.request_id for r in reqs],
            "arrival_ns": np.fromiter((r.arrival_ns for r in reqs), np.int64, len(reqs)),
            "input_tokens": np.fromiter((r.input_tokens for r in reqs), np.int64, len(reqs)),
            "output_tokens": np.fromiter((r.output_tokens for r in reqs), np.int64, len(reqs)),
        }
        for name in OPTIONAL_COLUMNS:
            values = [getattr(r, name) for r in reqs]
            if any(v != _OPTIONAL_DEFAULTS[name] for v in values):
                data[name] = values
        hbs = next((r.hash_block_size for r in reqs if r.hash_block_size), 0)
        return cls(
            data=pd.DataFrame(data),
            hash_block_size=hbs,
            source=trace.source,
            name=trace.name,
            metadata=dict(trace.metadata),
        )


def _is_missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))


@dataclass(frozen=True, slots=True, kw_only=True)
class RowCheck:
    """One vectorized row check: rows where ``bad`` is true violate it.

    Attributes:
        bad: boolean mask over the rows, shape (n,).
        field: the file's name of the offending field (for the error).
        reason: what is wrong, e.g. ``"must be > 0"``.
    """

    bad: np.ndarray
    field: str
    reason: str


def apply_row_checks(
    df: pd.DataFrame,
    checks: Sequence[RowCheck],
    *,
    path: str | Path,
    lines: np.ndarray,
    skip_bad_rows: bool,
) -> tuple[pd.DataFrame, np.ndarray, int]:
    """Raise on (or drop) rows failing any check.

    Args:
        df: the rows, shape (n, ...).
        checks: masks of bad rows with their field and reason.
        path: the trace file, for error messages.
        lines: 1-based file line of each row, shape (n,).
        skip_bad_rows: drop failing rows (logged and counted) instead of raising.

    Returns:
        ``(kept rows, their lines, number of skipped rows)``.

    Raises:
        TraceFormatError: a row fails a check and ``skip_bad_rows`` is false; names the first
            such row's line and field.
    """
    if not checks:
        return df, lines, 0
    any_bad = np.zeros(len(df), dtype=bool)
    for check in checks:
        any_bad |= check.bad
    if not any_bad.any():
        return df, lines, 0
    if not skip_bad_rows:
        first = int(np.argmax(any_bad))
        for check in checks:
            if check.bad[first]:
                raise TraceFormatError(
                    f"{check.reason} (use skip_bad_rows / --skip-bad-rows to skip such rows)",
                    path=path,
                    line=int(lines[first]),
                    field=check.field,
                )
    n_bad = int(any_bad.sum())
    logger.warning("%s: skipped %d bad row(s)", path, n_bad)
    keep = ~any_bad
    return df.loc[keep].reset_index(drop=True), lines[keep], n_bad


def _floats(column: pd.Series) -> np.ndarray:
    """A column as float64 (NaN where missing or not a number; huge ints become large floats)."""
    if column.dtype.kind in "iuf":
        return column.to_numpy(dtype=float)
    return pd.to_numeric(column, errors="coerce").to_numpy(dtype=float)


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(x)


def range_checks(values: np.ndarray, *, field: str, minimum: float, maximum: float,
                 integer: bool = False) -> list[RowCheck]:
    """Checks of an optional numeric column: finite, in ``[minimum, maximum]``, integral.

    Missing values (NaN) are allowed (the loader fills a default); +-inf and out-of-range
    values are bad.

    Args:
        values: the column as floats, shape (n,).
        field: the file's field name, for the error.
        minimum: smallest allowed value (physical lower bound, e.g. 0 for durations).
        maximum: largest allowed value.
        integer: require integral values.
    """
    present = ~np.isnan(values)
    checks = [RowCheck(bad=present & ((values < minimum) | (values > maximum)), field=field,
                       reason=f"must be finite and in [{_num(minimum)}, {_num(maximum)}]")]
    if integer:
        checks.append(RowCheck(bad=present & (values != np.floor(values)), field=field,
                               reason="must be an integer"))
    return checks


def standard_checks(
    df: pd.DataFrame,
    *,
    fields: dict[str, str],
    max_span_ns: int | None = None,
    allow_negative: bool = False,
) -> list[RowCheck]:
    """Checks every normalized frame must pass.

    Token counts > 0 and not missing, arrival >= 0 and within ``max_span_ns`` of the trace
    start, token-id lists (when present) as long as their counts.

    Args:
        df: normalized columns (``arrival_ns`` may be float with NaN for unparsable values).
        fields: normalized column -> the file's field name, for error messages.
        max_span_ns: largest allowed ``arrival_ns`` (default :data:`DEFAULT_MAX_SPAN_S`).
        allow_negative: accept arrivals before the trace start (rows streamed before the
            earliest one is known, sorted afterwards).
    """
    span = DEFAULT_MAX_SPAN_S * NS_PER_S if max_span_ns is None else max_span_ns
    checks: list[RowCheck] = []
    for col in ("input_tokens", "output_tokens"):
        values = _floats(df[col])
        checks.append(RowCheck(bad=np.isnan(values), field=fields[col], reason="missing or not a number"))
        checks.append(RowCheck(bad=values <= 0, field=fields[col], reason="token count must be > 0"))
        checks.append(RowCheck(bad=values > MAX_TOKENS, field=fields[col],
                               reason=f"token count must be <= {MAX_TOKENS} (and finite)"))
        checks.append(
            RowCheck(bad=values != np.floor(values), field=fields[col], reason="token count must be an integer")
        )
    arrival = _floats(df["arrival_ns"])
    checks.append(RowCheck(bad=np.isnan(arrival), field=fields["arrival_ns"], reason="missing or unparsable time"))
    if not allow_negative:
        checks.append(RowCheck(bad=arrival < 0, field=fields["arrival_ns"], reason="negative arrival time"))
    checks.append(
        RowCheck(
            bad=np.abs(arrival) > span,
            field=fields["arrival_ns"],
            reason=f"absurd timestamp: more than {span / NS_PER_S / 86_400:.0f} days after the "
            "trace start (wrong unit?), or not finite",
        )
    )
    for ids_col, count_col in (("input_token_ids", "input_tokens"), ("output_token_ids", "output_tokens")):
        if ids_col in df.columns:
            lengths = np.fromiter(
                (-1 if v is None else len(v) for v in df[ids_col]), dtype=np.int64, count=len(df)
            )
            counts = pd.to_numeric(df[count_col], errors="coerce").to_numpy(dtype=float)
            checks.append(
                RowCheck(
                    bad=(lengths >= 0) & (lengths != counts),
                    field=fields.get(ids_col, ids_col),
                    reason=f"token id list length differs from {fields[count_col]}",
                )
            )
    return checks


def finish_frame(
    df: pd.DataFrame,
    *,
    path: str | Path,
    lines: np.ndarray,
    fields: dict[str, str],
    skip_bad_rows: bool = False,
    sort: bool = False,
    extra_checks: Sequence[RowCheck] = (),
    max_span_ns: int | None = None,
    hash_block_size: int = 0,
    name: str = "",
    metadata: dict[str, str] | None = None,
) -> TraceFrame:
    """Validate normalized columns and return the frame (shared tail of every loader).

    Args:
        df: normalized columns (see the module docstring); ``arrival_ns`` already relative to
            the trace start.
        path: the trace file (errors and ``source``).
        lines: 1-based line of each row in the file, shape (n,).
        fields: normalized column -> file field name, for error messages.
        skip_bad_rows: drop malformed rows (counted in ``metadata["skipped_rows"]``).
        sort: stable-sort by arrival instead of rejecting an unsorted file.
        extra_checks: format-specific row checks.
        max_span_ns: largest allowed arrival (absurd-timestamp guard).
        hash_block_size: tokens per ``block_hashes`` entry.
        name: short trace name (defaults to the file stem).
        metadata: loader notes to keep.

    Raises:
        TraceFormatError: empty trace, a bad row (unless skipped), or unsorted arrivals
            (unless ``sort``).
    """
    path = Path(path)
    meta = dict(metadata or {})
    if len(df) == 0:
        raise TraceFormatError("trace has no requests", path=path)
    checks = [*standard_checks(df, fields=fields, max_span_ns=max_span_ns), *extra_checks]
    df, lines, skipped = apply_row_checks(df, checks, path=path, lines=lines, skip_bad_rows=skip_bad_rows)
    if skipped:
        meta["skipped_rows"] = str(skipped)
    if len(df) == 0:
        raise TraceFormatError("trace has no valid requests (all rows skipped)", path=path)
    df = df.astype({"arrival_ns": np.int64, "input_tokens": np.int64, "output_tokens": np.int64})
    arrival = df["arrival_ns"].to_numpy()
    backwards = np.flatnonzero(arrival[1:] < arrival[:-1])
    if backwards.size:
        if not sort:
            row = int(backwards[0]) + 1
            raise TraceFormatError(
                f"arrivals are not sorted ({arrival[row]} ns after {arrival[row - 1]} ns on the "
                "previous row); pass sort=True (--sort) to reorder",
                path=path,
                line=int(lines[row]),
                field=fields["arrival_ns"],
            )
        order = np.argsort(arrival, kind="stable")
        df = df.iloc[order].reset_index(drop=True)
        meta["sorted"] = "true"
    return TraceFrame(
        data=df.reset_index(drop=True),
        hash_block_size=hash_block_size,
        source=str(path),
        name=name or path.stem,
        metadata=meta,
    )
