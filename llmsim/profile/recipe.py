"""Profile recipes: a small YAML file that says how to build a profile from the data.

An experiment's ``profile`` may name a recipe (``*.yaml``) instead of a ``.pb`` file or a
bundle directory; :func:`llmsim.profile.io.load_profile` then builds the profile on first use
and keeps it in the on-disk profile cache (``$XDG_CACHE_HOME/llmsim/profiles``, off with
``LLMSIM_NO_CACHE=1``), so examples reference generated profiles without committing them.
The one source today is AIConfigurator's kernel database
(:func:`llmsim.profile.importers.aiconfigurator.import_aiconfigurator`, docs/profile-sources.md)::

    source: aiconfigurator
    database: aiconfigurator            # data-dir path of the database root
    system: h100_sxm
    model: llmservingsim/configs/model/meta-llama/Llama-3.1-70B.json
    tp: [2, 4]
    vllm_version: 0.19.0                # optional: newest with a GEMM table
    moe_distribution: balanced          # optional
    source_commit: 095f58a51c4ca8e61b66ec108d86f223f8d559ce   # optional, recorded

Paths resolve next to the recipe, then in the data directories. The cache key is the SHA-256
of the recipe's bytes, the importer's code (:func:`llmsim.profile.io._code_digest` and the
modules of ``_RECIPE_MODULES``: the AIConfigurator importer and the step decomposition), the
model config's bytes and the path, size and modification time of every file of the system's
database directory (hashing their bytes, ~100 MB of parquet, would cost more than the
import).

Raises (from :func:`load_recipe`): :class:`~llmsim.errors.ProfileError` naming the recipe,
line and field for a malformed recipe; the importer's errors for data it cannot answer.
"""

from __future__ import annotations

import hashlib
import importlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmsim.errors import DataNotFoundError, ProfileError
from llmsim.v1 import profile_pb2 as pb

__all__ = ["ProfileRecipe", "is_recipe", "load_recipe", "read_recipe", "recipe_cache_key"]

RECIPE_SUFFIXES = (".yaml", ".yml")
"""File suffixes :func:`llmsim.profile.io.load_profile` reads as a recipe."""

SOURCES = ("aiconfigurator",)
"""Recipe sources llmsim can build."""

_RECIPE_MODULES = ("llmsim.profile.recipe", "llmsim.profile.importers.aiconfigurator",
                   "llmsim.costmodel.decompose", "llmsim.cluster.parallel")

_KEYS = {"source", "database", "system", "model", "tp", "vllm_version", "moe_distribution",
         "source_commit"}


@dataclass(frozen=True, slots=True, kw_only=True)
class ProfileRecipe:
    """A parsed recipe (module docstring).

    Attributes:
        path: the recipe file.
        source: ``"aiconfigurator"``.
        database: the database root, resolved.
        system: AIConfigurator system name.
        model: the HF ``config.json``, resolved.
        tp: TP degrees to build.
        vllm_version: vLLM version directory, or None (newest).
        moe_distribution: MoE routing distribution of the rows.
        source_commit: the database's revision (recorded in the profile).
    """

    path: Path
    source: str
    database: Path
    system: str
    model: Path
    tp: tuple[int, ...]
    vllm_version: str | None
    moe_distribution: str
    source_commit: str


def is_recipe(path: Path) -> bool:
    """True when ``path`` is a regular file with a recipe suffix."""
    return path.suffix.lower() in RECIPE_SUFFIXES and path.is_file()


def _resolve(value: str, recipe: Path, field: str, line: int | None) -> Path:
    from llmsim.data.paths import dataset_path

    p = Path(value).expanduser()
    if p.is_absolute():
        if p.exists():
            return p
    else:
        local = recipe.parent / p
        if local.exists():
            return local
        try:
            return dataset_path(p)
        except DataNotFoundError:
            pass
    raise ProfileError(f"not found next to the recipe or in the data directories: {value}",
                       path=recipe, line=line, field=field)


