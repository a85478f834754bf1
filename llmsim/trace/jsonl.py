"""JSON-lines reading shared by the Mooncake and Qwen-Bailian loaders (Arrow, vectorized).

Fast path: Arrow parses the whole file and the loader's fields come back with the expected
types (:class:`FieldKind`). Anything else (invalid JSON, ``NaN``/``Infinity`` in a list,
numbers beyond int64, a field whose type changes between rows, strings where numbers are
expected, nesting deeper than :data:`llmsim.safeio.MAX_JSON_DEPTH`, two objects on one line)
takes the slow path: each line is parsed with :func:`llmsim.safeio.loads_json` and each field
checked, so the error (or the skipped row) names the file, line and field. A key repeated in
one object is refused too (Arrow rejects it; Python would silently keep the last value). Deeply nested lines
never reach Arrow (its parser recurses and crashes the process beyond ~10^4 levels).
"""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson

from llmsim.errors import TraceFormatError
from llmsim.safeio import INT64_MAX, loads_json
from llmsim.trace.inputs import (
    DuplicateKeyError,
    int_id_problem,
    read_trace_bytes,
    too_deep_lines,
    unique_keys,
)

logger = logging.getLogger(__name__)
_BLANKISH = re.compile(rb"\n[ \t\r\n]")  # a line that is empty or starts with whitespace


class FieldKind(StrEnum):
    """What a JSONL field must hold (``null`` or an absent field is always allowed: missing)."""

    NUMBER = "number"      #: a JSON number (not a bool or a string)
    INT_LIST = "int_list"  #: a flat list of integers within int64
    ID = "id"              #: an integer or a string
    STRING = "string"      #: a string


def read_jsonl_table(
    path: Path, *, kinds: Mapping[str, FieldKind], skip_bad_rows: bool
) -> tuple[pa.Table, np.ndarray, int]:
    """Read a JSONL file with Arrow, keeping each row's 1-based file line.

    Blank lines are ignored. Lines that are not valid JSON objects, or whose ``kinds`` fields
    have the wrong type, raise (or, with ``skip_bad_rows``, are skipped and counted).

    Args:
        path: the ``.jsonl`` file.
        kinds: the loader's fields and what each must hold; other fields are not checked.
        skip_bad_rows: skip bad lines instead of raising.

    Returns:
        ``(table, lines, skipped)``; ``lines`` has shape (num_rows,).

    Raises:
        TraceFormatError: not a regular UTF-8 file, or a bad line (file, line, field) unless
            skipped.
    """
    raw = read_trace_bytes(path)
    if not too_deep_lines(raw):
        try:
            table = pajson.read_json(io.BytesIO(raw))
        except (pa.ArrowException, ValueError):
            table = None
        if table is not None and _types_ok(table, kinds):
            lines = _nonblank_lines(raw, table.num_rows)
            if len(lines) == table.num_rows:
                return table, lines, 0
    return _read_slow(raw, path, kinds, skip_bad_rows=skip_bad_rows)


def _types_ok(table: pa.Table, kinds: Mapping[str, FieldKind]) -> bool:
    """True when every ``kinds`` field Arrow inferred has an acceptable type."""
    for name, kind in kinds.items():
        if name not in table.schema.names:
            continue
        col = table.column(name)
        t = col.type
        if pa.types.is_null(t):
            continue
        if kind is FieldKind.NUMBER:  # NaN / Infinity are not JSON: the slow path names them
            ok = pa.types.is_integer(t) or (pa.types.is_floating(t) and not pc.any(
                pc.invert(pc.is_finite(col))).as_py())
        elif kind is FieldKind.ID:
            ok = pa.types.is_integer(t) or pa.types.is_string(t)
        elif kind is FieldKind.STRING:
            ok = pa.types.is_string(t)
        else:
            ok = (pa.types.is_list(t) and (pa.types.is_integer(t.value_type) or pa.types.is_null(t.value_type))
                  and pc.list_flatten(col).null_count == 0)
        if not ok:
            return False
    return True


