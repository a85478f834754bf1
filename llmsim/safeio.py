"""Reading untrusted input files safely: one place for the limits every reader shares.

Every llmsim reader (traces, experiment files, model configs, profiles, measured runs) gets
its bytes and JSON through these helpers, so the same hostile inputs fail the same way,
with an :class:`~llmsim.errors.LlmsimError` subclass naming the file, line and field:

* only **regular files** are read (``/dev/zero``, FIFOs and directories are refused before a
  single byte is read, so a device cannot be read until memory runs out);
* a **size ceiling** per read (:data:`MAX_INPUT_BYTES` unless the caller passes another);
* **gzip** files (name ending in ``.gz``) are decompressed transparently, with the same
  ceiling applied to the decompressed size (so a gzip bomb stops at the ceiling);
* **UTF-8** decoding with the byte offset of the first bad byte;
* **JSON** without ``NaN``/``Infinity`` constants, with a nesting-depth bound checked before
  parsing (Python's parser raises ``RecursionError`` on deep nesting), and with integers
  bounded to signed 64 bits (:data:`INT64_MAX`), which is what the simulator's integer
  nanosecond clock and token counters hold.

Figures: :data:`MAX_JSON_DEPTH` = 64 is far above any legitimate input here (traces and
measured runs nest at most 4 levels, HF model configs at most 3, ``vllm bench`` results 2).
"""

from __future__ import annotations

import json
import math
import os
import stat
import zlib
from pathlib import Path
from typing import Any

from llmsim.errors import ConfigError

__all__ = [
    "INT64_MAX",
    "MAX_INPUT_BYTES",
    "MAX_JSON_DEPTH",
    "check_finite",
    "check_int64",
    "json_depth_exceeds",
    "loads_json",
    "read_bytes",
    "read_text",
]

INT64_MAX = 2**63 - 1
"""Largest integer any input field may hold (signed 64-bit)."""

MAX_INPUT_BYTES = 8 * 2**30
"""Default ceiling on one input file, bytes (8 GiB: the largest public trace read here, the
Azure 2024 week-long conversation trace, is ~1.1 GB as CSV)."""

MAX_JSON_DEPTH = 64
"""Deepest ``[``/``{`` nesting accepted in one JSON document."""


def _check_regular(path: Path, error: type[Exception], what: str) -> os.stat_result:
    try:
        st = path.stat()
    except OSError as exc:
        raise _err(error, f"cannot read {what}: {exc.strerror or exc}", path) from None
    if not stat.S_ISREG(st.st_mode):
        kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file"
        raise _err(error, f"cannot read {what}: {kind} (only regular files are read)", path)
    return st


def _err(error: type[Exception], message: str, path: str | Path | None,
         line: int | None = None, field: str | None = None) -> Exception:
    try:
        return error(message, path=path, line=line, field=field)  # type: ignore[call-arg]
    except TypeError:  # an error class that is not located (e.g. CostModelUnavailable)
        where = f"{path}:{line}: " if line else (f"{path}: " if path else "")
        return error(where + message)


def read_bytes(path: str | Path, *, what: str, error: type[Exception] = ConfigError,
               max_bytes: int = MAX_INPUT_BYTES) -> bytes:
    """The whole content of a regular file (decompressed when its name ends in ``.gz``).

    Args:
        path: the file.
        what: what the file is, for messages (``"trace"``, ``"model config"``, ...).
        error: the located error class to raise.
        max_bytes: refuse files (or decompressed contents) larger than this, bytes.

    Raises:
        error: not a regular file, unreadable, larger than ``max_bytes``, or a corrupt
            gzip stream.
    """
    path = Path(path)
    st = _check_regular(path, error, what)
    if st.st_size > max_bytes:
        raise _err(error, f"{what} is {st.st_size} bytes, more than the {max_bytes}-byte "
                   "limit for one input file", path)
    try:
        with path.open("rb") as fh:
            data = fh.read(max_bytes + 1)
    except OSError as exc:
        raise _err(error, f"cannot read {what}: {exc.strerror or exc}", path) from None
    if len(data) > max_bytes:
        raise _err(error, f"{what} is larger than the {max_bytes}-byte limit", path)
    if path.name.endswith(".gz"):
        data = _gunzip(data, path=path, what=what, error=error, max_bytes=max_bytes)
    return data


