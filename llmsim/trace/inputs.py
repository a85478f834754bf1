"""Reading trace files safely: regular files only, UTF-8 with the line of a bad byte, bounds.

Every trace loader gets its bytes through :func:`read_trace_bytes` (whole-file readers) or
checks the file with :func:`check_trace_file` first (the Azure streaming reader), so that a
device (``/dev/zero``, ``/dev/urandom``), a FIFO or a directory is refused before a byte is
read, and non-UTF-8 bytes fail with the file and line. The limits themselves live in
:mod:`llmsim.safeio`, shared with every other reader.

Bounds on trace values (every loader enforces them with the first bad row's line):

* token counts per request are integers in ``[1, MAX_TOKENS]``, :data:`MAX_TOKENS` =
  2**31 - 1 (the Azure Parquet cache stores them as int32; no model's context window is
  within three orders of magnitude of it, and 10^7 such requests still sum within int64);
* token ids are integers in ``[0, INT64_MAX]``, block hash ids integers within int64;
* times are finite and within the trace span limit
  (:data:`llmsim.trace.frame.DEFAULT_MAX_SPAN_S`, 400 days), so their int64 ns never wrap.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from llmsim.errors import TraceFormatError
from llmsim.safeio import (
    INT64_MAX,
    MAX_INPUT_BYTES,
    MAX_JSON_DEPTH,
    json_depth_exceeds,
    read_bytes,
)

__all__ = [
    "MAX_TOKENS",
    "DuplicateKeyError",
    "check_trace_file",
    "duplicate_csv_column",
    "first_bad_utf8",
    "int_id_problem",
    "read_trace_bytes",
    "scan_utf8",
    "too_deep_lines",
    "unique_keys",
]

MAX_TOKENS = 2**31 - 1
"""Largest token count of one request (prompt or output), tokens."""


def check_trace_file(path: str | Path) -> Path:
    """``path`` when it is a regular file of at most :data:`~llmsim.safeio.MAX_INPUT_BYTES`.

    Raises:
        TraceFormatError: missing, unreadable, a directory, a device / FIFO, or too large.
    """
    import os
    import stat

    p = Path(path)
    try:
        st = os.stat(p)
    except (OSError, ValueError) as exc:
        raise TraceFormatError(f"cannot read trace: {getattr(exc, 'strerror', None) or exc}",
                               path=p) from None
    if not stat.S_ISREG(st.st_mode):
        kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file"
        raise TraceFormatError(f"cannot read trace: {kind} (only regular files are read)", path=p)
    if st.st_size > MAX_INPUT_BYTES:
        raise TraceFormatError(f"trace is {st.st_size} bytes, more than the {MAX_INPUT_BYTES}-byte "
                               "limit for one input file", path=p)
    return p


def first_bad_utf8(data: bytes) -> tuple[int, int] | None:
    """``(1-based line, byte offset)`` of the first byte that is not UTF-8, or ``None``."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return data.count(b"\n", 0, exc.start) + 1, exc.start
    return None


def scan_utf8(path: Path, *, chunk_bytes: int = 16 << 20) -> tuple[int, int] | None:
    """:func:`first_bad_utf8` of a file read in chunks (memory bounded by ``chunk_bytes``)."""
    import codecs

    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = lines = 0
    with path.open("rb") as f:
        while chunk := f.read(chunk_bytes):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as exc:
                start = max(exc.start, 0)
                return lines + chunk.count(b"\n", 0, start) + 1, offset + start
            lines += chunk.count(b"\n")
            offset += len(chunk)
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            return lines + 1, offset
    return None


def read_trace_bytes(path: str | Path) -> bytes:
    """The content of a trace file, checked to be UTF-8 text.

    Raises:
        TraceFormatError: not a regular file, too large, unreadable, or not UTF-8 (names the
            line and byte offset of the first bad byte).
    """
    p = check_trace_file(path)
    data = read_bytes(p, what="trace", error=TraceFormatError)
    bad = first_bad_utf8(data)
    if bad is not None:
        line, offset = bad
        raise TraceFormatError(f"not UTF-8 text (bad byte 0x{data[offset]:02x} at offset {offset})",
                               path=p, line=line)
    return data


