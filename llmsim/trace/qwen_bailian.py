"""Loader for the Alibaba Qwen-Bailian usage traces (JSONL, or CSV with the same columns).

Fields: ``chat_id``, ``parent_chat_id`` (-1 / empty for a first turn), ``timestamp`` (s),
``input_length``, ``output_length``, ``type`` (text, image, search, file...), ``turn``,
``hash_ids`` (one id per 16-token prompt block).

Mapping: ``request_id = str(chat_id)``, ``parent_id = str(parent_chat_id)`` (``None`` for
-1/empty), ``session_id`` = the chat id at the root of the parent chain, ``turn`` as given,
``block_hashes = tuple(hash_ids)`` with ``hash_block_size = 16``, ``arrival_ns`` = timestamp
rebased so the first request arrives at 0. The trace records no think time, so
``think_time_ns = 0``: a turn is released at max(its recorded arrival, parent finish). The
``type`` column is kept in the frame (not in :class:`Request`). A parent that is not in the
file (e.g. before the trace window) leaves the turn without parent.

Source: Alibaba Cloud Model Studio (Bailian) Qwen usage traces,
https://github.com/alibaba-edu/qwen-bailian-usagetraces-anon.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from llmsim.errors import TraceFormatError
from llmsim.safeio import INT64_MAX, loads_json
from llmsim.trace.frame import (
    NS_PER_S,
    RowCheck,
    TraceFrame,
    finish_frame,
    range_checks,
)
from llmsim.trace.inputs import MAX_TOKENS, int_id_problem
from llmsim.trace.jsonl import (
    FieldKind,
    column_or_null,
    id_tuples,
    numbers,
    read_jsonl_table,
)
from llmsim.trace.mooncake import hash_count_check
from llmsim.trace.tabular import read_csv_table

HASH_BLOCK_SIZE = 16
FIELDS = {"arrival_ns": "timestamp", "input_tokens": "input_length", "output_tokens": "output_length",
          "request_id": "chat_id", "parent_id": "parent_chat_id", "block_hashes": "hash_ids"}
KINDS = {"chat_id": FieldKind.ID, "parent_chat_id": FieldKind.ID, "timestamp": FieldKind.NUMBER,
         "input_length": FieldKind.NUMBER, "output_length": FieldKind.NUMBER, "type": FieldKind.STRING,
         "turn": FieldKind.NUMBER, "hash_ids": FieldKind.INT_LIST}


def load_qwen_bailian_frame(path: str | Path, *, skip_bad_rows: bool = False, sort: bool = False) -> TraceFrame:
    """Load a Qwen-Bailian trace in columnar form.

    Args:
        path: ``.jsonl`` (or ``.csv`` with ``hash_ids`` as a JSON list string).
        skip_bad_rows: skip malformed rows (counted in ``metadata["skipped_rows"]``).
        sort: stable-sort by arrival instead of rejecting an unsorted file.

    Raises:
        TraceFormatError: empty file, bad field (file, line, field), duplicate ``chat_id``,
            more hash ids than 16-token blocks, or unsorted arrivals.
    """
    path = Path(path)
    if path.suffix.lower() == ".csv":
        table, lines, skipped, _ = read_csv_table(path, {"chat_id": pa.string(), "parent_chat_id": pa.string(),
                                                        "hash_ids": pa.string()}, skip_bad_rows=skip_bad_rows)
        hashes, hash_errors = _csv_hash_lists(table, path)
    else:
        table, lines, skipped = read_jsonl_table(path, kinds=KINDS, skip_bad_rows=skip_bad_rows)
        hashes = id_tuples(table, "hash_ids")
        hash_errors = np.zeros(table.num_rows, dtype=bool)
    if table.num_rows == 0:
        raise TraceFormatError("trace has no requests", path=path)
    ts = numbers(table, "timestamp").to_numpy(dtype=float)
    finite = np.isfinite(ts)
    t0 = float(ts[finite].min()) if finite.any() else 0.0
    ts = np.where(finite, ts, np.nan)  # +-inf is bad, reported as a missing time
    chat = _id_strings(column_or_null(table, "chat_id"), table.num_rows)
    parent = _id_strings(column_or_null(table, "parent_chat_id"), table.num_rows)
    parent = [None if p in (None, "-1", "") else p for p in parent]
    turn_f = numbers(table, "turn").to_numpy(dtype=float)
    turn_checks = range_checks(turn_f, field="turn", minimum=0, maximum=MAX_TOKENS, integer=True)
    turn = np.where(np.isfinite(turn_f) & (np.abs(turn_f) <= MAX_TOKENS), turn_f, 0).astype(np.int64)
    df = pd.DataFrame(
        {
            "request_id": chat,
            "arrival_ns": np.round((ts - t0) * NS_PER_S),
            "input_tokens": numbers(table, "input_length"),
            "output_tokens": numbers(table, "output_length"),
            "block_hashes": hashes,
            "parent_id": parent,
            "turn": turn,
            "think_time_ns": 0,
        }
    )
    if "type" in table.schema.names:
        df["type"] = table.column("type").to_pandas()
    missing_id = np.array([c is None for c in chat])
    dup = pd.Series(chat).duplicated(keep="first").to_numpy() & ~missing_id
    checks = [
        RowCheck(bad=hash_errors, field="hash_ids",
                 reason="not a JSON list of integers (within int64, at most 64 levels deep)"),
        hash_count_check(df, HASH_BLOCK_SIZE, exact=False),
        RowCheck(bad=missing_id, field="chat_id", reason="missing chat id"),
        RowCheck(bad=dup, field="chat_id", reason="duplicate chat id"),
        *turn_checks,
    ]
    frame = finish_frame(df, path=path, lines=lines, fields=FIELDS, skip_bad_rows=skip_bad_rows, sort=sort,
                         extra_checks=checks, hash_block_size=HASH_BLOCK_SIZE,
                         metadata={"format": "qwen_bailian"})
    data = frame.data.copy()
    ids = data["request_id"].tolist()
    known = set(ids)
    parents = [None if pd.isna(p) else str(p) for p in data["parent_id"]]
    dangling = [p is not None and p not in known for p in parents]
    parents = [None if d else p for p, d in zip(parents, dangling, strict=True)]
    data["parent_id"] = pd.Series(parents, dtype=object)
    data["session_id"] = pd.Series(session_roots(ids, parents), dtype=object)
    notes = {"skipped_rows": str(skipped + int(frame.metadata.get("skipped_rows", "0")))} if skipped else {}
    if any(dangling):
        notes["orphaned_turns"] = str(sum(dangling))
    return frame.with_data(data, **notes)


def session_roots(ids: list[str], parents: list[str | None]) -> list[str]:
    """Session of each request = the id at the root of its parent chain.

    Requests are in arrival order, so a parent precedes its child and one pass suffices;
    a parent appearing later (clock skew) is resolved by walking the chain.
    """
    parent_of = dict(zip(ids, parents, strict=True))
    root: dict[str, str] = {}
    out: list[str] = []
    for rid, par in zip(ids, parents, strict=True):
        if par is None:
            r = rid
        elif par in root:
            r = root[par]
        else:
            r, seen = par, {rid}
            while parent_of.get(r) is not None and r not in seen:
                seen.add(r)
                r = parent_of[r]  # type: ignore[assignment]
        root[rid] = r
        out.append(r)
    return out


def _id_strings(col: pa.ChunkedArray | None, n: int) -> list[str | None]:
    """Ids as strings; integers print without a decimal point."""
    if col is None:
        return [None] * n
    values = col.to_pylist()
    out: list[str | None] = []
    for v in values:
        if v is None:
            out.append(None)
        elif isinstance(v, float) and v.is_integer():
            out.append(str(int(v)))
        else:
            out.append(str(v).strip())
    return out


def _csv_hash_lists(table: pa.Table, path: Path) -> tuple[list[tuple[int, ...] | None], np.ndarray]:
    """``hash_ids`` cells (JSON list strings) as tuples, and a mask of the malformed cells.

    Cells are parsed with llmsim's JSON limits (:func:`llmsim.safeio.loads_json`); a cell that
    is not a flat list of int64 integers is marked bad (``None`` in the list).
    """
    n = table.num_rows
    if "hash_ids" not in table.schema.names:
        return [None] * n, np.zeros(n, dtype=bool)
    out: list[tuple[int, ...] | None] = []
    bad = np.zeros(n, dtype=bool)
    for i, text in enumerate(table.column("hash_ids").to_pylist()):
        if text is None or not text.strip():
            out.append(None)
            continue
        try:
            value = loads_json(text, path=path, error=TraceFormatError, what="hash_ids")
        except TraceFormatError:
            value = None
        if value is None or int_id_problem(value, minimum=-INT64_MAX - 1) is not None:
            bad[i] = True
            out.append(None)
        else:
            out.append(tuple(value))
    return out, bad