def read_recipe(path: str | Path) -> ProfileRecipe:
    """Parse and check a recipe file.

    Raises:
        ProfileError: unreadable, not a mapping, unknown or missing keys, bad values, or a
            path that does not resolve (file, line, field).
    """
    from llmsim.yamlfile import load_yaml_document

    path = Path(path)
    doc = load_yaml_document(path, what="profile recipe", error=ProfileError)
    data: Any = doc.data

    def bad(field: str, message: str) -> ProfileError:
        return ProfileError(message, path=path, line=doc.lines.get(field), field=field)

    if not isinstance(data, dict):
        raise ProfileError("a profile recipe must be a mapping", path=path, line=1)
    for key in data:
        if key not in _KEYS:
            raise bad(str(key), f"unknown key (known: {', '.join(sorted(_KEYS))})")
    for key in ("source", "database", "system", "model", "tp"):
        if key not in data or data[key] is None:
            raise ProfileError("required key missing", path=path, line=1, field=key)
    if data["source"] not in SOURCES:
        raise bad("source", f"unknown source {data['source']!r} (known: {', '.join(SOURCES)})")
    for key in ("database", "system", "model", "vllm_version", "moe_distribution",
                "source_commit"):
        if key in data and data[key] is not None and not isinstance(data[key], str | int | float):
            raise bad(key, f"must be a string, got {data[key]!r}")
    tp = data["tp"]
    tps = tuple(tp) if isinstance(tp, list) else (tp,)
    if not tps or any(isinstance(t, bool) or not isinstance(t, int) or t < 1 for t in tps):
        raise bad("tp", f"must be a positive integer or a list of them, got {tp!r}")
    version = data.get("vllm_version")
    return ProfileRecipe(
        path=path, source=str(data["source"]),
        database=_resolve(str(data["database"]), path, "database", doc.lines.get("database")),
        system=str(data["system"]),
        model=_resolve(str(data["model"]), path, "model", doc.lines.get("model")),
        tp=tps, vllm_version=None if version is None else str(version),
        moe_distribution=str(data.get("moe_distribution") or "balanced"),
        source_commit=str(data.get("source_commit") or ""))


def recipe_cache_key(recipe: ProfileRecipe) -> str | None:
    """The on-disk cache key of ``recipe`` (module docstring), or None when a file cannot
    be read (no caching; the import reports the error)."""
    from llmsim.profile.io import CACHE_MAGIC, _code_digest, _hash_file

    h = hashlib.sha256(CACHE_MAGIC + _code_digest())
    h.update(b"recipe\0")
    for name in _RECIPE_MODULES:  # the code that decides what the import produces
        module = importlib.import_module(name)
        if not _hash_file(h, name, Path(str(module.__file__))):
            return None
    if not _hash_file(h, "recipe", recipe.path) or not _hash_file(h, "model", recipe.model):
        return None
    from llmsim.profile.importers.aiconfigurator import resolve_system

    try:
        system_dir, system_yaml = resolve_system(recipe.database, recipe.system)
    except ProfileError:
        return None
    if not _hash_file(h, "system", system_yaml):
        return None
    try:
        for root, dirs, files in os.walk(system_dir):
            dirs.sort()
            for name in sorted(files):
                st = os.stat(os.path.join(root, name))
                rel = os.path.relpath(os.path.join(root, name), system_dir)
                h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\0".encode(
                    "utf-8", "surrogateescape"))
    except OSError:
        return None
    return h.hexdigest()


def load_recipe(recipe: ProfileRecipe) -> pb.Profile:
    """Build the profile a recipe describes (no cache; :func:`llmsim.profile.io.load_profile`
    caches it).

    Raises:
        ProfileRangeError, ProfileError, ConfigError: from the importer.
    """
    from llmsim.profile.importers.aiconfigurator import import_aiconfigurator

    return import_aiconfigurator(recipe.database, model_config=recipe.model,
                                 tp_degrees=recipe.tp, system=recipe.system,
                                 version=recipe.vllm_version,
                                 moe_distribution=recipe.moe_distribution,
                                 source_commit=recipe.source_commit)
