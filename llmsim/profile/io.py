"""Read and write ``llmsim.v1.Profile`` files (binary protobuf, ``.pb``).

Writes are atomic (temp file in the same directory, then ``os.replace``); reads check the
schema version and the content (:func:`validate_profile`: finite, non-negative latencies and
energies, consistent column lengths, each point once). :func:`load_profile` also accepts an
LLMServingSim bundle directory and imports it on the fly, and looks relative paths up in the
data directories.

Parsed-bundle cache: importing a bundle's CSVs takes ~0.5 s (the RTX PRO 6000 Llama-3.1-8B
bundle, 3.2 MB of CSV), more than the 300-request replay that uses it. :func:`load_profile`
therefore keeps the imported profile as a ``.pb`` in the user cache,
``$XDG_CACHE_HOME/llmsim/profiles/<key>.pb`` (:func:`profile_cache_dir`), where ``<key>`` is
the SHA-256 of everything the import depends on (:func:`bundle_cache_key`): the bytes of
``meta.yaml`` and of every file under ``tpN/``, the model config the importer finds and its
bytes, the bundle path (recorded in the provenance), and the source of the importer, reader
and validator modules (so an edited importer never serves a stale result). A cache file is
``MAGIC + sha256(payload) + payload``: a truncated, corrupt or foreign file fails the digest
and is rebuilt; a cached profile still passes :func:`validate_profile`. Writes are atomic;
an unwritable cache directory only costs the speed-up. ``LLMSIM_NO_CACHE=1`` turns the
cache off (neither read nor written).
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import logging
import math
import os
import stat
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from google.protobuf.message import DecodeError

from llmsim.data.atomic import atomic_write_bytes
from llmsim.errors import LlmsimError, ProfileError
from llmsim.safeio import read_bytes
from llmsim.v1 import profile_pb2 as pb

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
"""The ``Profile.schema_version`` this code reads and writes."""

# In-process cache: ("pb", resolved path, mtime_ns, size) or ("bundle", content key) ->
# serialized profile; the serving loop may load the same profile many times in a test run.
_CACHE: dict[tuple[object, ...], bytes] = {}
_CACHE_MAX = 8

NO_CACHE_ENV = "LLMSIM_NO_CACHE"
"""Environment variable: set to anything but ``""``/``"0"`` to bypass the on-disk cache."""

CACHE_MAX_FILES = 32
"""Most entries kept in the on-disk cache (~3 MB each for the published bundles); the
least recently used (written or read) go first. Every edit of the importer's code starts new keys."""

CACHE_MAGIC = b"llmsim.profile-cache/1\n"
"""First bytes of an on-disk cache file; the SHA-256 of the payload follows (32 bytes)."""

# Modules whose code decides what an import produces: part of every cache key.
_KEY_MODULES = ("llmsim.profile.importers.llmservingsim", "llmsim.profile.importers._csv",
                "llmsim.profile.io", "llmsim.model.config", "llmsim.v1.profile_pb2")


MAX_PROFILE_BYTES = 2**31 - 1
"""Ceiling on one ``.pb`` file, bytes (protobuf's own 2 GiB message limit; the published
profiles are ~3 MB)."""

_COUNT_AXES = frozenset({"tokens", "sequences"})
"""Axes counting rows a dense or per-sequence op ran on: every point has at least one."""

_STAT_FIELDS = ("median_ns", "mean_ns", "p90_ns", "min_ns", "max_ns", "std_ns", "energy_j",
                "avg_power_w")
_SKEW_INT = ("n", "nb", "pc", "kp", "kvs", "kv_big", "kv_mean")
_SKEW_TIMES = ("t_mean_ns", "t_max_ns", "t_skew_ns")  # NaN = left blank by the source
_SKEW_FLOAT = ("ratio", "skew", "alpha")
_ATTENTION_AXES = ("prefill_chunk", "kv_prefill", "n_decode", "kv_decode")
_FIT_COLUMNS = ("pc", "n_label", "skew_rate_label", "kv_big_label", "kp_label",
                "bucket_alpha")


