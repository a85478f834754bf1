"""Import an LLMServingSim 2.0 profile bundle into a :class:`llmsim.v1.Profile` (and back).

Bundle layout (casys-kaist/LLMServingSim, ``profiles/<HW>/<org>/<model>/<dtype>/``)::

    meta.yaml                       how the profile was taken (GPU, grid, skew-fit buckets)
    tpN/dense.csv                   layer,tokens,time_us          per-layer ops vs tokens
    tpN/per_sequence.csv            layer,sequences,time_us       lm_head / sampler
    tpN/attention.csv               prefill_chunk,kv_prefill,n_decode,kv_decode,time_us
    tpN/moe.csv          (MoE)      tokens,activated_experts,time_us
    tpN/skew.csv         (optional) regime,n,nb,ratio,skew,pc,kp,kvs,kv_big,kv_mean,
                                    t_mean_us,t_max_us,t_skew_us,alpha
    tpN/skew_fit.csv     (optional) pc,n_label,skew_rate_label,kv_big_label,kp_label,alpha,n_samples

The bundle reports the mean of ``measurement_iterations`` runs (kernel time, CUDA graphs
off), so every latency lands in ``mean_ns``; the other statistic columns stay empty.
``meta.yaml`` is kept verbatim in ``provenance.attributes["source_meta_yaml"]`` so that
:func:`export_bundle` can write the bundle back; a round trip reproduces every CSV value
exactly (see :mod:`llmsim.profile.importers._csv`).

Untrusted input: cells must be finite decimals (latencies and counts >= 0, integers within
int64), files UTF-8, and ``meta.yaml`` fields of the documented types. A grid table
(``dense``, ``per_sequence``, ``attention``, ``moe``, ``skew_fit``) holds one measurement per
point: two rows with the same key and different values are refused (file, line, the
differing column and the earlier line); a row repeated verbatim is dropped with a warning
(the published bundles have none). ``skew.csv`` holds samples and is kept as measured. The
result is checked by :func:`llmsim.profile.io.validate_profile` before it is returned.
"""

from __future__ import annotations

import itertools
import logging
import math
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from llmsim.data.atomic import publish_dir, temp_dir_next_to
from llmsim.errors import DataNotFoundError, ProfileError
from llmsim.model.config import ModelConfig, load_model_config
from llmsim.profile.importers._csv import (
    CsvTable,
    check_duplicate_keys,
    drop_rows,
    float_text,
    ns_to_us_text,
    parse_count,
    parse_float,
    parse_float_or_nan,
    parse_uint32,
    read_csv,
    us_to_ns,
    us_to_ns_or_nan,
)
from llmsim.safeio import check_finite
from llmsim.v1 import profile_pb2 as pb
from llmsim.yamlfile import read_yaml

logger = logging.getLogger(__name__)

SOURCE_NAME = "LLMServingSim profile bundle"
SOURCE_URI = "https://github.com/casys-kaist/LLMServingSim"
META_ATTR = "source_meta_yaml"

ATTENTION_AXES = ("prefill_chunk", "kv_prefill", "n_decode", "kv_decode")
# profile axis name -> bundle CSV column for the MoE table
MOE_AXES = (("tokens", "tokens"), ("active_experts", "activated_experts"))
SKEW_INT = ("n", "nb", "pc", "kp", "kvs", "kv_big", "kv_mean")
SKEW_FLOAT = ("ratio", "skew", "alpha")
SKEW_US = (("t_mean_us", "t_mean_ns"), ("t_max_us", "t_max_ns"), ("t_skew_us", "t_skew_ns"))
SKEW_COLUMNS = ("regime", "n", "nb", "ratio", "skew", "pc", "kp", "kvs", "kv_big", "kv_mean",
                "t_mean_us", "t_max_us", "t_skew_us", "alpha")
SKEW_FIT_COLUMNS = ("pc", "n_label", "skew_rate_label", "kv_big_label", "kp_label", "alpha",
                    "n_samples")
# meta.yaml skew_fit.bucket_axes key -> SkewFit field prefix
_BUCKET_AXES = (("n", "n"), ("skew_rate", "skew_rate"), ("kv_big", "kv_big"), ("kp", "kp"))


def is_bundle(path: Path) -> bool:
    """True when ``path`` is a bundle directory (holds ``meta.yaml``)."""
    return path.is_dir() and (path / "meta.yaml").is_file()


