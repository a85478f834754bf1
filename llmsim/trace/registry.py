"""Trace format registry: ``load_trace(fmt, path, **options)``.

One plain mapping, :data:`LOADERS`, from format name to a function
``(path, **options) -> TraceFrame``. Adding a format = one module + one entry here.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum
from pathlib import Path

from llmsim.data.paths import dataset_path
from llmsim.errors import ConfigError, TraceFormatError
from llmsim.trace.frame import TraceFrame
from llmsim.trace.record import Trace


class TraceFormat(StrEnum):
    """Trace formats llmsim reads."""

    LLMSERVINGSIM = "llmservingsim"
    AZURE = "azure"
    MOONCAKE = "mooncake"
    BURSTGPT = "burstgpt"
    QWEN_BAILIAN = "qwen_bailian"
    VIDUR = "vidur"
    CSV = "csv"


def _loaders() -> dict[TraceFormat, Callable[..., TraceFrame]]:
    from llmsim.trace.azure import load_azure_frame
    from llmsim.trace.burstgpt import load_burstgpt_frame
    from llmsim.trace.generic_csv import load_csv_frame, load_vidur_frame
    from llmsim.trace.llmservingsim import load_llmservingsim_frame
    from llmsim.trace.mooncake import load_mooncake_frame
    from llmsim.trace.qwen_bailian import load_qwen_bailian_frame

    return {
        TraceFormat.LLMSERVINGSIM: load_llmservingsim_frame,
        TraceFormat.AZURE: load_azure_frame,
        TraceFormat.MOONCAKE: load_mooncake_frame,
        TraceFormat.BURSTGPT: load_burstgpt_frame,
        TraceFormat.QWEN_BAILIAN: load_qwen_bailian_frame,
        TraceFormat.VIDUR: load_vidur_frame,
        TraceFormat.CSV: load_csv_frame,
    }


def parse_format(fmt: str | TraceFormat) -> TraceFormat:
    """Parse a format name (case-insensitive, ``-`` accepted for ``_``).

    Raises:
        ConfigError: unknown format; the message lists the known ones.
    """
    try:
        return TraceFormat(str(fmt).strip().lower().replace("-", "_"))
    except ValueError:
        known = ", ".join(f.value for f in TraceFormat)
        raise ConfigError(f"unknown trace format {fmt!r} (known: {known})", field="format") from None


def resolve_trace_path(path: str | Path) -> Path:
    """An existing path as given, else the path resolved in the data dirs.

    Raises:
        DataNotFoundError: neither exists.
        TraceFormatError: the path is a directory, not a trace file.
    """
    p = Path(path).expanduser()
    if not p.exists():
        p = dataset_path(p)
    if p.is_dir():
        raise TraceFormatError("is a directory; expected a trace file", path=p)
    return p


def load_trace_frame(fmt: str | TraceFormat, path: str | Path, **options: object) -> TraceFrame:
    """Load a trace file in columnar form (see :func:`load_trace`)."""
    loader = _loaders()[parse_format(fmt)]
    try:
        return loader(resolve_trace_path(path), **options)
    except TypeError as exc:
        if "unexpected keyword argument" in str(exc):
            raise ConfigError(f"trace format {fmt!r}: {exc}", field="options") from None
        raise


def load_trace(fmt: str | TraceFormat, path: str | Path, **options: object) -> Trace:
    """Load a trace file of format ``fmt`` into a :class:`Trace`.

    Args:
        fmt: a :class:`TraceFormat` name (``llmservingsim``, ``azure``, ``mooncake``,
            ``burstgpt``, ``qwen_bailian``, ``vidur``, ``csv``).
        path: the file; a relative path that does not exist is looked up in the data dirs
            (``LLMSIM_DATA_DIR``, then the user cache).
        **options: format options; all formats take ``skip_bad_rows`` and ``sort``.

    Raises:
        ConfigError: unknown format or option.
        DataNotFoundError: the file is in no data dir.
        TraceFormatError: malformed content (file, line, field).
    """
    return load_trace_frame(fmt, path, **options).to_trace()


def detect_format(path: str | Path) -> TraceFormat:
    """Guess a trace file's format from its header (CSV) or first object's keys (JSONL).

    Raises:
        ConfigError: the format cannot be recognized (pass it explicitly).
    """
    import json

    p = Path(path)
    with p.open("rb") as f:
        first = f.readline().decode("utf-8", errors="replace").strip()
    if first.startswith("{"):
        try:
            keys = set(json.loads(first))
        except json.JSONDecodeError:
            keys = set()
        if "arrival_time_ns" in keys:
            return TraceFormat.LLMSERVINGSIM
        if "chat_id" in keys:
            return TraceFormat.QWEN_BAILIAN
        if {"timestamp", "input_length", "hash_ids"} <= keys:
            return TraceFormat.MOONCAKE
    else:
        header = {c.strip() for c in first.split(",")}
        if {"TIMESTAMP", "ContextTokens", "GeneratedTokens"} <= header:
            return TraceFormat.AZURE
        if {"Timestamp", "Request tokens", "Response tokens"} <= header:
            return TraceFormat.BURSTGPT
        if {"arrived_at", "num_prefill_tokens", "num_decode_tokens"} <= header:
            return TraceFormat.VIDUR
        if "chat_id" in header:
            return TraceFormat.QWEN_BAILIAN
    raise ConfigError(f"cannot tell the trace format of {p}; pass --format", path=p, field="format")
