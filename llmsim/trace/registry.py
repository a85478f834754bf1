"""Trace format registry: ``load_trace(fmt, path, **options)``.

One plain mapping, :data:`LOADERS`, from format name to a function
``(path, **options) -> TraceFrame``. Adding a format = one module + one entry here.
"""

from __future__ import annotations

import importlib
import inspect
import json
import math
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from enum import StrEnum
from pathlib import Path

from llmsim.data.paths import dataset_path
from llmsim.errors import ConfigError, TraceFormatError
from llmsim.trace.frame import TraceFrame
from llmsim.trace.inputs import check_trace_file
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
    WORKLOAD = "workload"  #: a workload spec YAML (llmsim.workloads), generated on load


_LOADER_PATHS: dict[TraceFormat, tuple[str, str]] = {
    TraceFormat.LLMSERVINGSIM: ("llmsim.trace.llmservingsim", "load_llmservingsim_frame"),
    TraceFormat.AZURE: ("llmsim.trace.azure", "load_azure_frame"),
    TraceFormat.MOONCAKE: ("llmsim.trace.mooncake", "load_mooncake_frame"),
    TraceFormat.BURSTGPT: ("llmsim.trace.burstgpt", "load_burstgpt_frame"),
    TraceFormat.QWEN_BAILIAN: ("llmsim.trace.qwen_bailian", "load_qwen_bailian_frame"),
    TraceFormat.VIDUR: ("llmsim.trace.generic_csv", "load_vidur_frame"),
    TraceFormat.CSV: ("llmsim.trace.generic_csv", "load_csv_frame"),
    TraceFormat.WORKLOAD: ("llmsim.workloads.spec", "load_workload_frame"),
}


class _LazyLoaders(Mapping[TraceFormat, Callable[..., TraceFrame]]):
    """Format -> loader, importing a loader's module on first lookup (a replay of one
    format does not import the other six: ~30-50 ms of start-up, measured)."""

    def __getitem__(self, kind: TraceFormat) -> Callable[..., TraceFrame]:
        module, name = _LOADER_PATHS[kind]
        return getattr(importlib.import_module(module), name)  # type: ignore[no-any-return]

    def __iter__(self) -> Iterator[TraceFormat]:
        return iter(_LOADER_PATHS)

    def __len__(self) -> int:
        return len(_LOADER_PATHS)


def _loaders() -> Mapping[TraceFormat, Callable[..., TraceFrame]]:
    return _LazyLoaders()


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
        TraceFormatError: the path is not a readable regular file (a directory, a device
            such as ``/dev/zero``, a FIFO), or is not a valid path (e.g. a NUL byte).
    """
    if not isinstance(path, (str, Path)):
        raise ConfigError(f"trace path must be a string, got {path!r}", field="path")
    try:
        p = Path(path).expanduser()
        if not p.exists():
            p = dataset_path(p)
    except (OSError, ValueError, RuntimeError) as exc:
        raise TraceFormatError(f"not a usable path: {exc}", path=str(path)) from None
    if p.is_dir():
        raise TraceFormatError("is a directory; expected a trace file", path=p)
    return check_trace_file(p)


def check_options(fmt: TraceFormat, loader: Callable[..., TraceFrame], options: dict[str, object]) -> None:
    """Refuse unknown option names and values of the wrong type for ``loader``.

    Types come from the loader's annotations: ``bool`` takes only ``true``/``false``, ``int``
    an integer (not a bool), ``float`` a finite number, ``str`` a string, ``dict[str, str]`` a
    mapping of strings; ``X | None`` also takes null.

    Raises:
        ConfigError: unknown option (the message lists the known ones) or wrong type; the
            field is ``options.<name>``.
    """
    params = list(inspect.signature(loader).parameters.values())[1:]
    known = {p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY}
    hints = typing.get_type_hints(loader)
    for name, value in options.items():
        if name not in known:
            raise ConfigError(f"trace format {fmt.value!r}: unexpected keyword option {name!r} "
                              f"(known: {', '.join(sorted(known))})", field=f"options.{name}")
        hint = hints.get(name)
        if hint is not None and not _matches(value, hint):
            raise ConfigError(f"must be {_describe(hint)}, got {value!r}"[:300], field=f"options.{name}")


def _matches(value: object, hint: object) -> bool:
    args = typing.get_args(hint)
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return any(_matches(value, a) for a in args)
    if hint is type(None):
        return value is None
    if hint is bool:
        return type(value) is bool
    if hint is int:
        return type(value) is int
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if hint is str:
        return type(value) is str
    if typing.get_origin(hint) is dict:
        kt, vt = args
        return isinstance(value, dict) and all(_matches(k, kt) and _matches(v, vt) for k, v in value.items())
    return True


def _describe(hint: object) -> str:
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return " or ".join(_describe(a) for a in typing.get_args(hint))
    names = {bool: "true or false", int: "an integer", float: "a finite number", str: "a string",
             type(None): "null"}
    if hint in names:
        return names[hint]
    if typing.get_origin(hint) is dict:
        return "a mapping of strings to strings"
    return str(hint)


def load_trace_frame(fmt: str | TraceFormat, path: str | Path, /, **options: object) -> TraceFrame:
    """Load a trace file in columnar form (see :func:`load_trace`).

    Raises:
        ConfigError: unknown format, unknown option or an option of the wrong type.
        DataNotFoundError: the file is in no data dir.
        TraceFormatError: not a regular file, or malformed content (file, line, field).
    """
    kind = parse_format(fmt)
    loader = _loaders()[kind]
    check_options(kind, loader, options)
    return loader(resolve_trace_path(path), **options)


def load_trace(fmt: str | TraceFormat, path: str | Path, /, **options: object) -> Trace:
    """Load a trace file of format ``fmt`` into a :class:`Trace`.

    Args:
        fmt: a :class:`TraceFormat` name (``llmservingsim``, ``azure``, ``mooncake``,
            ``burstgpt``, ``qwen_bailian``, ``vidur``, ``csv``).
        path: the file; a relative path that does not exist is looked up in the data dirs
            (``LLMSIM_DATA_DIR``, then the user cache).
        **options: format options; all formats take ``skip_bad_rows`` and ``sort``.

    Raises:
        ConfigError: unknown format, unknown option or an option of the wrong type.
        DataNotFoundError: the file is in no data dir.
        TraceFormatError: malformed content (file, line, field).
    """
    return load_trace_frame(fmt, path, **options).to_trace()


def detect_format(path: str | Path) -> TraceFormat:
    """Guess a trace file's format from its header (CSV) or first object's keys (JSONL).

    Only the first line is read (at most 1 MiB of it).

    Raises:
        ConfigError: the format cannot be recognized (pass it explicitly).
        TraceFormatError: not a regular file.
    """
    p = check_trace_file(path)
    try:
        with p.open("rb") as f:
            first = f.readline(_DETECT_BYTES).decode("utf-8", errors="replace").strip()
    except OSError as exc:
        raise TraceFormatError(f"cannot read trace: {exc.strerror or exc}", path=p) from None
    if first.startswith("{"):
        try:  # lenient: only the keys matter here; the loader applies the limits
            obj = json.loads(first)
        except (ValueError, RecursionError):
            obj = {}
        keys = set(obj) if isinstance(obj, dict) else set()
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


_DETECT_BYTES = 1 << 20