def _gunzip(data: bytes, *, path: Path, what: str, error: type[Exception],
            max_bytes: int) -> bytes:
    """Decompress a (possibly multi-member) gzip stream, stopping at ``max_bytes``."""
    out: list[bytes] = []
    total = 0
    rest = data
    try:
        while rest:
            d = zlib.decompressobj(wbits=31)
            chunk = d.decompress(rest, max_bytes + 1 - total)
            total += len(chunk)
            out.append(chunk)
            if total > max_bytes or d.unconsumed_tail:
                raise _err(error, f"{what} decompresses to more than the {max_bytes}-byte "
                           "limit", path)
            if not d.eof:
                raise _err(error, f"{what} is a truncated gzip stream", path)
            rest = d.unused_data
    except zlib.error as exc:
        raise _err(error, f"{what} is not a valid gzip file: {exc}", path) from None
    return b"".join(out)


def read_text(path: str | Path, *, what: str, error: type[Exception] = ConfigError,
              max_bytes: int = MAX_INPUT_BYTES) -> str:
    """:func:`read_bytes` decoded as UTF-8 (a leading BOM is dropped).

    Raises:
        error: as :func:`read_bytes`, or the bytes are not UTF-8 (names the line and byte
            offset of the first bad byte).
    """
    data = read_bytes(path, what=what, error=error, max_bytes=max_bytes)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise _err(error, f"{what} is not UTF-8 text (bad byte 0x{data[exc.start]:02x} at "
                   f"offset {exc.start})", path, line) from None


def json_depth_exceeds(text: str, limit: int = MAX_JSON_DEPTH) -> bool:
    """True when ``text`` opens more than ``limit`` nested arrays/objects (strings skipped)."""
    depth = 0
    in_str = False
    escape = False
    for ch in text:
        if in_str:
            if escape:
                escape = False
            elif ch == "\\":
                escape = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch in "[{":
            depth += 1
            if depth > limit:
                return True
        elif ch in "]}":
            depth -= 1
    return False


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not a number")


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > 19 or abs(int(text)) > INT64_MAX:
        raise ValueError(f"integer {text[:24]}{'...' if len(text) > 24 else ''} is outside "
                         "the signed 64-bit range")
    return int(text)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:24]} overflows a 64-bit float")
    return value


def loads_json(text: str, *, path: str | Path | None = None, line: int | None = None,
               error: type[Exception] = ConfigError, what: str = "JSON") -> Any:
    """Parse one JSON document with llmsim's limits.

    Args:
        text: the document.
        path: the file it came from, for messages.
        line: the 1-based line the document starts on (JSONL rows), for messages.
        error: the located error class to raise.
        what: what the document is, for messages.

    Returns:
        The parsed value; every number in it is a finite float or an int within int64.

    Raises:
        error: invalid JSON (with line), ``NaN``/``Infinity``, numbers beyond int64 or
            float range, or nesting deeper than :data:`MAX_JSON_DEPTH`.
    """
    if json_depth_exceeds(text):
        raise _err(error, f"{what} nests deeper than {MAX_JSON_DEPTH} levels", path, line)
    try:
        return json.loads(text, parse_constant=_no_constants, parse_int=_bounded_int,
                          parse_float=_finite_float)
    except json.JSONDecodeError as exc:
        at = (line or 1) + exc.lineno - 1
        raise _err(error, f"invalid {what}: {exc.msg} (column {exc.colno})", path, at) from None
    except (ValueError, RecursionError) as exc:
        raise _err(error, f"invalid {what}: {exc}", path, line) from None


def check_finite(value: float, *, field: str, path: str | Path | None = None,
                 line: int | None = None, error: type[Exception] = ConfigError,
                 minimum: float | None = None, maximum: float | None = None) -> float:
    """``value`` as a float, refusing NaN, infinities and values outside [minimum, maximum].

    Raises:
        error: not a real number, not finite, or out of bounds (names the field).
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _err(error, f"must be a number, got {value!r}", path, line, field)
    v = float(value)
    if not math.isfinite(v):
        raise _err(error, f"must be finite, got {value!r}", path, line, field)
    if minimum is not None and v < minimum:
        raise _err(error, f"must be >= {minimum}, got {value!r}", path, line, field)
    if maximum is not None and v > maximum:
        raise _err(error, f"must be <= {maximum}, got {value!r}", path, line, field)
    return v


def check_int64(value: Any, *, field: str, path: str | Path | None = None,
                line: int | None = None, error: type[Exception] = ConfigError,
                minimum: int = 0) -> int:
    """``value`` as an int in ``[minimum, INT64_MAX]`` (bools and floats refused).

    Raises:
        error: not an integer, or out of range (names the field).
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise _err(error, f"must be an integer, got {value!r}", path, line, field)
    if value < minimum or value > INT64_MAX:
        raise _err(error, f"must be an integer in [{minimum}, {INT64_MAX}], got {value!r}",
                   path, line, field)
    return value