_UINT32_MAX = 2**32 - 1


def _load_meta(path: Path) -> tuple[dict[str, Any], str]:
    """Parse and check ``meta.yaml``: every field the importer reads has the right type."""
    meta, text = read_yaml(path, what="bundle meta.yaml", error=ProfileError)
    if not isinstance(meta, dict):
        raise ProfileError("meta.yaml must be a mapping", path=path)
    for key in ("model", "hardware", "tp_degrees"):
        if key not in meta:
            raise ProfileError("required field missing", path=path, field=key)
    _check_model_name(meta["model"], path)
    tps = meta["tp_degrees"]
    if not isinstance(tps, list) or not tps or not all(
        isinstance(t, int) and not isinstance(t, bool) and 0 < t <= 4096 for t in tps
    ):
        raise ProfileError("must be a non-empty list of positive integers (at most 4096)",
                           path=path, field="tp_degrees")
    if len(set(tps)) != len(tps):
        raise ProfileError(f"lists a TP degree twice: {tps}", path=path, field="tp_degrees")
    for key in _META_TEXT:
        _meta_text(meta, key, path)
    iters = meta.get("measurement_iterations")
    if iters is not None and (isinstance(iters, bool) or not isinstance(iters, int)
                              or not 0 <= iters <= _UINT32_MAX):
        raise ProfileError(f"expected a non-negative integer, got {iters!r}", path=path,
                           field="measurement_iterations")
    engine = _mapping(meta, "engine_effective", path)
    if engine.get("enforce_eager") is not None and not isinstance(engine["enforce_eager"], bool):
        raise ProfileError(f"expected true or false, got {engine['enforce_eager']!r}",
                           path=path, field="engine_effective.enforce_eager")
    fit = _mapping(meta, "skew_fit", path)
    _mapping(fit, "bucket_axes", path, "skew_fit.")
    _mapping(fit, "per_tp", path, "skew_fit.")
    return meta, text


# meta.yaml keys copied into the provenance as text
_META_TEXT = ("gpu", "hardware", "cuda_version", "vllm_version", "profiler_version",
              "profiled_at", "variant", "architecture_sha256")


def _check_model_name(value: Any, path: Path) -> None:
    """The model id names a config file under ``configs/model/``: ``org/name``-like text."""
    if not isinstance(value, str) or not value.strip() or "\0" in value:
        raise ProfileError(f"expected a model id such as 'org/name', got {value!r}",
                           path=path, field="model")
    parts = Path(value).parts
    if value.startswith(("/", "\\")) or ".." in parts or len(value) > 512:
        raise ProfileError(f"model id {value!r} must be a relative 'org/name' path",
                           path=path, field="model")


def _meta_text(meta: dict[str, Any], key: str, path: Path) -> str:
    """``meta[key]`` as text ("" when absent); only scalars are accepted."""
    value = meta.get(key)
    if value is None:
        return ""
    if isinstance(value, (dict, list, set, tuple, bytes)):
        raise ProfileError(f"expected a single value, got {value!r}"[:200], path=path,
                           field=key)
    text = str(value)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ProfileError("not representable as UTF-8 text", path=path, field=key) from None
    return text


def _mapping(meta: dict[str, Any], key: str, path: Path, prefix: str = "") -> dict[str, Any]:
    value = meta.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ProfileError(f"expected a mapping, got {value!r}"[:200], path=path,
                           field=prefix + key)
    return value


def _find_model_config(bundle: Path, model_name: str) -> Path | None:
    """The HF config of ``model_name`` next to the bundle's ``profiles/`` tree, if any."""
    rel = Path("configs") / "model" / f"{model_name}.json"
    for parent in bundle.resolve().parents:
        if parent.name == "profiles" and (parent.parent / rel).is_file():
            return parent.parent / rel
    try:
        return _dataset(f"llmservingsim/{rel}")
    except DataNotFoundError:
        return None


def _dataset(relpath: str) -> Path:
    from llmsim.data import dataset_path

    return dataset_path(relpath)


