"""Loader for LLMServingSim workload JSONL files.

One JSON object per line (``llmservingsim/workloads/*.jsonl``)::

    {"arrival_time_ns": 46926808, "input_toks": 2358, "output_toks": 531,
     "input_tok_ids": [...], "output_tok_ids": [...]}

``arrival_time_ns`` is already relative to the trace start; the token-id lists are optional
(``workload_me2_01_mixed.jsonl`` has none) and, when present, must be as long as the counts.

Agentic lines carry a chain of LLM calls instead of one request::

    {"arrival_time_ns": 0, "sub_requests": [
        {"input_toks": 900, "output_toks": 60, "tool_duration_ns": 250000000},
        {"input_toks": 1100, "output_toks": 40}]}

Sub-request ``k`` of line ``i`` becomes request ``"i.k"`` in session ``"i"`` with
``turn = k`` and ``parent_id = "i.(k-1)"``. ``tool_duration_ns`` on a sub-request is the tool
call that runs after it finishes, so the next sub-request gets
``think_time_ns = tool_duration_ns`` of its parent and is released by the serving loop at
``max(arrival_ns, parent finish + think_time_ns)``. Every sub-request keeps the line's
``arrival_time_ns``. Plain lines become request ``"i"`` (``i`` = 0-based line index among
non-blank lines).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import cast

import numpy as np
import pandas as pd

from llmsim.errors import TraceFormatError
from llmsim.safeio import INT64_MAX, loads_json
from llmsim.trace.frame import DEFAULT_MAX_SPAN_S, NS_PER_S, TraceFrame, finish_frame
from llmsim.trace.inputs import (
    MAX_TOKENS,
    DuplicateKeyError,
    int_id_problem,
    read_trace_bytes,
    unique_keys,
)
from llmsim.trace.record import Trace

FIELDS = {
    "arrival_ns": "arrival_time_ns",
    "input_tokens": "input_toks",
    "output_tokens": "output_toks",
    "input_token_ids": "input_tok_ids",
    "output_token_ids": "output_tok_ids",
    "think_time_ns": "tool_duration_ns",
}
TOOL_KEYS = ("tool_duration_ns", "tool_time_ns")
_DIGITS_TO_0 = bytes.maketrans(b"123456789", b"000000000")  # 19 zeros in a row = a 19-digit number


def load_llmservingsim(path: str | Path, *, skip_bad_rows: bool = False, sort: bool = False) -> Trace:
    """Load an LLMServingSim workload JSONL as a :class:`Trace`.

    Args:
        path: the ``.jsonl`` file.
        skip_bad_rows: skip malformed requests (counted in ``metadata["skipped_rows"]``).
        sort: stable-sort by arrival instead of rejecting an unsorted file.

    Raises:
        TraceFormatError: not a regular UTF-8 file, invalid JSON (``NaN``/``Infinity``,
            nesting deeper than 64 levels), a missing or non-integer field, a count beyond
            :data:`~llmsim.trace.inputs.MAX_TOKENS`, non-positive token counts, token ids that
            are not flat lists of non-negative int64 integers or whose length differs from the
            count, unsorted arrivals, or an empty file; the message names the file, line and
            field.
    """
    return load_llmservingsim_frame(path, skip_bad_rows=skip_bad_rows, sort=sort).to_trace()


def load_llmservingsim_frame(
    path: str | Path, *, skip_bad_rows: bool = False, sort: bool = False
) -> TraceFrame:
    """Columnar form of :func:`load_llmservingsim` (same arguments and errors)."""
    path = Path(path)
    data = read_trace_bytes(path)
    text = data.decode("utf-8-sig")
    records: list[dict[str, object]] = []
    lines: list[int] = []
    skipped = 0
    index = -1
    # ids can only leave [0, INT64_MAX] when the text has a minus sign or a 19-digit number
    id_range = b"-" in data or b"0" * 19 in data.translate(_DIGITS_TO_0)
    for lineno, raw in enumerate(text.split("\n"), start=1):
        if not raw.strip():
            continue
        index += 1
        try:
            new = _records_of_line(raw, index=index, path=path, lineno=lineno, id_range=id_range)
        except TraceFormatError:
            if not skip_bad_rows:
                raise
            skipped += 1
            continue
        records.extend(new)
        lines.extend([lineno] * len(new))
    if not records:
        raise TraceFormatError("trace has no requests", path=path)
    df = pd.DataFrame.from_records(records)
    if df["parent_id"].isna().all():
        df = df.drop(columns=["session_id", "parent_id", "turn", "think_time_ns"])
    for col in ("input_token_ids", "output_token_ids"):
        if df[col].isna().all():
            df = df.drop(columns=[col])
    frame = finish_frame(
        df,
        path=path,
        lines=np.asarray(lines, dtype=np.int64),
        fields=FIELDS,
        skip_bad_rows=skip_bad_rows,
        sort=sort,
    )
    if skipped:
        total = skipped + int(frame.metadata.get("skipped_rows", "0"))
        frame = frame.with_data(frame.data, skipped_rows=str(total))
    return frame


def _parse_line(raw: str, *, path: Path, lineno: int) -> object:
    """One JSON line: the C parser first; on any failure :func:`llmsim.safeio.loads_json`
    re-parses it to name the problem (invalid JSON, NaN/Infinity, depth)."""
    try:
        return json.loads(raw, parse_constant=_reject_constant, object_pairs_hook=unique_keys)
    except DuplicateKeyError as exc:
        raise TraceFormatError(str(exc), path=path, line=lineno, field=exc.key) from None
    except (ValueError, RecursionError):
        pass
    loads_json(raw, path=path, line=lineno, error=TraceFormatError, what="JSON line")
    raise TraceFormatError("invalid JSON line", path=path, line=lineno)  # not reached in practice


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not a number")


def _records_of_line(raw: str, *, index: int, path: Path, lineno: int, id_range: bool = True
                     ) -> list[dict[str, object]]:
    """Parse one JSONL line into one record (plain) or one per sub-request (agentic)."""
    obj = _parse_line(raw, path=path, lineno=lineno)
    if not isinstance(obj, dict):
        raise TraceFormatError("line is not a JSON object", path=path, line=lineno)
    arrival = _int_field(obj, "arrival_time_ns", path=path, lineno=lineno)
    subs = obj.get("sub_requests")
    if subs is None:
        rec = _request_fields(obj, path=path, lineno=lineno, prefix="", id_range=id_range)
        rec.update(request_id=str(index), arrival_ns=arrival, session_id=None, parent_id=None,
                   turn=0, think_time_ns=0)
        return [rec]
    if not isinstance(subs, list) or not subs:
        raise TraceFormatError("must be a non-empty list", path=path, line=lineno, field="sub_requests")
    out: list[dict[str, object]] = []
    think = 0
    for k, sub in enumerate(subs):
        prefix = f"sub_requests[{k}]."
        if not isinstance(sub, dict):
            raise TraceFormatError("must be an object", path=path, line=lineno, field=prefix[:-1])
        rec = _request_fields(sub, path=path, lineno=lineno, prefix=prefix, id_range=id_range)
        rec.update(
            request_id=f"{index}.{k}",
            arrival_ns=arrival,
            session_id=str(index),
            parent_id=f"{index}.{k - 1}" if k else None,
            turn=k,
            think_time_ns=think,
        )
        out.append(rec)
        think = 0
        for key in TOOL_KEYS:
            if key in sub:
                think = _int_field(sub, key, path=path, lineno=lineno, prefix=prefix,
                                   maximum=DEFAULT_MAX_SPAN_S * NS_PER_S)
                if think < 0:
                    raise TraceFormatError("tool duration must be >= 0", path=path, line=lineno,
                                           field=prefix + key)
    return out


def _request_fields(obj: dict[str, object], *, path: Path, lineno: int, prefix: str,
                    id_range: bool = True) -> dict[str, object]:
    rec: dict[str, object] = {
        "input_tokens": _int_field(obj, "input_toks", path=path, lineno=lineno, prefix=prefix,
                                   maximum=MAX_TOKENS),
        "output_tokens": _int_field(obj, "output_toks", path=path, lineno=lineno, prefix=prefix,
                                    maximum=MAX_TOKENS),
    }
    for key, col in (("input_tok_ids", "input_token_ids"), ("output_tok_ids", "output_token_ids")):
        ids = obj.get(key)
        if ids is not None:
            problem = int_id_problem(ids, minimum=0, check_range=id_range)
            if problem:
                raise TraceFormatError(problem, path=path, line=lineno, field=prefix + key)
        # int_id_problem has checked that ids is a flat list of ints
        rec[col] = None if ids is None else tuple(cast("list[int]", ids))
    return rec


def _int_field(obj: dict[str, object], key: str, *, path: Path, lineno: int, prefix: str = "",
               maximum: int = INT64_MAX) -> int:
    """An integer field (an integral float such as ``5.0`` is accepted) in ``[-maximum, maximum]``.

    Signs and the span are checked by the frame's row checks; this bounds the magnitude so the
    int64 columns never wrap.
    """
    if key not in obj:
        raise TraceFormatError("missing", path=path, line=lineno, field=prefix + key)
    value = obj[key]
    if type(value) is float and math.isfinite(value) and value.is_integer():
        value = int(value)
    if type(value) is not int:
        raise TraceFormatError(f"must be an integer, got {value!r}"[:200], path=path, line=lineno,
                               field=prefix + key)
    if abs(value) > maximum:
        raise TraceFormatError(f"must be an integer of magnitude <= {maximum}, got {value}"[:200],
                               path=path, line=lineno, field=prefix + key)
    return value