def too_deep_lines(data: bytes, limit: int = MAX_JSON_DEPTH, *, chunk_bytes: int = 64 << 20) -> list[int]:
    """1-based lines of a JSONL text whose JSON nests deeper than ``limit`` levels.

    A line with at most ``limit`` opening brackets cannot nest deeper, so only lines with
    more are scanned exactly. The count is vectorized over chunks of about ``chunk_bytes``
    (cut at line ends), so its scratch memory stays a small multiple of one chunk (real
    traces have 2-4 brackets per line; ~4 ms for the 3 MB Mooncake trace).
    """
    out: list[int] = []
    start = line_base = 0
    n = len(data)
    while start < n:
        end = min(n, start + chunk_bytes)
        if end < n:
            cut = data.rfind(b"\n", start, end)
            end = cut + 1 if cut >= 0 else (data.find(b"\n", end) + 1 or n)
        out += [line_base + k for k in _too_deep_in(data, start, end, limit)]
        line_base += data.count(b"\n", start, end)
        start = end
    return out


def _too_deep_in(data: bytes, start: int, end: int, limit: int) -> list[int]:
    """:func:`too_deep_lines` of ``data[start:end]`` (whole lines), lines counted from 1."""
    arr = np.frombuffer(data, dtype=np.uint8, count=end - start, offset=start)
    openers = np.flatnonzero((arr == 0x5B) | (arr == 0x7B))
    if openers.size <= limit:
        return []
    newlines = np.flatnonzero(arr == 0x0A)
    per_line = np.bincount(np.searchsorted(newlines, openers))  # line index of each opener
    out = []
    for idx in np.flatnonzero(per_line > limit):
        lo = start + (0 if idx == 0 else int(newlines[idx - 1]) + 1)
        hi = start + (int(newlines[idx]) if idx < newlines.size else arr.size)
        if json_depth_exceeds(data[lo:hi].decode("utf-8", errors="replace"), limit):
            out.append(int(idx) + 1)
    return out


class DuplicateKeyError(ValueError):
    """A JSON object names the same key twice (raised by :func:`unique_keys`)."""

    def __init__(self, key: str) -> None:
        super().__init__(f"duplicate key {key!r} in one object")
        self.key = key


def unique_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    """``object_pairs_hook`` for :func:`json.loads` refusing duplicate keys (which JSON
    parsers resolve differently: Python keeps the last, others the first or fail)."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise DuplicateKeyError(key)
            seen.add(key)
    return obj


def duplicate_csv_column(names: list[str]) -> str | None:
    """The first CSV header name that appears twice, or ``None``."""
    seen: set[str] = set()
    for name in names:
        if name in seen:
            return name
        seen.add(name)
    return None


def int_id_problem(ids: object, *, minimum: int, check_range: bool = True) -> str | None:
    """Why ``ids`` is not a flat list of ints in ``[minimum, INT64_MAX]`` (``None`` if it is).

    Bools, floats, strings, nulls and nested lists are refused: ids are hashed, and only
    ints hash the same in every process (strings depend on ``PYTHONHASHSEED``).

    Args:
        ids: the value to check.
        minimum: smallest allowed id.
        check_range: also check the bounds (a caller that knows the text has no ``-`` and
            no 19-digit number passes False: such ids are in [0, 10^18]).
    """
    if not isinstance(ids, (list, tuple)):
        return f"must be a list of integer ids, got {type(ids).__name__}"
    if not ids:
        return None
    if not set(map(type, ids)) <= {int}:
        bad = next(v for v in ids if type(v) is not int)
        return f"must hold only integer ids, got {bad!r}"[:200]
    if not check_range:
        return None
    lo, hi = min(ids), max(ids)
    if lo < minimum or hi > INT64_MAX:
        return f"ids must be in [{minimum}, {INT64_MAX}], got {lo if lo < minimum else hi}"
    return None