def architecture_from_config(cfg: ModelConfig) -> pb.ModelArchitecture:
    """The profile's copy of a model config."""
    return pb.ModelArchitecture(
        name=cfg.name, architecture=cfg.architecture, num_hidden_layers=cfg.num_hidden_layers,
        hidden_size=cfg.hidden_size, num_attention_heads=cfg.num_attention_heads,
        num_key_value_heads=cfg.num_key_value_heads, head_dim=cfg.head_dim,
        intermediate_size=cfg.intermediate_size, vocab_size=cfg.vocab_size,
        num_experts=cfg.num_experts, num_experts_per_token=cfg.num_experts_per_token,
        moe_intermediate_size=cfg.moe_intermediate_size, dtype_bytes=cfg.dtype_bytes,
        config_sha256=cfg.config_sha256, tie_word_embeddings=cfg.tie_word_embeddings,
    )


def _provenance(meta: dict[str, Any], meta_text: str, bundle: Path,
                source_commit: str) -> pb.Provenance:
    engine = meta.get("engine_effective") or {}
    prov = pb.Provenance(
        device_name=str(meta.get("gpu", "")),
        hardware=str(meta.get("hardware", "")),
        runtime_version=str(meta.get("cuda_version", "")),
        framework="vllm",
        framework_version=str(meta.get("vllm_version", "")),
        profiler_name="LLMServingSim profiler",
        profiler_version=str(meta.get("profiler_version", "")),
        measured_at=str(meta.get("profiled_at", "")),
        method=pb.MeasurementMethod(
            timer="kernel",
            timed_iterations=int(meta.get("measurement_iterations") or 0),
            cuda_graphs=not bool(engine.get("enforce_eager", True)),
            statistic="mean",
            notes="one decoder layer with dummy weights, kernel time, mean of "
                  f"{meta.get('measurement_iterations', '?')} runs",
        ),
        source=pb.Source(kind="imported", name=SOURCE_NAME, uri=SOURCE_URI,
                         commit=source_commit, path=str(bundle), license="MIT"),
    )
    prov.attributes[META_ATTR] = meta_text
    if "architecture_sha256" in meta:
        prov.attributes["architecture_sha256"] = str(meta["architecture_sha256"])
    return prov


def _drop_repeats(table: CsvTable, key: tuple[str, ...], values: tuple[str, ...]) -> None:
    """Refuse contradicting duplicate points; drop exact repetitions (logged).

    A bundle table holds one measurement per grid point, and the cost model interpolates
    over the points (two values at one point cannot both be right), so rows with the same
    key and different values are a :class:`ProfileError`. A row repeated verbatim (e.g. two
    concatenated copies of a sweep) carries no new information and is dropped with a
    warning, so the imported profile holds each point once.
    """
    repeats = check_duplicate_keys(table, key, values)
    if repeats:
        logger.warning("%s: dropped %d repeated row(s) (first on line %d)", table.path,
                       len(repeats), table.lines[repeats[0]])
        drop_rows(table, repeats)


def _op_tables_by_name(path: Path, axis: str, kind: pb.OpKind) -> list[pb.OpTable]:
    table = read_csv(path, ("layer", axis, "time_us"))
    _drop_repeats(table, ("layer", axis), ("time_us",))
    names = [c.strip() for c in table.column("layer", str)]
    xs = table.column(axis, parse_count)
    ys = table.column("time_us", us_to_ns)
    ops: dict[str, pb.OpTable] = {}
    for name, line, x, y in zip(names, table.lines, xs, ys, strict=True):
        if not name:
            raise ProfileError("empty operator name", path=path, line=line, field="layer")
        op = ops.get(name)
        if op is None:
            op = ops[name] = pb.OpTable(op=name, kind=kind)
            op.axes.add(name=axis)
        op.axes[0].values.append(x)
        op.mean_ns.append(y)
    return list(ops.values())


def _grid_table(path: Path, op: str, kind: pb.OpKind, axes: tuple[tuple[str, str], ...]
                ) -> pb.OpTable:
    table = read_csv(path, [col for _, col in axes] + ["time_us"])
    _drop_repeats(table, tuple(col for _, col in axes), ("time_us",))
    if not table.rows:
        raise ProfileError("no data rows", path=path, line=2)
    out = pb.OpTable(op=op, kind=kind)
    for name, col in axes:
        out.axes.add(name=name, values=table.column(col, parse_count))
    out.mean_ns.extend(table.column("time_us", us_to_ns))
    if kind == pb.OP_KIND_ATTENTION:
        _check_attention_rows(out, table)
    return out


