"""Loader for the Mooncake FAST'25 traces (JSONL).

One object per line: ``timestamp`` (ms from the trace start), ``input_length``,
``output_length``, ``hash_ids`` (one id per 512-token prompt block; equal ids mean equal
block content given an equal prefix, so a request's prefix identity is its list of ids).

Mapping: ``arrival_ns = timestamp * 1e6`` (not rebased: the file's time 0 is the trace
start), ``block_hashes = tuple(hash_ids)``, ``hash_block_size = 512``; request ids are the
0-based line index in the file. A row must have ``len(hash_ids) == ceil(input_length / 512)``.

Source: Qin et al., "Mooncake: A KVCache-centric Disaggregated Architecture for LLM
Serving", FAST'25; https://github.com/kvcache-ai/Mooncake (``FAST25-release/traces``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from llmsim.errors import TraceFormatError
from llmsim.trace.frame import NS_PER_MS, RowCheck, TraceFrame, finish_frame
from llmsim.trace.jsonl import FieldKind, id_tuples, numbers, read_jsonl_table

HASH_BLOCK_SIZE = 512
FIELDS = {"arrival_ns": "timestamp", "input_tokens": "input_length", "output_tokens": "output_length",
          "block_hashes": "hash_ids"}
KINDS = {"timestamp": FieldKind.NUMBER, "input_length": FieldKind.NUMBER, "output_length": FieldKind.NUMBER,
         "hash_ids": FieldKind.INT_LIST}


def hash_count_check(df: pd.DataFrame, block_size: int, *, exact: bool) -> RowCheck:
    """Rows whose number of block hashes disagrees with ``ceil(input_tokens / block_size)``.

    Args:
        df: frame with ``input_tokens`` and ``block_hashes`` columns.
        block_size: tokens per hash.
        exact: require equality (else only "not more hashes than blocks").
    """
    lengths = np.fromiter((-1 if v is None else len(v) for v in df["block_hashes"]), np.int64, len(df))
    blocks = np.ceil(pd.to_numeric(df["input_tokens"], errors="coerce").to_numpy(dtype=float) / block_size)
    bad = (lengths < 0) | ((lengths != blocks) if exact else (lengths > blocks))
    relation = "==" if exact else "<="
    return RowCheck(bad=bad, field="hash_ids",
                    reason=f"missing, or len(hash_ids) {relation} ceil(input_length / {block_size}) fails")


def load_mooncake_frame(path: str | Path, *, skip_bad_rows: bool = False, sort: bool = False) -> TraceFrame:
    """Load a Mooncake trace in columnar form.

    Args:
        path: the ``.jsonl`` file.
        skip_bad_rows: skip malformed rows (counted in ``metadata["skipped_rows"]``).
        sort: stable-sort by arrival instead of rejecting an unsorted file.

    Raises:
        TraceFormatError: not a regular UTF-8 file, empty file, invalid JSON, a field of the
            wrong type or out of range (file, line, field), hash count mismatch, or unsorted
            arrivals.
    """
    path = Path(path)
    table, lines, skipped = read_jsonl_table(path, kinds=KINDS, skip_bad_rows=skip_bad_rows)
    if table.num_rows == 0:
        raise TraceFormatError("trace has no requests", path=path)
    df = pd.DataFrame(
        {
            "request_id": lines - 1,
            "arrival_ns": numbers(table, "timestamp") * NS_PER_MS,
            "input_tokens": numbers(table, "input_length"),
            "output_tokens": numbers(table, "output_length"),
            "block_hashes": id_tuples(table, "hash_ids"),
        }
    )
    frame = finish_frame(
        df, path=path, lines=lines, fields=FIELDS, skip_bad_rows=skip_bad_rows, sort=sort,
        extra_checks=[hash_count_check(df, HASH_BLOCK_SIZE, exact=True)],
        hash_block_size=HASH_BLOCK_SIZE, metadata={"format": "mooncake"},
    )
    if skipped:
        total = skipped + int(frame.metadata.get("skipped_rows", "0"))
        frame = frame.with_data(frame.data, skipped_rows=str(total))
    return frame
