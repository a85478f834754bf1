"""Reading YAML input files safely, with errors that name the file and line.

Every YAML file llmsim reads (experiment files, profile bundles' ``meta.yaml``, adapter
hardware and array files) and every YAML value given on the command line (``--set``) goes
through :func:`load_yaml_document` / :func:`read_yaml` / :func:`loads_yaml`, which apply the
same limits:

* bytes come from :func:`llmsim.safeio.read_text` (regular files only, UTF-8 with the line
  and offset of the first bad byte) with a size ceiling of :data:`MAX_YAML_BYTES`;
* PyYAML's *safe* loader (no Python object tags);
* **alias expansion is bounded**: at most :data:`MAX_YAML_ALIASES` alias nodes (``*name``),
  and the document expanded through its aliases may hold at most
  :data:`MAX_YAML_ALIAS_EXPANSION` nodes more than it has written out, so a "billion laughs"
  document (nine levels of nine aliases: 10^9 nodes from 100 lines) is refused after
  composition, before anything walks or prints the expanded value; recursive aliases
  (``&a [*a]``) are refused too;
* nesting deeper than :data:`MAX_YAML_DEPTH` is refused before PyYAML's recursive composer
  can exhaust the stack;
* **duplicate keys** in one mapping are refused (PyYAML silently keeps the last one);
* scalars PyYAML cannot build (an integer of more digits than Python converts) are refused.

Figures: the largest YAML file in the data is 2.3 KB (a profile bundle's ``meta.yaml``, no
aliases, nesting 3); experiment files are ~2 KB, nest 3 levels and use no aliases.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import yaml

from llmsim.errors import ConfigError
from llmsim.safeio import read_text

__all__ = [
    "MAX_YAML_ALIASES",
    "MAX_YAML_ALIAS_EXPANSION",
    "MAX_YAML_BYTES",
    "MAX_YAML_DEPTH",
    "YamlDocument",
    "load_yaml_document",
    "loads_yaml",
    "read_yaml",
]

MAX_YAML_BYTES = 4 * 2**20
"""Ceiling on one YAML file, bytes (4 MiB: ~1,800x the largest YAML file in the data)."""

MAX_YAML_ALIASES = 256
"""Most alias nodes (``*name``) one document may contain."""

MAX_YAML_ALIAS_EXPANSION = 10_000
"""Most nodes alias expansion may add to a document (expanded size - written size)."""

MAX_YAML_DEPTH = 64
"""Deepest nesting of mappings/sequences accepted (the same bound as JSON input)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class YamlDocument:
    """A parsed YAML document.

    Attributes:
        data: the parsed value (``None`` for an empty document).
        text: the decoded text.
        lines: dotted key path (``engine.max_num_seqs``; sequence items as ``key.0``) ->
            1-based line of the key (or item) in ``text``.
    """

    data: Any
    text: str
    lines: dict[str, int] = field(default_factory=dict)


class _Refused(Exception):
    """A limit was hit while composing; carries the 1-based line."""

    def __init__(self, message: str, line: int | None) -> None:
        super().__init__(message)
        self.line = line


def _event_line(event: yaml.Event | None) -> int | None:
    """1-based line where ``event`` starts (None when PyYAML gives no mark)."""
    mark = None if event is None else event.start_mark
    return None if mark is None else mark.line + 1


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader with alias and depth bounds applied while composing."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._num_aliases = 0
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        # types-PyYAML leaves Parser.peek_event unannotated; it returns the next event
        peek = cast(Callable[[], "yaml.Event | None"], self.peek_event)
        event = peek()
        if isinstance(event, yaml.AliasEvent):
            self._num_aliases += 1
            if self._num_aliases > MAX_YAML_ALIASES:
                raise _Refused(f"more than {MAX_YAML_ALIASES} aliases (*name): alias "
                               "expansion is bounded", _event_line(event))
        self._depth += 1
        if self._depth > MAX_YAML_DEPTH:
            raise _Refused(f"nests deeper than {MAX_YAML_DEPTH} levels", _event_line(event))
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _check_expansion(root: yaml.Node) -> None:
    """Refuse recursive aliases and expansion beyond :data:`MAX_YAML_ALIAS_EXPANSION`.

    Expanded sizes are memoized per node, so this costs O(written nodes).
    """
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()
    written = 0

    def size(node: yaml.Node) -> int:
        nonlocal written
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in open_nodes:
            raise _Refused("recursive alias (a node contains itself)", node.start_mark.line + 1)
        open_nodes.add(key)
        written += 1
        total = 1
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                total += size(k) + size(v)
        elif isinstance(node, yaml.SequenceNode):
            for v in node.value:
                total += size(v)
        open_nodes.discard(key)
        sizes[key] = total
        if total - written > MAX_YAML_ALIAS_EXPANSION:
            raise _Refused(f"aliases expand the document by more than "
                           f"{MAX_YAML_ALIAS_EXPANSION} nodes (alias expansion is bounded)",
                           node.start_mark.line + 1)
        return total

    size(root)