def _check_attention_rows(out: pb.OpTable, table: CsvTable) -> None:
    """Each row is a decode-only, prefill-only or mixed call (see
    :func:`llmsim.profile.io.validate_profile`), named by its file line."""
    for line, (pc, kp, n, kv) in zip(table.lines, zip(*(a.values for a in out.axes), strict=True), strict=True):
        if pc == 0 and n == 0:
            raise ProfileError("a call with neither a prefill chunk nor decodes",
                               path=table.path, line=line, field="n_decode")
        if pc == 0 and kp > 0:
            raise ProfileError("kv_prefill > 0 without a prefill chunk", path=table.path,
                               line=line, field="kv_prefill")
        if n == 0 and kv > 0:
            raise ProfileError("kv_decode > 0 without decodes", path=table.path, line=line,
                               field="kv_decode")


def _skew_table(path: Path) -> pb.SkewTable:
    """Skew samples (kept as measured: repeated samples are legitimate, nothing is merged)."""
    table = read_csv(path, SKEW_COLUMNS)
    skew = pb.SkewTable(regime=table.column("regime", str))
    for col in SKEW_INT:
        getattr(skew, col).extend(table.column(col, parse_count))
    for col in SKEW_FLOAT:
        getattr(skew, col).extend(table.column(col, parse_float_or_nan))
    for col, field in SKEW_US:
        getattr(skew, field).extend(table.column(col, us_to_ns_or_nan))
    return skew


def _float_list(value: Any, meta_path: Path, field: str) -> list[float]:
    if not isinstance(value, list) or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isnan(float(v))
        for v in value
    ):
        raise ProfileError(f"expected a list of numbers, got {value!r}"[:200], path=meta_path,
                           field=field)
    edges = [float(v) for v in value]
    if any(b <= a for a, b in itertools.pairwise(edges)):
        raise ProfileError(f"bucket edges must increase strictly, got {value!r}"[:200],
                           path=meta_path, field=field)
    return edges


def _fit_number(per_tp: dict[str, Any], key: str, meta_path: Path, tp: int,
                integer: bool = False) -> float:
    value = per_tp.get(key, 0)
    field = f"skew_fit.per_tp.{tp}.{key}"
    if integer:
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _UINT32_MAX:
            raise ProfileError(f"expected a non-negative integer, got {value!r}",
                               path=meta_path, field=field)
        return value
    return check_finite(value, field=field, path=meta_path, error=ProfileError)


def _skew_fit(path: Path, meta: dict[str, Any], meta_path: Path, tp: int) -> pb.SkewFit:
    table = read_csv(path, SKEW_FIT_COLUMNS)
    _drop_repeats(table, SKEW_FIT_COLUMNS[:5], SKEW_FIT_COLUMNS[5:])
    fit_meta = meta.get("skew_fit") or {}
    per_tp = (fit_meta.get("per_tp") or {}).get(tp) or {}
    if not isinstance(per_tp, dict):
        raise ProfileError(f"expected a mapping, got {per_tp!r}"[:200], path=meta_path,
                           field=f"skew_fit.per_tp.{tp}")
    axes = fit_meta.get("bucket_axes") or {}
    method = per_tp.get("method", "")
    if isinstance(method, (dict, list)):
        raise ProfileError(f"expected a name, got {method!r}"[:200], path=meta_path,
                           field=f"skew_fit.per_tp.{tp}.method")
    fit = pb.SkewFit(method=str(method),
                     alpha_default=_fit_number(per_tp, "alpha_default", meta_path, tp),
                     num_samples=int(_fit_number(per_tp, "n_samples", meta_path, tp, True)),
                     disabled_by_source=fit_meta.get("enabled") is False)
    known: dict[str, set[str]] = {}
    for key, field in _BUCKET_AXES:
        edges, labels = axes.get(f"{key}_bins"), axes.get(f"{key}_labels")
        if edges is None and labels is None:
            # Some bundles (RTX4090) ship skew_fit.csv while meta.yaml says the fit is
            # disabled and defines no buckets: keep the rows, leave the edges empty.
            continue
        if edges is None or labels is None:
            raise ProfileError("skew_fit bucket definition incomplete", path=meta_path,
                               field=f"skew_fit.bucket_axes.{key}_bins")
        edge_values = _float_list(edges, meta_path, f"skew_fit.bucket_axes.{key}_bins")
        if not isinstance(labels, list) or any(isinstance(lab, (dict, list)) for lab in labels):
            raise ProfileError(f"expected a list of labels, got {labels!r}"[:200],
                               path=meta_path, field=f"skew_fit.bucket_axes.{key}_labels")
        if len(edge_values) != len(labels) + 1:
            raise ProfileError("needs one more edge than labels", path=meta_path,
                               field=f"skew_fit.bucket_axes.{key}_bins")
        getattr(fit, f"{field}_edges").extend(edge_values)
        getattr(fit, f"{field}_labels").extend(str(lab) for lab in labels)
        known[f"{key}_label"] = {str(lab) for lab in labels}
    for key, value in per_tp.items():
        if key not in ("method", "alpha_default", "n_samples", "bucket_table") and isinstance(
            value, (int, float)
        ):
            try:
                stat = float(value)
            except OverflowError:
                stat = math.inf
            fit.fit_stats[str(key)] = check_finite(
                stat, field=f"skew_fit.per_tp.{tp}.{key}", path=meta_path, error=ProfileError)
    fit.pc.extend(table.column("pc", parse_count))
    for col in ("n_label", "skew_rate_label", "kv_big_label", "kp_label"):
        labels = [c.strip() for c in table.column(col, str)]
        allowed = known.get(col)
        if allowed is not None:
            for lab, line in zip(labels, table.lines, strict=True):
                if lab not in allowed:
                    raise ProfileError(f"label {lab!r} is not one of meta.yaml's "
                                       f"skew_fit.bucket_axes labels", path=path, line=line,
                                       field=col)
        getattr(fit, col).extend(labels)
    fit.bucket_alpha.extend(table.column("alpha", parse_float))
    fit.bucket_num_samples.extend(table.column("n_samples", parse_uint32))
    return fit


