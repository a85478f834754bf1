"""Resolve dataset paths: ``LLMSIM_DATA_DIR``, then the user cache, then the embedded default.

Search order for a path relative to the data root (e.g.
``llmservingsim/workloads/sharegpt-llama-3.1-8b-300-sps10.jsonl``):

1. ``$LLMSIM_DATA_DIR`` when set;
2. the per-user cache that ``llmsim data pull`` fills (:func:`user_cache_dir`);
3. the **embedded default** shipped inside the package (``llmsim/data/embedded/``, listed in
   its ``index.yaml``): a compact copy of the few files the main job reads, so it runs on a
   fresh clone with no network. An embedded entry may be stored in another form than the
   original (a ``.pb`` import of a profile bundle, a ``.gz`` of a trace); the readers accept
   both forms and give identical results (tested).

A path found nowhere raises :class:`~llmsim.errors.DataNotFoundError` whose hint names the
catalog dataset that really holds the path (or says that none does).
"""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path

import yaml

from llmsim.errors import DataNotFoundError

ENV_VAR = "LLMSIM_DATA_DIR"
EMBEDDED_DIR = Path(__file__).with_name("embedded")
"""The embedded default data shipped with the package."""

log = logging.getLogger(__name__)


def user_cache_dir() -> Path:
    """Per-user data cache: ``$XDG_CACHE_HOME/llmsim/data`` or ``~/.cache/llmsim/data``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "llmsim" / "data"


def data_dirs() -> list[Path]:
    """Data directories searched, in priority order (the embedded default is searched after
    these, by :func:`embedded_path`)."""
    dirs: list[Path] = []
    env = os.environ.get(ENV_VAR)
    if env:
        dirs.append(Path(env).expanduser())
    dirs.append(user_cache_dir())
    return dirs


@functools.cache
def embedded_index() -> dict[str, Path]:
    """Data-root path -> embedded file, from ``embedded/index.yaml`` (empty when absent)."""
    index = EMBEDDED_DIR / "index.yaml"
    if not index.is_file():
        return {}
    raw = yaml.safe_load(index.read_text(encoding="utf-8")) or {}
    return {str(e["path"]): EMBEDDED_DIR / str(e["file"]) for e in raw.get("entries", ())}


def embedded_path(relpath: str | Path) -> Path | None:
    """The embedded copy standing in for data-root path ``relpath``, or None.

    A path inside an embedded directory entry (e.g. ``.../Llama-3.1-8B/vllm/meta.json``)
    resolves to the file inside the embedded directory.
    """
    rel = Path(relpath).as_posix().rstrip("/")
    for key, target in embedded_index().items():
        if rel == key:
            return target if target.exists() else None
        if rel.startswith(key + "/") and target.is_dir():
            candidate = target / rel[len(key) + 1:]
            return candidate if candidate.exists() else None
    return None


def _owner_hint(rel: Path) -> tuple[str, str | None]:
    """``(dataset name, hint)`` for a missing path: the catalog dataset holding it."""
    from llmsim.data.catalog import load_catalog

    first = rel.parts[0] if rel.parts else str(rel)
    try:
        catalog = load_catalog()
    except Exception:  # the hint must never hide the real error
        return first, None
    text = rel.as_posix().rstrip("/")
    for ds in catalog.datasets.values():
        if any(f.path == text or f.path.startswith(text + "/") for f in ds.files):
            return ds.name, f"Get it with `llmsim data pull {ds.name}`"
    if first in catalog.traces:
        t = catalog.traces[first]
        return t.dataset, (f"'{first}' is a named trace: its file is '{t.path}' (format "
                           f"{t.format}); get it with `llmsim data pull {t.dataset}`")
    if first in catalog.datasets:
        return first, (f"dataset '{first}' has no file '{text}' (`llmsim data list` shows "
                       f"its files)")
    return first, ("no dataset of llmsim's catalog holds this path (`llmsim data list` "
                   "shows the catalog)")


def dataset_path(relpath: str | Path, *, dataset: str | None = None) -> Path:
    """Return the absolute path of ``relpath`` inside the first data dir that has it.

    Args:
        relpath: path relative to the data root, e.g.
            ``"llmservingsim/workloads/sharegpt-llama-3.1-8b-300-sps10.jsonl"``.
        dataset: catalog name for the error message; defaults to the catalog dataset that
            lists ``relpath``.

    Raises:
        DataNotFoundError: no data dir holds ``relpath`` and no embedded copy stands in.
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
    embedded = embedded_path(rel)
    if embedded is not None:
        log.info("using the embedded default copy of %s (%s)", rel, embedded)
        return embedded
    if dataset is not None:
        raise DataNotFoundError(dataset, str(rel), dirs)
    name, hint = _owner_hint(rel)
    raise DataNotFoundError(name, str(rel), dirs, hint=hint)
