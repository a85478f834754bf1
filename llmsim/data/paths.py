"""Resolve dataset paths from ``LLMSIM_DATA_DIR`` or the user cache."""

from __future__ import annotations

import os
from pathlib import Path

from llmsim.errors import DataNotFoundError

ENV_VAR = "LLMSIM_DATA_DIR"


def user_cache_dir() -> Path:
    """Per-user data cache: ``$XDG_CACHE_HOME/llmsim/data`` or ``~/.cache/llmsim/data``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "llmsim" / "data"


def data_dirs() -> list[Path]:
    """Directories searched for data, in priority order."""
    dirs: list[Path] = []
    env = os.environ.get(ENV_VAR)
    if env:
        dirs.append(Path(env).expanduser())
    dirs.append(user_cache_dir())
    return dirs


def dataset_path(relpath: str | Path, *, dataset: str | None = None) -> Path:
    """Return the absolute path of ``relpath`` inside the first data dir that has it.

    Args:
        relpath: path relative to the data root, e.g.
            ``"llmservingsim/workloads/sharegpt-llama-3.1-8b-300-sps10.jsonl"``.
        dataset: catalog name for the error message; defaults to the first path component.

    Raises:
        DataNotFoundError: no searched directory holds ``relpath``.
    """
    rel = Path(relpath)
    if rel.is_absolute():
        if rel.exists():
            return rel
        raise DataNotFoundError(dataset or rel.name, str(rel), [])
    dirs = data_dirs()
    for d in dirs:
        candidate = d / rel
        if candidate.exists():
            return candidate
    raise DataNotFoundError(dataset or rel.parts[0], str(rel), dirs)