def _tp_profile(bundle: Path, tp: int, meta: dict[str, Any]) -> pb.TpProfile:
    d = bundle / f"tp{tp}"
    if not d.is_dir():
        raise ProfileError(f"tp_degrees lists {tp} but {d} does not exist",
                           path=bundle / "meta.yaml", field="tp_degrees")
    tpp = pb.TpProfile(tp_degree=tp)
    tpp.ops.extend(_op_tables_by_name(d / "dense.csv", "tokens", pb.OP_KIND_DENSE))
    tpp.ops.extend(_op_tables_by_name(d / "per_sequence.csv", "sequences",
                                      pb.OP_KIND_PER_SEQUENCE))
    tpp.ops.append(_grid_table(d / "attention.csv", "attention", pb.OP_KIND_ATTENTION,
                               tuple((a, a) for a in ATTENTION_AXES)))
    if (d / "moe.csv").is_file():
        tpp.ops.append(_grid_table(d / "moe.csv", "moe", pb.OP_KIND_MOE, MOE_AXES))
    if (d / "skew.csv").is_file():
        tpp.skew.CopyFrom(_skew_table(d / "skew.csv"))
    if (d / "skew_fit.csv").is_file():
        tpp.skew_fit.CopyFrom(_skew_fit(d / "skew_fit.csv", meta, bundle / "meta.yaml", tp))
    return tpp


def import_bundle(bundle: str | Path, *, model_config: str | Path | None = None,
                  source_commit: str = "") -> pb.Profile:
    """Read an LLMServingSim bundle directory into a Profile.

    Args:
        bundle: the ``<dtype>`` directory holding ``meta.yaml`` and ``tpN/``.
        model_config: HF ``config.json`` of the profiled model; by default
            ``<data root>/configs/model/<meta.model>.json`` when it exists (otherwise the
            profile carries no architecture and cost models need one passed in).
        source_commit: revision of the published bundle, recorded in the provenance.

    Raises:
        ProfileError: a missing file, column or field, a malformed cell (file, line, field),
            contradicting duplicate rows, or a result
            :func:`llmsim.profile.io.validate_profile` refuses.
        ConfigError: the model config is malformed.
    """
    from llmsim.profile.io import SCHEMA_VERSION, validate_profile

    bundle = Path(bundle)
    meta_path = bundle / "meta.yaml"
    if not bundle.is_dir() or not meta_path.is_file():
        raise ProfileError("not an LLMServingSim bundle (no meta.yaml)", path=bundle)
    meta, meta_text = _load_meta(meta_path)
    profile = pb.Profile(schema_version=SCHEMA_VERSION, dtype=str(meta.get("variant", "")),
                         provenance=_provenance(meta, meta_text, bundle, source_commit))
    cfg_path = Path(model_config) if model_config else _find_model_config(bundle, meta["model"])
    if cfg_path is not None:
        cfg = load_model_config(cfg_path, name=str(meta["model"]))
        profile.model.CopyFrom(architecture_from_config(cfg))
    else:
        logger.warning("%s: no model config found for %s; the profile has no architecture",
                       bundle, meta["model"])
        profile.model.name = str(meta["model"])
    for tp in sorted(meta["tp_degrees"]):
        profile.tp.append(_tp_profile(bundle, tp, meta))
    validate_profile(profile, bundle)
    return profile


