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
from llmsim.trace.frame import NS_PER_S, RowCheck, TraceFrame, finish_frame
from llmsim.trace.jsonl import column_or_null, id_tuples, numbers, read_jsonl_table
from llmsim.trace.mooncake import hash_count_check
from llmsim.trace.tabular import read_csv_table

HASH_BLOCK_SIZE = 16
FIELDS = {"arrival_ns": "timestamp", "input_tokens": "input_length", "output_tokens": "output_length",
          "request_id": "chat_id", "parent_id": "parent_chat_id", "block_hashes": "hash_ids"}


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
        hashes = _csv_hash_lists(table)
    else:
        table, lines, skipped = read_jsonl_table(path, skip_bad_rows=skip_bad_rows)
        hashes = id_tuples(table, "hash_ids")
    if table.num_rows == 0:
        raise TraceFormatError("trace has no requests", path=path)
    ts = numbers(table, "timestamp").to_numpy(dtype=float)
    t0 = np.nanmin(ts) if np.isfinite(ts).any() else 0.0
    chat = _id_strings(column_or_null(table, "chat_id"), table.num_rows)
    parent = _id_strings(column_or_null(table, "parent_chat_id"), table.num_rows)
    parent = [None if p in (None, "-1", "") else p for p in parent]
    turn = numbers(table, "turn").fillna(0).astype(np.int64) if "turn" in table.schema.names else 0
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
        hash_count_check(df, HASH_BLOCK_SIZE, exact=False),
        RowCheck(bad=missing_id, field="chat_id", reason="missing chat id"),
        RowCheck(bad=dup, field="chat_id", reason="duplicate chat id"),
    ]
    frame = finish_frame(df, path=path, lines=lines, fields=FIELDS, skip_bad_rows=skip_bad_rows, sort=sort,
                         extra_checks=checks, hash_block_size=HASH_BLOCK_SIZE,
                         metadata={"format": "qwen_bailian"})
    data = frame.data.copy()
    ids = data["request_id"].tolist()
    known = set(ids)
    parents = [None if pd.isna(p) else str(p) for p in data["parent_id"]]
    dangling = [p is not None and p not in known for p in parents]
    parents = [None if d else p for p, d in zip(parents, dangling)]
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
    parent_of = dict(zip(ids, parents))
    root: dict[str, str] = {}
    out: list[str] = []
    for rid, par in zip(ids, parents):
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


def _csv_hash_lists(table: pa.Table) -> list[tuple[int, ...] | None]:
    import json

    if "hash_ids" not in table.schema.names:
        return [None] * table.num_rows
    out: list[tuple[int, ...] | None] = []
    for text in table.column("hash_ids").to_pylist():
        try:
            value = json.loads(text) if text else None
            out.append(tuple(int(x) for x in value) if isinstance(value, list) else None)
        except (ValueError, TypeError):
            out.append(None)
    return out
