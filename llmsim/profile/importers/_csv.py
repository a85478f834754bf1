"""CSV reading with located errors and exact unit conversion.

Latencies in the source CSVs are decimal strings in microseconds (LLMServingSim) or
milliseconds (Vidur). They are converted to nanoseconds with decimal arithmetic
(``Decimal(cell).scaleb(3)``) and only then to a binary double, so that a cell with at most
15 significant digits survives ``us -> ns (double) -> us`` exactly: Python's ``repr`` of a
double prints the shortest string that reads back to it, which for such a value is the
decimal we started from.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Sequence
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TypeVar

from llmsim.errors import ProfileError
from llmsim.safeio import INT64_MAX, read_text

_T = TypeVar("_T")


class CsvTable:
    """A parsed CSV file: header, rows of cells and the 1-based file line of each row.

    Attributes:
        path: the file read.
        header: column names.
        rows: cell strings per data row.
        lines: file line number of each row (the header is line 1).
    """

    __slots__ = ("_index", "header", "lines", "path", "rows")

    def __init__(self, path: Path, header: list[str], rows: list[list[str]], lines: list[int]):
        self.path = path
        self.header = header
        self.rows = rows
        self.lines = lines
        self._index = {name: i for i, name in enumerate(header)}

    def col(self, name: str) -> int:
        """Column index of ``name``.

        Raises:
            ProfileError: the column is missing (names the file, line 1 and the field).
        """
        try:
            return self._index[name]
        except KeyError:
            raise ProfileError(
                f"missing column (have: {', '.join(self.header)})",
                path=self.path, line=1, field=name,
            ) from None

    def column(self, name: str, parse: Callable[[str], _T]) -> list[_T]:
        """Parse every cell of column ``name`` with ``parse(cell)``.

        Raises:
            ProfileError: missing column or a cell ``parse`` rejects (file, line, field).
        """
        j = self.col(name)
        out = []
        for row, line in zip(self.rows, self.lines, strict=True):
            cell = row[j]
            try:
                out.append(parse(cell))
            except (ValueError, InvalidOperation, ArithmeticError) as exc:
                raise ProfileError(
                    f"bad value {cell!r}: {exc}", path=self.path, line=line, field=name
                ) from None
        return out


def read_csv(path: Path, required: Sequence[str] = ()) -> CsvTable:
    """Read ``path`` (header + rows), checking that ``required`` columns exist.

    The file must be a regular UTF-8 file (:func:`llmsim.safeio.read_text`); a NUL byte, a
    cell longer than the ``csv`` module's field limit (131,072 characters) and a column
    named twice are refused rather than parsed.

    Raises:
        ProfileError: unreadable or non-UTF-8 file, empty file, malformed CSV, a row with
            the wrong number of cells, or a missing required column (file, line, field).
    """
    text = read_text(path, what="profile CSV", error=ProfileError)
    if "\0" in text:
        line = text.count("\n", 0, text.index("\0")) + 1
        raise ProfileError("NUL byte in a CSV file", path=path, line=line)
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        try:
            header = next(reader)
        except StopIteration:
            raise ProfileError("empty CSV file (no header)", path=path, line=1) from None
        rows: list[list[str]] = []
        lines: list[int] = []
        for row in reader:
            if not row:
                continue
            if len(row) != len(header):
                raise ProfileError(f"expected {len(header)} cells, got {len(row)}",
                                   path=path, line=reader.line_num)
            rows.append(row)
            lines.append(reader.line_num)
    except csv.Error as exc:
        raise ProfileError(f"malformed CSV: {exc}", path=path,
                           line=reader.line_num or 1) from None
    names = [h.strip() for h in header]
    seen: set[str] = set()
    for name in names:
        if name and name in seen:
            raise ProfileError("column appears twice in the header", path=path, line=1,
                               field=name)
        seen.add(name)
    table = CsvTable(path, names, rows, lines)
    for name in required:
        table.col(name)
    return table


def check_duplicate_keys(table: CsvTable, key_columns: Sequence[str],
                         value_columns: Sequence[str]) -> list[int]:
    """Rows of ``table`` that repeat an earlier row's key.

    Two rows with equal cells in ``key_columns`` (compared as stripped text) describe the
    same measured point. When their ``value_columns`` cells differ too the table contradicts
    itself and is refused; an exact repetition (same key, same values) is harmless and its
    index is returned so the caller can drop it. (Keys spelled differently but equal as
    numbers, ``16`` and ``16.0``, are caught afterwards as repeated grid points by
    :func:`llmsim.profile.io.validate_profile`.)

    Args:
        table: the parsed CSV.
        key_columns: columns that identify a point.
        value_columns: columns that hold what was measured at the point.

    Returns:
        Indices (into ``table.rows``) of exact repetitions, ascending.

    Raises:
        ProfileError: two rows share a key but not their values (names the later row's line,
            the first differing column and the earlier line).
    """
    keys = [table.col(c) for c in key_columns]
    values = [table.col(c) for c in value_columns]
    first: dict[tuple[str, ...], int] = {}
    repeats: list[int] = []
    for i, row in enumerate(table.rows):
        key = tuple(row[j].strip() for j in keys)
        j0 = first.setdefault(key, i)
        if j0 == i:
            continue
        earlier = table.rows[j0]
        for name, j in zip(value_columns, values, strict=True):
            if row[j].strip() != earlier[j].strip():
                raise ProfileError(
                    f"contradicts line {table.lines[j0]} (same "
                    f"{', '.join(key_columns)}; {earlier[j].strip()!r} there, "
                    f"{row[j].strip()!r} here)", path=table.path, line=table.lines[i],
                    field=name)
        repeats.append(i)
    return repeats


def drop_rows(table: CsvTable, indices: Sequence[int]) -> None:
    """Remove rows ``indices`` (ascending) from ``table`` in place."""
    for i in reversed(indices):
        del table.rows[i]
        del table.lines[i]


def parse_int(cell: str) -> int:
    """An integer cell (``"16"``; ``"16.0"`` is accepted when integral), within int64."""
    text = cell.strip()
    if len(text) > 40:
        raise ValueError("not an integer (too long)")
    try:
        value = int(text)
    except ValueError:
        try:
            dec = Decimal(text)
        except InvalidOperation:
            raise ValueError("not an integer") from None
        if not dec.is_finite() or dec.adjusted() > 18 or dec != dec.to_integral_value():
            raise ValueError("not an integer within the signed 64-bit range") from None
        value = int(dec)
    if not -INT64_MAX - 1 <= value <= INT64_MAX:
        raise ValueError("outside the signed 64-bit range")
    return value


def parse_count(cell: str) -> int:
    """A non-negative integer cell (a token, sequence, byte or rank count)."""
    value = parse_int(cell)
    if value < 0:
        raise ValueError("a count cannot be negative")
    return value


def parse_uint32(cell: str) -> int:
    """A non-negative integer cell that fits an unsigned 32-bit field (sample counts)."""
    value = parse_count(cell)
    if value > 2**32 - 1:
        raise ValueError("larger than 4294967295")
    return value


def parse_float(cell: str) -> float:
    """A finite decimal cell as a double."""
    value = float(cell)
    if not math.isfinite(value):
        raise ValueError("not a finite number")
    return value


def parse_float_or_nan(cell: str) -> float:
    """Like :func:`parse_float`, but an empty cell is NaN (a value the source left blank)."""
    return math.nan if cell.strip() == "" else parse_float(cell)


def scaled_to_ns(exponent: int) -> Callable[[str], float]:
    """Parser turning a decimal cell in ``10**-exponent`` ns units into ns (double).

    ``scaled_to_ns(3)`` parses microseconds, ``scaled_to_ns(6)`` milliseconds. The parser
    raises ``ValueError`` for text that is not a decimal number, for NaN/infinity and for a
    negative value (every such column holds a latency).
    """

    def parse(cell: str) -> float:
        try:
            value = Decimal(cell.strip())
        except InvalidOperation:
            raise ValueError("not a number") from None
        if not value.is_finite():
            raise ValueError("not a finite number")
        if value < 0:
            raise ValueError("a latency cannot be negative")
        if value.adjusted() > 300:
            raise ValueError("too large for a latency")
        result = float(value.scaleb(exponent))
        if not math.isfinite(result):
            raise ValueError("too large for a latency")
        return result

    return parse


def scaled_to_ns_or_nan(exponent: int) -> Callable[[str], float]:
    """:func:`scaled_to_ns` where an empty cell is NaN."""
    inner = scaled_to_ns(exponent)
    return lambda cell: math.nan if cell.strip() == "" else inner(cell)


us_to_ns = scaled_to_ns(3)
us_to_ns_or_nan = scaled_to_ns_or_nan(3)


def format_decimal(value: Decimal) -> str:
    """Plain (non-scientific) shortest decimal text of ``value``: ``324``, ``8.35233``."""
    text = format(value.normalize(), "f")
    return "0" if text in ("-0", "") else text


def ns_to_us_text(value_ns: float) -> str:
    """Inverse of :data:`us_to_ns` as CSV text; NaN gives an empty cell."""
    if math.isnan(value_ns):
        return ""
    return format_decimal(Decimal(repr(value_ns)).scaleb(-3))


def float_text(value: float) -> str:
    """A double as the shortest decimal text that reads back to it; NaN gives ``""``."""
    if math.isnan(value):
        return ""
    return format_decimal(Decimal(repr(value)))