# ---------------------------------------------------------------------------- export


def _write_rows(path: Path, header: list[str], rows: Iterable[Sequence[str]]) -> None:
    with open(path, "w", newline="") as fh:
        fh.write(",".join(header) + "\n")
        for row in rows:
            fh.write(",".join(row) + "\n")


def _export_tp(tpp: pb.TpProfile, d: Path) -> None:
    d.mkdir()
    dense = [op for op in tpp.ops if op.kind == pb.OP_KIND_DENSE]
    per_seq = [op for op in tpp.ops if op.kind == pb.OP_KIND_PER_SEQUENCE]
    for path, axis, ops in ((d / "dense.csv", "tokens", dense),
                            (d / "per_sequence.csv", "sequences", per_seq)):
        _write_rows(path, ["layer", axis, "time_us"], (
            (op.op, str(x), ns_to_us_text(y))
            for op in ops for x, y in zip(op.axes[0].values, op.mean_ns, strict=True)))
    for op in tpp.ops:
        if op.kind == pb.OP_KIND_ATTENTION:
            cols = [a.values for a in op.axes]
            _write_rows(d / "attention.csv", [*ATTENTION_AXES, "time_us"], (
                (*(str(c[i]) for c in cols), ns_to_us_text(op.mean_ns[i]))
                for i in range(len(op.mean_ns))))
        elif op.kind == pb.OP_KIND_MOE:
            cols = [a.values for a in op.axes]
            _write_rows(d / "moe.csv", [col for _, col in MOE_AXES] + ["time_us"], (
                (*(str(c[i]) for c in cols), ns_to_us_text(op.mean_ns[i]))
                for i in range(len(op.mean_ns))))
    if tpp.HasField("skew"):
        s = tpp.skew

        def skew_row(i: int) -> list[str]:
            row = [s.regime[i]]
            for col in SKEW_COLUMNS[1:]:
                if col in SKEW_INT:
                    row.append(str(getattr(s, col)[i]))
                elif col in SKEW_FLOAT:
                    row.append(float_text(getattr(s, col)[i]))
                else:
                    row.append(ns_to_us_text(getattr(s, dict(SKEW_US)[col])[i]))
            return row

        _write_rows(d / "skew.csv", list(SKEW_COLUMNS), (skew_row(i) for i in range(len(s.n))))
    if tpp.HasField("skew_fit"):
        f = tpp.skew_fit
        _write_rows(d / "skew_fit.csv", list(SKEW_FIT_COLUMNS), (
            (str(f.pc[i]), f.n_label[i], f.skew_rate_label[i], f.kv_big_label[i],
             f.kp_label[i], float_text(f.bucket_alpha[i]), str(f.bucket_num_samples[i]))
            for i in range(len(f.pc))))


def export_bundle(profile: pb.Profile, out_dir: str | Path) -> Path:
    """Write ``profile`` as an LLMServingSim bundle directory (atomically).

    The directory is assembled next to ``out_dir`` and renamed into place, so a failure
    leaves nothing that looks complete.

    Raises:
        ProfileError: ``out_dir`` already exists, or the profile did not come from a bundle.
    """
    out_dir = Path(out_dir)
    if out_dir.exists():
        raise ProfileError("output directory already exists", path=out_dir)
    meta_text = profile.provenance.attributes.get(META_ATTR)
    if meta_text is None:
        raise ProfileError("profile has no source meta.yaml (not imported from a bundle)",
                           field=f"provenance.attributes.{META_ATTR}")
    tmp = temp_dir_next_to(out_dir)
    try:
        (tmp / "meta.yaml").write_text(meta_text)
        for tpp in profile.tp:
            _export_tp(tpp, tmp / f"tp{tpp.tp_degree}")
        publish_dir(tmp, out_dir, replace_existing=False)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


__all__ = ["import_bundle", "export_bundle", "is_bundle", "architecture_from_config"]