def read_profile(path: str | Path) -> pb.Profile:
    """Read a binary ``.pb`` profile and check it (:func:`validate_profile`).

    Raises:
        ProfileError: not a regular file, unreadable, not a Profile, an unknown schema
            version, or content :func:`validate_profile` refuses (the field names the table
            and point, e.g. ``tp1/qkv_proj.mean_ns[3]``).
    """
    path = Path(path)
    data = read_bytes(path, what="profile", error=ProfileError, max_bytes=MAX_PROFILE_BYTES)
    profile = pb.Profile()
    try:
        profile.ParseFromString(data)
    except DecodeError as exc:
        raise ProfileError(f"not a llmsim.v1.Profile: {exc}", path=path) from exc
    if profile.schema_version != SCHEMA_VERSION:
        raise ProfileError(
            f"schema version {profile.schema_version} is not supported "
            f"(this llmsim reads version {SCHEMA_VERSION})",
            path=path, field="schema_version",
        )
    validate_profile(profile, path)
    return profile


def validate_profile(profile: pb.Profile, path: str | Path | None = None) -> None:
    """Check that ``profile`` holds only numbers a cost model can use.

    * every op table (per TP degree and collectives) has at least one axis, all axes and all
      non-empty statistic / energy / power columns have one entry per point, and the table
      has a ``mean_ns`` or ``median_ns`` column; axis values are >= 0;
    * latencies, energies and powers are finite and >= 0;
    * attention points are decode-only, prefill-only or mixed calls (no cached prefill KV
      without a chunk, no decode KV without decodes);
    * operator tables of a TP degree hold each point once (the cost model interpolates over
      them; a collective table may repeat a point: repeated measurements are averaged,
      :func:`llmsim.costmodel.collectives.collective_grid`);
    * TP degrees are positive and distinct; skew samples and skew-fit rows have columns of
      equal length, finite (or, for skew times left blank by the source, NaN) values;
    * a recorded model architecture has positive sizes and whole GQA groups.

    Raises:
        ProfileError: the first violation, naming ``path`` and the field (table and point).
    """
    seen_tp: set[int] = set()
    for tpp in profile.tp:
        where = f"tp{tpp.tp_degree}"
        if tpp.tp_degree <= 0 or tpp.tp_degree in seen_tp:
            raise ProfileError(f"TP degree {tpp.tp_degree} is zero or repeated", path=path,
                               field=f"{where}.tp_degree")
        seen_tp.add(tpp.tp_degree)
        for table in tpp.ops:
            _check_table(table, f"{where}/{table.op}", path, unique_points=True)
        if tpp.HasField("skew"):
            _check_skew(tpp.skew, f"{where}/skew", path)
        if tpp.HasField("skew_fit"):
            _check_skew_fit(tpp.skew_fit, f"{where}/skew_fit", path)
    for table in profile.collectives:
        _check_table(table, f"collectives/{table.op}", path, unique_points=False)
    _finite(profile.idle_power_w, "idle_power_w", path)
    if profile.HasField("model") and (profile.model.num_hidden_layers
                                      or profile.model.hidden_size):
        _check_model(profile.model, path)


def _finite(value: float, field: str, path: str | Path | None, *, nan_ok: bool = False,
            negative_ok: bool = False) -> None:
    if math.isnan(value):
        if nan_ok:
            return
        raise ProfileError("is NaN", path=path, field=field)
    if math.isinf(value):
        raise ProfileError(f"is {value} (must be finite)", path=path, field=field)
    if value < 0 and not negative_ok:
        raise ProfileError(f"is negative ({value!r})", path=path, field=field)


def _first_bad(values: Sequence[float], *, nan_ok: bool = False, negative_ok: bool = False) -> int | None:
    """Index of the first value that is not finite (or negative), else None."""
    arr = np.asarray(values, dtype=np.float64)
    bad = np.isinf(arr) | (np.zeros(arr.shape, bool) if nan_ok else np.isnan(arr))
    if not negative_ok:
        bad |= arr < 0
    idx = np.flatnonzero(bad)
    return int(idx[0]) if idx.size else None


def _check_column(values: Sequence[float], field: str, path: str | Path | None, **kw: bool) -> None:
    i = _first_bad(values, **kw)
    if i is not None:
        _finite(values[i], f"{field}[{i}]", path, **kw)


