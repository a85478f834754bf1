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
import math
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation
from pathlib import Path

from llmsim.errors import ProfileError


class CsvTable:
    """A parsed CSV file: header, rows of cells and the 1-based file line of each row.

    Attributes:
        path: the file read.
        header: column names.
        rows: cell strings per data row.
        lines: file line number of each row (the header is line 1).
    """

    __slots__ = ("path", "header", "rows", "lines", "_index")

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

    def column(self, name: str, parse) -> list:
        """Parse every cell of column ``name`` with ``parse(cell)``.

        Raises:
            ProfileError: missing column or a cell ``parse`` rejects (file, line, field).
        """
        j = self.col(name)
        out = []
        for row, line in zip(self.rows, self.lines):
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

    Raises:
        ProfileError: unreadable file, empty file, a row with the wrong number of cells, or
            a missing required column.
    """
    try:
        with open(path, newline="") as fh:
            reader = csv.reader(fh)
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
                    raise ProfileError(
                        f"expected {len(header)} cells, got {len(row)}",
                        path=path, line=reader.line_num,
                    )
                rows.append(row)
                lines.append(reader.line_num)
    except OSError as exc:
        raise ProfileError(f"cannot read: {exc}", path=path) from exc
    table = CsvTable(path, [h.strip() for h in header], rows, lines)
    for name in required:
        table.col(name)
    return table


def parse_int(cell: str) -> int:
    """An integer cell (``"16"``; ``"16.0"`` is accepted when integral)."""
    try:
        return int(cell)
    except ValueError:
        try:
            value = Decimal(cell)
        except InvalidOperation:
            raise ValueError("not an integer") from None
        if not value.is_finite() or value != value.to_integral_value():
            raise ValueError("not an integer") from None
        return int(value)


def parse_float(cell: str) -> float:
    """A finite decimal cell as a double."""
    value = float(cell)
    if not math.isfinite(value):
        raise ValueError("not a finite number")
    return value


def parse_float_or_nan(cell: str) -> float:
    """Like :func:`parse_float`, but an empty cell is NaN (a value the source left blank)."""
    return math.nan if cell.strip() == "" else parse_float(cell)


def scaled_to_ns(exponent: int):
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
        return float(value.scaleb(exponent))

    return parse


def scaled_to_ns_or_nan(exponent: int):
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
