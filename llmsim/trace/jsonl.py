"""JSON-lines reading shared by the Mooncake and Qwen-Bailian loaders (Arrow, vectorized)."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.json as pajson

from llmsim.errors import TraceFormatError

logger = logging.getLogger(__name__)


def read_jsonl_table(path: Path, *, skip_bad_rows: bool) -> tuple[pa.Table, np.ndarray, int]:
    """Read a JSONL file with Arrow, keeping each row's 1-based file line.

    Blank lines are ignored. Lines that are not valid JSON objects raise (or, with
    ``skip_bad_rows``, are skipped and counted); the slow per-line scan that finds them only
    runs when Arrow rejects the file.

    Returns:
        ``(table, lines, skipped)``; ``lines`` has shape (num_rows,).

    Raises:
        TraceFormatError: invalid JSON on a line (file, line), unless skipped.
    """
    raw = path.read_bytes()
    try:
        table = pajson.read_json(io.BytesIO(raw))
        return table, _nonblank_lines(raw, table.num_rows), 0
    except pa.ArrowInvalid:
        pass
    good: list[bytes] = []
    lines: list[int] = []
    skipped = 0
    for lineno, text in enumerate(raw.split(b"\n"), start=1):
        if not text.strip():
            continue
        try:
            ok = isinstance(json.loads(text), dict)
            reason = "line is not a JSON object"
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            ok, reason = False, f"invalid JSON: {exc}"
        if not ok:
            if not skip_bad_rows:
                raise TraceFormatError(reason, path=path, line=lineno)
            skipped += 1
            continue
        good.append(text)
        lines.append(lineno)
    if not good:
        return pa.table({}), np.zeros(0, dtype=np.int64), skipped
    try:
        table = pajson.read_json(io.BytesIO(b"\n".join(good)))
    except pa.ArrowInvalid as exc:  # e.g. a field whose type changes between rows
        raise TraceFormatError(f"inconsistent JSON rows: {exc}", path=path) from None
    return table, np.asarray(lines, dtype=np.int64), skipped


def _nonblank_lines(raw: bytes, num_rows: int) -> np.ndarray:
    """1-based line numbers of the non-blank lines (fast path when there are none blank)."""
    body = raw.rstrip(b"\n")
    if raw[:1] not in (b"\n", b"\r") and b"\n\n" not in body and body.count(b"\n") + 1 == num_rows:
        return np.arange(1, num_rows + 1, dtype=np.int64)
    nums = [i for i, text in enumerate(raw.split(b"\n"), start=1) if text.strip()]
    return np.asarray(nums[:num_rows], dtype=np.int64)


def column_or_null(table: pa.Table, name: str) -> pa.ChunkedArray | None:
    """The column, or ``None`` when the file has no such field."""
    return table.column(name) if name in table.schema.names else None


def numbers(table: pa.Table, name: str) -> pd.Series:
    """A numeric column as float/int (NaN where missing or not a number)."""
    col = column_or_null(table, name)
    if col is None:
        return pd.Series(np.full(table.num_rows, np.nan))
    if pa.types.is_integer(col.type) and col.null_count == 0:
        return pd.Series(col.to_numpy())
    return pd.to_numeric(pd.Series(col.to_pandas()), errors="coerce")


def id_tuples(table: pa.Table, name: str) -> list[tuple[int, ...] | None]:
    """A list-of-int column as tuples (``None`` where missing)."""
    col = column_or_null(table, name)
    if col is None:
        return [None] * table.num_rows
    return [None if v is None else tuple(v) for v in col.to_pylist()]
