"""Reading YAML input files with errors that name the file and line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from llmsim.errors import ConfigError


def read_yaml(path: str | Path, *, what: str, error: type[ConfigError] | Any = ConfigError
              ) -> tuple[Any, str]:
    """Read and parse a YAML file.

    Args:
        path: the file.
        what: what the file is, for messages (e.g. ``"experiment file"``).
        error: the located error class to raise (``ConfigError``, ``ProfileError``, ...).

    Returns:
        ``(parsed document, raw text)``; the text lets callers map keys to line numbers.

    Raises:
        error: the file cannot be read, or is not valid YAML (with the line of the problem).
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise error(f"cannot read {what}: {exc}", path=path) from exc
    try:
        return yaml.safe_load(text), text
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise error(f"invalid YAML: {exc}", path=path,
                    line=mark.line + 1 if mark else None) from exc