def _read_slow(raw: bytes, path: Path, kinds: Mapping[str, FieldKind], *,
               skip_bad_rows: bool) -> tuple[pa.Table, np.ndarray, int]:
    """Parse line by line with llmsim's JSON limits; build the table from checked values."""
    rows: list[dict[str, object]] = []
    lines: list[int] = []
    skipped = 0
    for lineno, text in enumerate(raw.split(b"\n"), start=1):
        if not text.strip():
            continue
        try:
            rows.append(_checked_row(text, kinds, path=path, lineno=lineno))
        except TraceFormatError:
            if not skip_bad_rows:
                raise
            skipped += 1
            continue
        lines.append(lineno)
    if skipped:
        logger.warning("%s: skipped %d malformed line(s)", path, skipped)
    columns: dict[str, pa.Array] = {}
    for name, kind in kinds.items():
        values = [r.get(name) for r in rows]
        if all(v is None for v in values) and not any(name in r for r in rows):
            continue
        columns[name] = _column(values, kind)
    table = pa.table(columns) if rows else pa.table({})
    return table, np.asarray(lines, dtype=np.int64), skipped


def _checked_row(text: bytes, kinds: Mapping[str, FieldKind], *, path: Path, lineno: int) -> dict[str, object]:
    doc = text.decode("utf-8-sig")
    obj = loads_json(doc, path=path, line=lineno, error=TraceFormatError, what="JSON line")
    if not isinstance(obj, dict):
        raise TraceFormatError(f"line is not a JSON object (got {type(obj).__name__})", path=path,
                               line=lineno)
    try:  # within the limits just checked; this pass only looks for repeated keys
        json.loads(doc, object_pairs_hook=unique_keys)
    except DuplicateKeyError as exc:
        raise TraceFormatError(str(exc), path=path, line=lineno, field=exc.key) from None
    row: dict[str, object] = {}
    for name, kind in kinds.items():
        if name not in obj:
            continue
        value = obj[name]
        problem = None if value is None else _kind_problem(value, kind)
        if problem:
            raise TraceFormatError(problem, path=path, line=lineno, field=name)
        row[name] = value
    return row


def _kind_problem(value: object, kind: FieldKind) -> str | None:
    if kind is FieldKind.INT_LIST:
        return int_id_problem(value, minimum=-INT64_MAX - 1)
    if kind is FieldKind.NUMBER:
        ok = type(value) in (int, float)
        want = "a number"
    elif kind is FieldKind.ID:
        ok = type(value) in (int, str)
        want = "an integer or a string"
    else:
        ok = type(value) is str
        want = "a string"
    return None if ok else f"must be {want}, got {value!r}"[:200]


def _column(values: list[object], kind: FieldKind) -> pa.Array:
    if kind is FieldKind.INT_LIST:
        return pa.array(values, type=pa.list_(pa.int64()))
    if kind is FieldKind.NUMBER:
        if any(type(v) is float for v in values):
            return pa.array([None if v is None else float(v) for v in values],  # type: ignore[arg-type]
                            type=pa.float64())
        return pa.array(values, type=pa.int64())
    return pa.array([None if v is None else str(v) for v in values], type=pa.string())


def _nonblank_lines(raw: bytes, num_rows: int) -> np.ndarray:
    """1-based line numbers of the non-blank lines (``num_rows`` of them when each holds one row)."""
    body = raw.rstrip(b"\n")
    if body.count(b"\n") + 1 == num_rows and not body[:1].isspace() and _BLANKISH.search(body) is None:
        return np.arange(1, num_rows + 1, dtype=np.int64)
    nums = [i for i, text in enumerate(raw.split(b"\n"), start=1) if text.strip()]
    return np.asarray(nums, dtype=np.int64)


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