def _check_table(table: pb.OpTable, where: str, path: str | Path | None, *,
                 unique_points: bool) -> None:
    if not table.op:
        raise ProfileError("op table without a name", path=path, field=f"{where}.op")
    if not table.axes:
        raise ProfileError("op table has no axes", path=path, field=f"{where}.axes")
    n = len(table.axes[0].values)
    if n == 0:
        raise ProfileError("op table has no points", path=path, field=f"{where}.axes")
    for axis in table.axes:
        if len(axis.values) != n:
            raise ProfileError(f"axis has {len(axis.values)} values but the table has {n} "
                               "points", path=path, field=f"{where}.axes.{axis.name}")
        i = _first_bad(axis.values)
        if i is not None:
            raise ProfileError(f"negative axis value {axis.values[i]}", path=path,
                               field=f"{where}.axes.{axis.name}[{i}]")
        if axis.name in _COUNT_AXES:
            zero = next((j for j, v in enumerate(axis.values) if v < 1), None)
            if zero is not None:
                raise ProfileError(f"{axis.name} must be >= 1 (an op over no rows is not a "
                                   f"measurement), got {axis.values[zero]}", path=path,
                                   field=f"{where}.axes.{axis.name}[{zero}]")
    for name in (*_STAT_FIELDS, "num_samples"):
        column = getattr(table, name)
        if len(column) and len(column) != n:
            raise ProfileError(f"has {len(column)} entries but the table has {n} points",
                               path=path, field=f"{where}.{name}")
        if name != "num_samples":
            _check_column(column, f"{where}.{name}", path)
    if len(table.mean_ns) != n and len(table.median_ns) != n:
        raise ProfileError("table has neither a mean_ns nor a median_ns column", path=path,
                           field=f"{where}.mean_ns")
    if table.kind == pb.OP_KIND_ATTENTION and [a.name for a in table.axes] == list(_ATTENTION_AXES):
        _check_attention_points(table, where, path)
    if unique_points:
        first: dict[tuple[int, ...], int] = {}
        for i, point in enumerate(zip(*(a.values for a in table.axes), strict=True)):
            j = first.setdefault(point, i)
            if j != i:
                raise ProfileError(f"point {point} appears twice (also at index {j})",
                                   path=path, field=f"{where}.axes[{i}]")


def _check_attention_points(table: pb.OpTable, where: str, path: str | Path | None) -> None:
    """Each attention point is a decode-only, prefill-only or mixed call.

    The cost model files a point with ``prefill_chunk == 0`` under decode-only by
    ``(n_decode, kv_decode)`` and one with ``n_decode == 0`` under prefill-only by
    ``(prefill_chunk, kv_prefill)``, so cached prefill KV without a chunk, decode KV without
    decodes, or a call with neither would be silently merged or dropped.
    """
    for i, (pc, kp, n, kv) in enumerate(zip(*(a.values for a in table.axes), strict=True)):
        if pc == 0 and n == 0:
            problem = "a call with neither a prefill chunk nor decodes"
        elif pc == 0 and kp > 0:
            problem = f"kv_prefill={kp} without a prefill chunk"
        elif n == 0 and kv > 0:
            problem = f"kv_decode={kv} without decodes"
        else:
            continue
        raise ProfileError(f"point ({pc}, {kp}, {n}, {kv}) is {problem}", path=path,
                           field=f"{where}.axes[{i}]")


def _check_skew(skew: pb.SkewTable, where: str, path: str | Path | None) -> None:
    n = len(skew.n)
    for name in ("regime", *_SKEW_INT, *_SKEW_TIMES, *_SKEW_FLOAT):
        column = getattr(skew, name)
        if len(column) != n:
            raise ProfileError(f"has {len(column)} entries but skew.n has {n}", path=path,
                               field=f"{where}.{name}")
    for name in _SKEW_INT:
        _check_column(getattr(skew, name), f"{where}.{name}", path)
    for name in _SKEW_TIMES:
        _check_column(getattr(skew, name), f"{where}.{name}", path, nan_ok=True)
    for name in _SKEW_FLOAT:
        _check_column(getattr(skew, name), f"{where}.{name}", path, nan_ok=True,
                      negative_ok=True)


