"""CSV reading shared by the CSV loaders (Azure, BurstGPT, Qwen-Bailian, Vidur, generic).

Reads with Arrow's CSV reader (vectorized), keeping the file line of every row so that a bad
value can be reported as ``file:line: field``. Parsing is single-threaded because Arrow only
reports the line of a malformed row (wrong column count) when it parses sequentially.

Two passes at most: the first with the requested column types (fast path); if Arrow cannot
convert a value, a second pass reads those columns as strings so the loader can coerce them
with pandas and report exactly which rows are bad.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from llmsim.errors import TraceFormatError
from llmsim.trace.inputs import check_trace_file, duplicate_csv_column, read_trace_bytes

#: Bytes per Arrow CSV block when streaming (bounds the memory of one batch).
STREAM_BLOCK_BYTES = 16 << 20


@dataclass(slots=True)
class _BadRowLog:
    """Collects malformed rows (wrong number of columns) reported by Arrow."""

    path: Path
    skip: bool
    lines: list[int] = field(default_factory=list)
    consumed: int = 0
    error: TraceFormatError | None = None

    def __call__(self, row: pacsv.InvalidRow) -> str:
        # Exceptions raised here are swallowed by Arrow: keep the error, make Arrow fail.
        line = int(row.number) if row.number is not None else -1
        if not self.skip:
            self.error = TraceFormatError(
                f"expected {row.expected_columns} columns, got {row.actual_columns}",
                path=self.path,
                line=line if line > 0 else None,
            )
            return "error"
        self.lines.append(line)
        return "skip"

    def take_new(self) -> list[int]:
        new = self.lines[self.consumed :]
        self.consumed = len(self.lines)
        return new


@dataclass(slots=True)
class _LineCounter:
    """Maps each delivered row to its 1-based file line, accounting for skipped rows.

    Skipped lines may be reported before the batch that contains them is delivered (Arrow
    can parse ahead), so they are kept pending until a batch's line range reaches them.
    """

    next_line: int = 2  # line 1 is the header
    pending: list[int] = field(default_factory=list)

    def lines_for(self, num_rows: int, skipped: list[int]) -> np.ndarray:
        self.pending = sorted([*self.pending, *(s for s in skipped if s > 0)])
        k = 0
        while k < len(self.pending) and self.pending[k] < self.next_line + num_rows + k:
            k += 1
        inside, self.pending = self.pending[:k], self.pending[k:]
        span = np.arange(self.next_line, self.next_line + num_rows + k, dtype=np.int64)
        if inside:
            span = span[~np.isin(span, inside)]
        self.next_line += num_rows + k
        return span


def _options(
    path: Path, types: dict[str, pa.DataType], log: _BadRowLog, *, as_strings: bool, block_bytes: int | None
) -> tuple[pacsv.ReadOptions, pacsv.ParseOptions, pacsv.ConvertOptions]:
    read_kw: dict[str, object] = {"use_threads": False}
    if block_bytes:
        read_kw["block_size"] = block_bytes
    column_types = {name: (pa.string() if as_strings else t) for name, t in types.items()}
    return (
        pacsv.ReadOptions(**read_kw),
        pacsv.ParseOptions(invalid_row_handler=log),
        pacsv.ConvertOptions(column_types=column_types, strings_can_be_null=True),
    )


def _check_header(names: list[str], path: Path) -> None:
    dup = duplicate_csv_column(names)
    if dup is not None:
        raise TraceFormatError("column named twice in the header", path=path, line=1, field=dup)


def read_csv_table(
    path: Path, types: dict[str, pa.DataType], *, skip_bad_rows: bool
) -> tuple[pa.Table, np.ndarray, int, bool]:
    """Read a whole CSV file.

    Args:
        path: the CSV file (first line = header).
        types: column -> Arrow type for the fast path (other columns are inferred).
        skip_bad_rows: skip rows with a wrong number of columns instead of raising.

    Returns:
        ``(table, lines, skipped, as_strings)``: the rows, the 1-based file line of each
        row (shape (num_rows,)), the number of malformed rows skipped, and whether the
        ``types`` columns came back as strings (a value failed to convert).

    Raises:
        TraceFormatError: a row with the wrong number of columns (unless skipped), a column
            named twice in the header, a file that is not CSV, not UTF-8 or not a regular
            file (see :mod:`llmsim.trace.inputs`).
    """
    data = read_trace_bytes(path)
    for as_strings in (False, True):
        log = _BadRowLog(path, skip_bad_rows)
        ro, po, co = _options(path, types, log, as_strings=as_strings, block_bytes=None)
        try:
            table = pacsv.read_csv(pa.BufferReader(data), read_options=ro, parse_options=po,
                                   convert_options=co)
        except pa.ArrowException as exc:
            if log.error is not None:
                raise log.error from None
            if not as_strings and "conversion error" in str(exc):
                continue
            raise TraceFormatError(f"not a valid CSV file: {exc}", path=path) from None
        _check_header(table.schema.names, path)
        lines = _LineCounter().lines_for(table.num_rows, log.lines)
        return table, lines, len(log.lines), as_strings
    raise AssertionError("unreachable")


def iter_csv_batches(
    path: Path,
    types: dict[str, pa.DataType],
    *,
    skip_bad_rows: bool,
    as_strings: bool = False,
    block_bytes: int = STREAM_BLOCK_BYTES,
    memory_pool: pa.MemoryPool | None = None,
) -> Iterator[tuple[pa.RecordBatch, np.ndarray, int]]:
    """Stream a CSV file in record batches of about ``block_bytes`` of text each.

    Yields:
        ``(batch, lines, skipped)`` per batch: its rows, their 1-based file lines and the
        number of malformed rows skipped while parsing it.

    Raises:
        pyarrow.ArrowInvalid: a value failed to convert (retry with ``as_strings=True``).
        TraceFormatError: a malformed row (unless skipped) or a file that is not CSV.
    """
    check_trace_file(path)
    log = _BadRowLog(path, skip_bad_rows)
    ro, po, co = _options(path, types, log, as_strings=as_strings, block_bytes=block_bytes)
    counter = _LineCounter()
    try:
        reader = pacsv.open_csv(path, read_options=ro, parse_options=po, convert_options=co,
                                memory_pool=memory_pool)
    except pa.ArrowInvalid as exc:
        if log.error is not None:
            raise log.error from None
        if "conversion error" in str(exc):
            raise
        raise TraceFormatError(f"not a valid CSV file: {exc}", path=path) from None
    _check_header(reader.schema.names, path)
    with reader:
        while True:
            try:
                batch = reader.read_next_batch()
            except StopIteration:
                return
            except pa.ArrowInvalid:
                if log.error is not None:
                    raise log.error from None
                raise
            skipped = log.take_new()
            yield batch, counter.lines_for(batch.num_rows, skipped), len(skipped)
