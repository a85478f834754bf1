"""Read and write ``llmsim.v1.Profile`` files (binary protobuf, ``.pb``).

Writes are atomic (temp file in the same directory, then ``os.replace``); reads check the
schema version and the content (:func:`validate_profile`: finite, non-negative latencies and
energies, consistent column lengths, each point once). :func:`load_profile` also accepts an
LLMServingSim bundle directory and imports it on the fly, and looks relative paths up in the
data directories.
"""

from __future__ import annotations

import itertools
import logging
import math
from pathlib import Path

import numpy as np
from google.protobuf.message import DecodeError

from llmsim.data.atomic import atomic_write_bytes
from llmsim.errors import ProfileError
from llmsim.safeio import read_bytes
from llmsim.v1 import profile_pb2 as pb

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
"""The ``Profile.schema_version`` this code reads and writes."""

# (resolved path, mtime_ns, size) -> serialized profile; bundles are slow to parse and the
# serving loop may load the same one many times in a test run.
_CACHE: dict[tuple[str, int, int], bytes] = {}
_CACHE_MAX = 8


MAX_PROFILE_BYTES = 2**31 - 1
"""Ceiling on one ``.pb`` file, bytes (protobuf's own 2 GiB message limit; the published
profiles are ~3 MB)."""

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


def _first_bad(values, *, nan_ok: bool = False, negative_ok: bool = False) -> int | None:
    """Index of the first value that is not finite (or negative), else None."""
    arr = np.asarray(values, dtype=np.float64)
    bad = np.isinf(arr) | (np.zeros(arr.shape, bool) if nan_ok else np.isnan(arr))
    if not negative_ok:
        bad |= arr < 0
    idx = np.flatnonzero(bad)
    return int(idx[0]) if idx.size else None


def _check_column(values, field: str, path: str | Path | None, **kw: bool) -> None:
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
        for i, point in enumerate(zip(*(a.values for a in table.axes))):
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
    for i, (pc, kp, n, kv) in enumerate(zip(*(a.values for a in table.axes))):
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


def _check_labels_readable(labels, field: str, path: str | Path | None) -> None:
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


def load_profile(path: str | Path) -> pb.Profile:
    """Load a profile from a ``.pb`` file or an LLMServingSim bundle directory.

    A relative path that does not exist is looked up in the data directories
    (``LLMSIM_DATA_DIR``, then the user cache), as every command resolves its inputs, so
    ``llmservingsim/profiles/RTXPRO6000/meta-llama/Llama-3.1-8B/bf16`` works from anywhere.
    Bundles are imported on the fly (see
    :func:`llmsim.profile.importers.llmservingsim.import_bundle`); the parsed result is cached
    per process by path and modification time, and every call returns a fresh message.

    Raises:
        ProfileError: missing or malformed input (file, line, field).
    """
    path = _existing(Path(path))
    from llmsim.profile.importers.llmservingsim import import_bundle, is_bundle

    if path.is_dir():
        if not is_bundle(path):
            raise ProfileError("directory is not an LLMServingSim bundle (no meta.yaml)",
                               path=path)
        key_path = path / "meta.yaml"
    else:
        key_path = path
    st = key_path.stat()
    key = (str(path.resolve()), st.st_mtime_ns, st.st_size)
    data = _CACHE.get(key)
    if data is None:
        profile = import_bundle(path) if path.is_dir() else read_profile(path)
        data = profile.SerializeToString()
        if len(_CACHE) >= _CACHE_MAX:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = data
        return profile
    profile = pb.Profile()
    profile.ParseFromString(data)
    return profile