def _check_skew_fit(fit: pb.SkewFit, where: str, path: str | Path | None) -> None:
    n = len(fit.pc)
    for name in _FIT_COLUMNS:
        if len(getattr(fit, name)) != n:
            raise ProfileError(f"has {len(getattr(fit, name))} entries but pc has {n}",
                               path=path, field=f"{where}.{name}")
    if len(fit.bucket_num_samples) not in (0, n):
        raise ProfileError(f"has {len(fit.bucket_num_samples)} entries but pc has {n}",
                           path=path, field=f"{where}.bucket_num_samples")
    _check_column(fit.pc, f"{where}.pc", path)
    _check_column(fit.bucket_alpha, f"{where}.bucket_alpha", path, negative_ok=True)
    _finite(fit.alpha_default, f"{where}.alpha_default", path, negative_ok=True)
    for key, value in fit.fit_stats.items():
        _finite(value, f"{where}.fit_stats.{key}", path, negative_ok=True)
    for axis in ("n", "skew_rate", "kv_big", "kp"):
        edges = list(getattr(fit, f"{axis}_edges"))
        labels = getattr(fit, f"{axis}_labels")
        field = f"{where}.{axis}_edges"
        if not edges and not labels:
            _check_labels_readable(getattr(fit, f"{axis}_label"), f"{where}.{axis}_label", path)
            continue
        if len(edges) != len(labels) + 1:
            raise ProfileError(f"{len(edges)} edges for {len(labels)} labels (needs one "
                               "more edge than labels)", path=path, field=field)
        if any(math.isnan(e) for e in edges) or any(b <= a for a, b in
                                                      itertools.pairwise(edges)):
            raise ProfileError(f"edges must increase strictly, got {edges}", path=path,
                               field=field)


def _check_labels_readable(labels: Sequence[str], field: str, path: str | Path | None) -> None:
    """Without bucket edges the cost model reads them from the labels (``n<=8``, ``kp=0``,
    ``sr>70%``): each label must have that form."""
    from llmsim.costmodel.profile_model import _label_edges  # the one parser of labels

    seen: set[str] = set()
    for i, label in enumerate(labels):
        if label in seen:
            continue
        seen.add(label)
        try:
            _label_edges([label])
        except ValueError as exc:
            raise ProfileError(f"{exc} (expected e.g. 'n<=8', 'kp=0', 'sr>70%')", path=path,
                               field=f"{field}[{i}]") from None


def _check_model(m: pb.ModelArchitecture, path: str | Path | None) -> None:
    for name in ("num_hidden_layers", "hidden_size", "num_attention_heads",
                 "num_key_value_heads", "head_dim", "vocab_size"):
        if getattr(m, name) == 0:
            raise ProfileError("must be positive", path=path, field=f"model.{name}")
    if m.num_attention_heads % m.num_key_value_heads:
        raise ProfileError(f"num_attention_heads {m.num_attention_heads} is not a multiple of "
                           f"{m.num_key_value_heads}", path=path,
                           field="model.num_key_value_heads")
    if m.num_experts:
        if not 0 < m.num_experts_per_token <= m.num_experts:
            raise ProfileError(f"{m.num_experts_per_token} experts per token of "
                               f"{m.num_experts}", path=path,
                               field="model.num_experts_per_token")
        if not m.moe_intermediate_size:
            raise ProfileError("must be positive for a MoE model", path=path,
                               field="model.moe_intermediate_size")
    elif not m.intermediate_size:
        raise ProfileError("must be positive for a dense model", path=path,
                           field="model.intermediate_size")
    if m.dtype_bytes not in (0, 1, 2, 4, 8):
        raise ProfileError(f"{m.dtype_bytes} bytes is not a dtype width", path=path,
                           field="model.dtype_bytes")


def write_profile(profile: pb.Profile, path: str | Path) -> Path:
    """Write ``profile`` to ``path`` atomically (deterministic serialization).

    ``schema_version`` is set to :data:`SCHEMA_VERSION` when unset.

    Raises:
        ProfileError: the profile declares a different schema version, or the write failed.
    """
    path = Path(path)
    if profile.schema_version == 0:
        profile.schema_version = SCHEMA_VERSION
    if profile.schema_version != SCHEMA_VERSION:
        raise ProfileError(f"cannot write schema version {profile.schema_version}",
                           path=path, field="schema_version")
    data = profile.SerializeToString(deterministic=True)
    try:
        atomic_write_bytes(path, data)
    except OSError as exc:
        raise ProfileError(f"cannot write profile: {exc}", path=path) from exc
    return path


def _existing(path: Path) -> Path:
    """``path`` if it exists, else the same relative path inside a data dir."""
    if path.exists():
        return path
    from llmsim.data.paths import data_dirs, dataset_path
    from llmsim.errors import DataNotFoundError

    if not path.is_absolute():
        try:
            return dataset_path(path)
        except DataNotFoundError:
            pass
    where = "" if path.is_absolute() else (
        f" (nor in the data dirs {', '.join(str(d) for d in data_dirs())})")
    raise ProfileError(f"no such profile file or bundle directory{where}", path=path)


