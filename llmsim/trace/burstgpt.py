"""Loader for BurstGPT traces (CSV), with the optional session columns.

Columns: ``Timestamp`` (s from the trace start), ``Model`` (``ChatGPT`` / ``GPT-4``),
``Request tokens``, ``Response tokens``, ``Total tokens``, ``Log Type``
(``Conversation log`` / ``API log``). Failed requests have 0 response tokens: they are
dropped by default and counted in ``metadata["dropped_failed"]`` (``drop_failed=False``
treats them as bad rows instead).

Session variant: when the file also has ``Session ID`` (and optionally ``Elapsed time``, the
request's service time in s), requests of one session are chained in arrival order:
``turn`` = index in the session, ``parent_id`` = the previous request of the session and
``think_time_ns = max(0, arrival - (parent arrival + parent elapsed))``, the user's gap
between receiving the answer and sending the next turn (0 without ``Elapsed time``).

Source: Wang et al., "BurstGPT: A Real-world Workload Dataset to Optimize LLM Serving
Systems", 2024; https://github.com/HPMLL/BurstGPT.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from llmsim.errors import TraceFormatError
from llmsim.trace.frame import (
    DEFAULT_MAX_SPAN_S,
    NS_PER_S,
    RowCheck,
    TraceFrame,
    finish_frame,
    range_checks,
)
from llmsim.trace.tabular import read_csv_table

FIELDS = {"arrival_ns": "Timestamp", "input_tokens": "Request tokens", "output_tokens": "Response tokens"}
SESSION_COLUMN = "Session ID"
ELAPSED_COLUMN = "Elapsed time"


def load_burstgpt_frame(path: str | Path, *, skip_bad_rows: bool = False, sort: bool = False,
                        drop_failed: bool = True) -> TraceFrame:
    """Load a BurstGPT trace in columnar form.

    Args:
        path: the CSV file.
        skip_bad_rows: skip malformed rows (counted in ``metadata["skipped_rows"]``).
        sort: stable-sort by arrival instead of rejecting an unsorted file.
        drop_failed: drop failed requests (0 response tokens) instead of rejecting them.

    Raises:
        TraceFormatError: not a regular UTF-8 file, missing columns (line 1), empty file, a bad
            row (file, line, field; token counts and ``Elapsed time`` must be finite and in
            range), unsorted arrivals.
    """
    path = Path(path)
    types = {"Request tokens": pa.float64(), "Response tokens": pa.float64(), "Model": pa.string(),
             SESSION_COLUMN: pa.string()}
    table, lines, skipped, _ = read_csv_table(path, types, skip_bad_rows=skip_bad_rows)
    if table.num_rows == 0:
        raise TraceFormatError("trace has no requests", path=path)
    missing = [c for c in FIELDS.values() if c not in table.schema.names]
    if missing:
        raise TraceFormatError(f"missing column(s) {missing}", path=path, line=1, field=missing[0])
    df = pd.DataFrame(
        {
            "request_id": lines - 2,
            "arrival_ns": np.round(_num(table, "Timestamp") * NS_PER_S),
            "input_tokens": _num(table, "Request tokens"),
            "output_tokens": _num(table, "Response tokens"),
        }
    )
    if "Model" in table.schema.names:
        df["model"] = table.column("Model").to_pandas()
    if SESSION_COLUMN in table.schema.names:
        df["session_id"] = table.column(SESSION_COLUMN).to_pandas()
        has_elapsed = ELAPSED_COLUMN in table.schema.names
        df["_elapsed_s"] = _num(table, ELAPSED_COLUMN).fillna(0.0) if has_elapsed else 0.0
    meta = {"format": "burstgpt"}
    checks = []
    if "_elapsed_s" in df.columns:
        checks = range_checks(df["_elapsed_s"].to_numpy(dtype=float), field=ELAPSED_COLUMN, minimum=0,
                              maximum=DEFAULT_MAX_SPAN_S)
    if drop_failed:
        failed = (df["output_tokens"] == 0).to_numpy()
        df, lines = df.loc[~failed].reset_index(drop=True), lines[~failed]
        checks = [RowCheck(bad=c.bad[~failed], field=c.field, reason=c.reason) for c in checks]
        meta["dropped_failed"] = str(int(failed.sum()))
    frame = finish_frame(df, path=path, lines=lines, fields=FIELDS, skip_bad_rows=skip_bad_rows, sort=sort,
                         extra_checks=checks, metadata=meta)
    if skipped:
        frame = frame.with_data(frame.data, skipped_rows=str(skipped + int(frame.metadata.get("skipped_rows", "0"))))
    if "session_id" in frame.data.columns:
        frame = frame.with_data(chain_sessions(frame.data))
    return frame


def chain_sessions(df: pd.DataFrame) -> pd.DataFrame:
    """Link each request to the previous one of its session (vectorized groupby).

    Args:
        df: rows in arrival order with ``session_id`` and ``_elapsed_s`` (service time, s).

    Returns:
        A copy with ``turn``, ``parent_id`` and ``think_time_ns`` set and ``_elapsed_s``
        removed; rows without a session stay unchained.
    """
    out = df.copy()
    has = out["session_id"].notna().to_numpy()
    g = out.loc[has].groupby("session_id", sort=False)
    turn = np.zeros(len(out), dtype=np.int64)
    turn[has] = g.cumcount().to_numpy()
    prev_id = g["request_id"].shift(1)
    prev_arrival = g["arrival_ns"].shift(1)
    prev_elapsed = g["_elapsed_s"].shift(1)
    parent = np.full(len(out), None, dtype=object)
    sub_parent = prev_id.to_numpy(dtype=object)
    sub_parent = np.array([None if pd.isna(v) else str(int(v)) if isinstance(v, float) else str(v)
                           for v in sub_parent], dtype=object)
    parent[has] = sub_parent
    gap_ns = (out.loc[has, "arrival_ns"].to_numpy(dtype=float) - prev_arrival.to_numpy(dtype=float)
              - prev_elapsed.to_numpy(dtype=float) * NS_PER_S)
    think = np.zeros(len(out), dtype=np.int64)
    think[has] = np.nan_to_num(np.maximum(np.round(gap_ns), 0.0)).astype(np.int64)
    out["turn"] = turn
    out["parent_id"] = parent
    out["think_time_ns"] = think
    return out.drop(columns=["_elapsed_s"])


def _num(table: pa.Table, name: str) -> pd.Series:
    col = table.column(name)
    if pa.types.is_integer(col.type) and col.null_count == 0:
        return pd.Series(col.to_numpy())
    return pd.to_numeric(pd.Series(col.to_pandas()), errors="coerce")