def _line_map(root: yaml.Node) -> dict[str, int]:
    """Dotted key -> 1-based line; refuses duplicate keys (bounded by the expansion check)."""
    lines: dict[str, int] = {}

    def walk(node: yaml.Node, prefix: str) -> None:
        if isinstance(node, yaml.MappingNode):
            seen: set[str] = set()
            for k, v in node.value:
                name = str(k.value) if isinstance(k, yaml.ScalarNode) else "?"
                if isinstance(k, yaml.ScalarNode) and name != "<<":
                    if name in seen:
                        raise _Refused(f"duplicate key {name!r}", k.start_mark.line + 1)
                    seen.add(name)
                key = f"{prefix}{name}"
                lines.setdefault(key, k.start_mark.line + 1)
                walk(v, key + ".")
        elif isinstance(node, yaml.SequenceNode):
            for i, v in enumerate(node.value):
                key = f"{prefix}{i}"
                lines.setdefault(key, v.start_mark.line + 1)
                walk(v, key + ".")

    walk(root, "")
    return lines


def _parse(text: str) -> tuple[Any, dict[str, int]]:
    """Compose, check, map lines, construct. Raises ``_Refused`` or ``yaml.YAMLError``."""
    loader = _BoundedLoader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return None, {}
        _check_expansion(root)
        lines = _line_map(root)
        try:
            return loader.construct_document(root), lines
        except (ValueError, OverflowError, RecursionError) as exc:  # e.g. a 5,000-digit int
            raise _Refused(f"cannot build a value: {str(exc)[:200]}", None) from None
    except RecursionError:
        raise _Refused(f"nests deeper than {MAX_YAML_DEPTH} levels", None) from None
    finally:
        loader.dispose()


def _yaml_error_message(exc: yaml.YAMLError) -> tuple[str, int | None]:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None)
    message = str(problem) if problem else str(exc).splitlines()[0]
    return message[:300], (mark.line + 1 if mark is not None else None)


def loads_yaml(text: str, *, path: str | Path | None = None, what: str = "YAML",
               error: type[Exception] = ConfigError) -> YamlDocument:
    """Parse YAML text with the limits of the module doc.

    Args:
        text: the document.
        path: the file it came from, for messages.
        what: what the document is, for messages.
        error: the located error class to raise (``ConfigError``, ``ProfileError``, ...).

    Raises:
        error: invalid YAML (with its line), or a limit of the module doc is exceeded.
    """
    try:
        data, lines = _parse(text)
    except _Refused as exc:
        raise _located(error, f"{what}: {exc}", path, exc.line) from None
    except yaml.YAMLError as exc:
        message, line = _yaml_error_message(exc)
        raise _located(error, f"invalid YAML: {message}", path, line) from None
    return YamlDocument(data=data, text=text, lines=lines)


def load_yaml_document(path: str | Path, *, what: str, error: type[Exception] = ConfigError,
                       max_bytes: int = MAX_YAML_BYTES) -> YamlDocument:
    """Read and parse a YAML file, keeping the line of every key.

    Args:
        path: the file.
        what: what the file is, for messages (e.g. ``"experiment file"``).
        error: the located error class to raise.
        max_bytes: refuse larger files, bytes.

    Raises:
        error: not a regular file, unreadable, too large, not UTF-8, invalid YAML, or a
            limit of the module doc is exceeded (names the file and line).
    """
    text = read_text(path, what=what, error=error, max_bytes=max_bytes)
    return loads_yaml(text, path=path, what=what, error=error)


def read_yaml(path: str | Path, *, what: str, error: type[Exception] = ConfigError
              ) -> tuple[Any, str]:
    """Read and parse a YAML file (see :func:`load_yaml_document`).

    Args:
        path: the file.
        what: what the file is, for messages (e.g. ``"experiment file"``).
        error: the located error class to raise (``ConfigError``, ``ProfileError``, ...).

    Returns:
        ``(parsed document, raw text)``; the text lets callers map keys to line numbers.

    Raises:
        error: as :func:`load_yaml_document`.
    """
    doc = load_yaml_document(path, what=what, error=error)
    return doc.data, doc.text


def _located(error: type[Exception], message: str, path: str | Path | None,
             line: int | None) -> Exception:
    try:
        return error(message, path=path, line=line)  # type: ignore[call-arg]
    except TypeError:  # an error class that is not located
        where = f"{path}:{line}: " if line else (f"{path}: " if path else "")
        return error(where + message)