def profile_cache_dir() -> Path:
    """Where parsed bundles are cached: ``profiles/`` beside the user data cache
    (``$XDG_CACHE_HOME/llmsim/profiles`` or ``~/.cache/llmsim/profiles``)."""
    from llmsim.data.paths import user_cache_dir

    return user_cache_dir().parent / "profiles"


def cache_enabled() -> bool:
    """False when :data:`NO_CACHE_ENV` is set to anything but ``""`` or ``"0"``."""
    return os.environ.get(NO_CACHE_ENV, "") in ("", "0")


@functools.cache
def _code_digest() -> bytes:
    """SHA-256 over the source of :data:`_KEY_MODULES` (read once per process)."""
    import importlib

    h = hashlib.sha256()
    for name in _KEY_MODULES:
        module = importlib.import_module(name)
        h.update(name.encode() + b"\0" + Path(str(module.__file__)).read_bytes() + b"\0")
    return h.digest()


def _hash_file(h: hashlib._Hash, label: str, path: Path) -> bool:
    """Feed ``label`` and the bytes of regular file ``path`` to ``h``; False if unreadable."""
    try:
        if not stat.S_ISREG(path.stat().st_mode):
            return False
        data = path.read_bytes()
    except OSError:
        return False
    h.update(f"{label}\0{len(data)}\0".encode("utf-8", "surrogateescape") + data)
    return True


def bundle_cache_key(bundle: Path) -> str | None:
    """The on-disk cache key of bundle directory ``bundle`` (64 hex digits), or None.

    The key is the SHA-256 of the cache format, :func:`_code_digest`, ``str(bundle)``, the
    bytes of ``meta.yaml`` and of every regular file in each subdirectory (``tpN/``), and
    the path and bytes of the model config the importer would use. None (no caching) when a
    file cannot be read or ``meta.yaml`` is malformed: the import then reports the error.
    """
    from llmsim.profile.importers.llmservingsim import _find_model_config, _load_meta

    h = hashlib.sha256(CACHE_MAGIC + _code_digest())
    h.update(f"bundle\0{bundle}\0".encode("utf-8", "surrogateescape"))
    if not _hash_file(h, "meta.yaml", bundle / "meta.yaml"):
        return None
    try:
        with os.scandir(bundle) as it:
            subdirs = sorted((e for e in it if e.is_dir()), key=lambda e: e.name)
        for sub in subdirs:
            with os.scandir(sub.path) as it:
                entries = sorted(it, key=lambda e: e.name)
            for entry in entries:
                if not _hash_file(h, f"{sub.name}/{entry.name}", Path(entry.path)):
                    return None
        meta, _ = _load_meta(bundle / "meta.yaml")
        cfg = _find_model_config(bundle, meta["model"])
    except (OSError, LlmsimError):
        return None
    if cfg is None:
        h.update(b"config\0none\0")
    elif not _hash_file(h, f"config:{cfg}", cfg):
        return None
    return h.hexdigest()


def _read_cached(path: Path) -> pb.Profile | None:
    """The profile cached at ``path``, or None when absent, corrupt or refused."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    head = len(CACHE_MAGIC) + 32
    payload = data[head:]
    if (len(data) < head or not data.startswith(CACHE_MAGIC)
            or hashlib.sha256(payload).digest() != data[len(CACHE_MAGIC):head]):
        logger.warning("%s: profile cache file is corrupt; rebuilding it", path)
        return None
    profile = pb.Profile()
    try:
        profile.ParseFromString(payload)
        if profile.schema_version != SCHEMA_VERSION:
            raise ProfileError(f"schema version {profile.schema_version}", path=path)
        validate_profile(profile, path)
    except (DecodeError, ProfileError) as exc:
        logger.warning("%s: profile cache file refused (%s); rebuilding it", path, exc)
        return None
    try:  # a read refreshes the entry: eviction (_write_cached) drops the least recently used
        os.utime(path)
    except OSError:
        pass  # a read-only cache still serves; it just evicts by write time
    return profile


def _write_cached(path: Path, data: bytes) -> None:
    """Store serialized profile ``data`` at ``path``, then drop the least recently used
    entries (oldest write or read, :func:`_read_cached` refreshes the time) beyond
    :data:`CACHE_MAX_FILES`; failure only logs (the cache is optional: a read-only or full
    cache directory leaves imports uncached)."""
    try:
        atomic_write_bytes(path, CACHE_MAGIC + hashlib.sha256(data).digest() + data,
                           fsync=False)
        entries = sorted(((f.stat().st_mtime_ns, f) for f in path.parent.glob("*.pb")
                          if f != path), reverse=True)
        for _, stale in entries[CACHE_MAX_FILES - 1:]:
            stale.unlink(missing_ok=True)
    except OSError as exc:
        logger.info("cannot write the profile cache %s: %s", path, exc)


def _import_bundle_cached(
        bundle: Path) -> tuple[tuple[object, ...], bytes | None, pb.Profile | None]:
    """``(in-process key, serialized profile, profile)`` for ``bundle``, through the
    on-disk cache when enabled (exactly one of the last two is None)."""
    from llmsim.profile.importers.llmservingsim import import_bundle

    key = bundle_cache_key(bundle) if cache_enabled() else None
    if key is None:  # cache off or key unknown: in-process by meta.yaml's path and mtime
        st = (bundle / "meta.yaml").stat()
        mem_key: tuple[object, ...] = ("bundle-mtime", str(bundle.resolve()), st.st_mtime_ns, st.st_size)
    else:
        mem_key = ("bundle", key)
    data = _CACHE.get(mem_key)
    if data is not None or key is None:
        return mem_key, data, None if data is not None else import_bundle(bundle)
    cache_file = profile_cache_dir() / f"{key}.pb"
    profile = _read_cached(cache_file)
    if profile is None:
        profile = import_bundle(bundle)
        _write_cached(cache_file, profile.SerializeToString(deterministic=True))
    return mem_key, None, profile


def _import_recipe_cached(
        path: Path) -> tuple[tuple[object, ...], bytes | None, pb.Profile | None]:
    """As :func:`_import_bundle_cached`, for a profile recipe (:mod:`llmsim.profile.recipe`)."""
    from llmsim.profile.recipe import load_recipe, read_recipe, recipe_cache_key

    recipe = read_recipe(path)
    key = recipe_cache_key(recipe) if cache_enabled() else None
    if key is None:
        st = path.stat()
        mem_key: tuple[object, ...] = ("recipe-mtime", str(path.resolve()), st.st_mtime_ns,
                                       st.st_size)
    else:
        mem_key = ("recipe", key)
    data = _CACHE.get(mem_key)
    if data is not None or key is None:
        return mem_key, data, None if data is not None else load_recipe(recipe)
    cache_file = profile_cache_dir() / f"{key}.pb"
    profile = _read_cached(cache_file)
    if profile is None:
        profile = load_recipe(recipe)
        _write_cached(cache_file, profile.SerializeToString(deterministic=True))
    return mem_key, None, profile


def load_profile(path: str | Path) -> pb.Profile:
    """Load a profile from a ``.pb`` file, an LLMServingSim bundle directory or a profile
    recipe (``*.yaml``, :mod:`llmsim.profile.recipe`: built on first use and cached like a
    bundle).

    A relative path that does not exist is looked up in the data directories
    (``LLMSIM_DATA_DIR``, then the user cache), as every command resolves its inputs, so
    ``llmservingsim/profiles/RTXPRO6000/meta-llama/Llama-3.1-8B/bf16`` works from anywhere.
    Bundles are imported on the fly (see
    :func:`llmsim.profile.importers.llmservingsim.import_bundle`) through the on-disk
    parsed-bundle cache (module docstring; off with ``LLMSIM_NO_CACHE=1``): a cached load
    equals a fresh import. Results are also kept per process (bundles by content key,
    ``.pb`` files by path and modification time), and every call returns a fresh message.

    Raises:
        ProfileError: missing or malformed input (file, line, field).
    """
    path = _existing(Path(path))
    from llmsim.profile.importers.llmservingsim import is_bundle
    from llmsim.profile.recipe import is_recipe

    if is_recipe(path):
        key, data, profile = _import_recipe_cached(path)
    elif path.is_dir():
        if not is_bundle(path):
            raise ProfileError("directory is not an LLMServingSim bundle (no meta.yaml)",
                               path=path)
        key, data, profile = _import_bundle_cached(path)
    else:
        st = path.stat()
        key = ("pb", str(path.resolve()), st.st_mtime_ns, st.st_size)
        data = _CACHE.get(key)
        profile = read_profile(path) if data is None else None
    if profile is not None:
        if len(_CACHE) >= _CACHE_MAX:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = profile.SerializeToString()
        return profile
    profile = pb.Profile()
    profile.ParseFromString(data or b"")
    return profile
