"""One sweep point: its config hash, its replay, its row of metrics.

A point is a base experiment file plus overrides. The driver validates it and computes its
**config hash**: SHA-256 of the canonical JSON (sorted keys, no whitespace) of

* the resolved experiment (every field of :class:`~llmsim.experiment.Experiment` after
  validation: absolute input paths, vLLM's default CUDA-graph sizes filled in, groups, trace
  transforms), without the fields that do not change a replay (``name``, ``source``,
  ``output_dir``, ``description``, ``measured``);
* the SLO (the goodput columns depend on it);
* the llmsim version and :data:`ROW_SCHEMA`.

It does not cover the *contents* of the input files (profile, trace): a sweep resumed after
they changed reuses the rows computed from the old ones (remove ``points/`` to rerun).

A worker (:func:`run_point`) reloads the experiment from the file and the overrides (the
same validation, so the same experiment), replays it and returns a JSON-able record. A
point whose inputs are refused at replay time (an :class:`~llmsim.errors.LlmsimError`, e.g.
a request longer than the KV cache of its engine settings) is a deterministic outcome: the
record carries the error text and no metrics. Errors of the environment rather than of the
point (:data:`ENVIRONMENT_ERRORS`: a dataset missing on the worker, an unreachable cost
bridge, a failed download) are not recorded: they stop the sweep as a
:class:`~llmsim.errors.ConfigError` (picklable, so it crosses process boundaries), and a
rerun retries the point. Any other exception is a bug and propagates.

Metrics (all from :class:`~llmsim.replay.ReplayResult`; seconds unless the name says):
``num_requests``, ``num_finished``, ``num_preemptions``, ``num_steps``, ``duration_s``
(first arrival to last finish), ``{ttft,tpot,itl,e2e}_{mean,p50,p99}_s`` (numpy linear
percentiles, :func:`llmsim.metrics.summary.distribution`), ``throughput_requests_per_s``,
``output_tokens_per_s``, ``total_tokens_per_s``; energy (the replay's ``summary["energy"]``,
docs/power.md): ``energy_j`` (total, J), ``avg_power_w`` (energy / horizon, W),
``j_per_output_token`` (all energy / output tokens, J), ``tokens_per_j`` ((input + output)
tokens / J), NaN where unavailable with the reason in ``energy_unavailable_reason`` (None
when every figure is there); with an SLO: ``slo_attainment`` (fraction
of all requests that finished and meet every bound), ``goodput_requests_per_s`` (good
requests / ``duration_s``: vLLM bench's ``request_goodput``), ``ttft_p<q>_s`` /
``tpot_p<q>_s`` for the SLO percentiles, and ``slo_met`` (attainment >= the goal and every
percentile bound holds). ``wall_s``: host time of the point (load + replay + metrics) and
``cpu_s``: the worker's CPU time for it (user + system), the two columns that are not
deterministic (``cpu_s`` is the steadier on a shared machine).
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmsim.errors import (
    ConfigError,
    CostModelUnavailable,
    DataNotFoundError,
    DownloadError,
    LlmsimError,
    MissingDataError,
)

if TYPE_CHECKING:
    import pandas as pd

    from llmsim.experiment import Experiment
    from llmsim.replay import ReplayResult

__all__ = ["ROW_SCHEMA", "PointTask", "config_hash", "energy_metrics", "experiment_config",
           "point_metrics", "run_point", "slo_metrics"]

ENVIRONMENT_ERRORS = (DataNotFoundError, MissingDataError, CostModelUnavailable, DownloadError)
"""Errors that depend on where a point runs, not on its config: never recorded."""

ROW_SCHEMA = "llmsim.sweep.point/2"
"""Version of a point record's layout (part of the config hash)."""

_NOT_HASHED = frozenset({"name", "source", "output_dir", "description", "measured_path"})
_LATENCIES = ("ttft", "tpot", "itl", "e2e")
_STATS = ("mean", "p50", "p99")
_ENERGY = ("energy_j", "avg_power_w", "j_per_output_token", "tokens_per_j")
"""Energy columns of a row: ``summary["energy"]`` keys of the same name (docs/power.md)."""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class PointTask:
    """What a worker needs to run one point (picklable, small).

    Attributes:
        config_hash: the point's config hash (hex).
        experiment: the base experiment file.
        overrides: dotted key -> value, applied to it (``set`` values and the point's).
        slo: the SLO as :meth:`SloConfig.as_dict`, or None.
    """

    config_hash: str
    experiment: str
    overrides: Mapping[str, Any]
    slo: Mapping[str, float | None] | None = None


def _plain(value: Any) -> Any:
    """JSON-able canonical form of a config value (dataclasses as mappings, paths as text)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)
                if f.name not in _NOT_HASHED}
    if isinstance(value, enum.Enum):
        return _plain(value.value)
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, str | bool | int | float):
        return value
    raise ConfigError(f"not supported yet: sweeping a config value of type "
                      f"{type(value).__name__} (sweeps take experiment files)")


def experiment_config(experiment: Experiment) -> dict[str, Any]:
    """The resolved experiment as a canonical JSON-able mapping (what the hash covers).

    Raises:
        ConfigError: the experiment holds an in-memory trace ("not supported yet").
    """
    if experiment.trace.requests is not None:
        raise ConfigError("not supported yet: sweeping an experiment with an in-memory trace",
                          field="trace.requests")
    out = _plain(experiment)
    if not isinstance(out, dict):  # an Experiment is a dataclass, so never
        raise TypeError(f"experiment config is a {type(out).__name__}")
    return out


def config_hash(experiment: Experiment, slo: Mapping[str, Any] | None) -> str:
    """SHA-256 (hex) of the point's resolved config (see the module doc)."""
    from llmsim import __version__

    doc = {"schema": ROW_SCHEMA, "llmsim": __version__, "experiment": experiment_config(experiment),
           "slo": dict(slo) if slo is not None else None}
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def point_metrics(result: ReplayResult) -> dict[str, Any]:
    """The SLO-independent metrics of a replay (see the module doc for names and units)."""
    s = result.summary
    row: dict[str, Any] = {
        "num_requests": s["num_requests"], "num_finished": s["num_finished"],
        "num_preemptions": s["num_preemptions"], "num_steps": s["num_steps"],
        "duration_s": s["duration_s"],
    }
    for name in _LATENCIES:
        dist = s[f"{name}_s"]
        for stat in _STATS:
            row[f"{name}_{stat}_s"] = dist[stat]
    t = s["throughput"]
    row["throughput_requests_per_s"] = t["requests_per_s"]
    row["output_tokens_per_s"] = t["output_tokens_per_s"]
    row["total_tokens_per_s"] = t["total_tokens_per_s"]
    row.update(energy_metrics(s.get("energy")))
    return row


def energy_metrics(energy: Mapping[str, Any] | None) -> dict[str, Any]:
    """The energy columns of a row from a replay's ``summary["energy"]``.

    Args:
        energy: the summary entry (docs/power.md "Outputs"): floats, or the string
            ``"unavailable"`` for a figure with no power source (``available`` false, its
            ``reason`` saying why) or a zero denominator (no output tokens, zero horizon).

    Returns:
        ``energy_j`` (J), ``avg_power_w`` (W), ``j_per_output_token`` (J), ``tokens_per_j``
        (1/J): floats, None (NaN in the table) where unavailable; ``energy_unavailable_reason``:
        None when all four are there, else the summary's reason or the figures missing.
    """
    if not energy:
        return {**dict.fromkeys(_ENERGY), "energy_unavailable_reason": "no energy entry in the "
                "replay's summary"}
    out: dict[str, Any] = {}
    for key in _ENERGY:
        v = energy.get(key)
        out[key] = float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None
    missing = [k for k in _ENERGY if out[k] is None]
    reason = None
    if not energy.get("available", False):
        reason = str(energy.get("reason") or "energy unavailable")
    elif missing:
        reason = f"{', '.join(missing)} unavailable (no output tokens, or a zero horizon)"
    out["energy_unavailable_reason"] = reason
    return out


def _percentile_key(metric: str, q: float) -> str:
    return f"slo_{metric}_p{q:g}_s".replace(".", "_")


def slo_metrics(requests: pd.DataFrame, slo: Mapping[str, Any], *, duration_s: float
                ) -> dict[str, Any]:
    """SLO attainment, goodput and ``slo_met`` of one replay's requests table.

    Args:
        requests: :attr:`ReplayResult.requests` (``ttft_s``, ``tpot_s``, ``finish_s``,
            ``output_tokens``).
        slo: :meth:`SloConfig.as_dict`.
        duration_s: the replay's span (summary ``duration_s``), s.

    Returns:
        ``slo_attainment``, ``goodput_requests_per_s``, the percentile columns asked for,
        ``slo_met``. A request is good when it finished, TTFT <= ``ttft_s`` and TPOT <=
        ``tpot_s`` (TPOT 0 for one output token; vLLM bench's rule).
    """
    import numpy as np

    n = len(requests)
    finished = requests["finish_s"].notna().to_numpy()
    ttft = np.where(finished, requests["ttft_s"].to_numpy(dtype=np.float64), np.inf)
    one = requests["output_tokens"].to_numpy() <= 1
    tpot = requests["tpot_s"].to_numpy(dtype=np.float64)
    tpot = np.where(one, 0.0, np.where(finished & ~np.isnan(tpot), tpot, np.inf))
    good = finished.copy()
    if slo.get("ttft_s") is not None:
        good &= ttft <= slo["ttft_s"]
    if slo.get("tpot_s") is not None:
        good &= tpot <= slo["tpot_s"]
    n_good = int(good.sum())
    attainment = n_good / n if n else 0.0
    out: dict[str, Any] = {"slo_attainment": attainment,
                           "goodput_requests_per_s": n_good / duration_s if duration_s > 0 else 0.0}
    met = attainment >= slo["attainment"]
    for metric, values in (("ttft", ttft), ("tpot", tpot)):
        q = slo.get(f"{metric}_percentile")
        if q is None or n == 0:
            continue
        value = _percentile(values, q)
        out[_percentile_key(metric, q)] = value if np.isfinite(value) else None
        met = met and bool(value <= slo[f"{metric}_s"])
    out["slo_met"] = bool(met)
    return out


def _percentile(values: Any, q: float) -> float:
    """numpy's linear percentile, where a value interpolated towards an infinite entry (an
    unfinished request) is infinite."""
    import numpy as np

    finite = np.isfinite(values)
    if finite.all():
        return float(np.percentile(values, q))
    if not finite.any():
        return float("inf")
    top = float(values[finite].max())
    value = float(np.percentile(np.where(finite, values, 2.0 * abs(top) + 1.0), q))
    return value if value <= top else float("inf")


_CACHE_ENTRIES = 4
"""Traces and cost models a worker keeps between its points (least recently used out)."""

_TRACES: OrderedDict[str, Any] = OrderedDict()
_COST_MODELS: OrderedDict[str, Any] = OrderedDict()


def _cached(cache: OrderedDict[str, Any], key: str, build: Callable[[], Any]) -> Any:
    if key in cache:
        cache.move_to_end(key)
        return cache[key]
    value = cache[key] = build()
    while len(cache) > _CACHE_ENTRIES:
        cache.popitem(last=False)
    return value


def _inputs(exp: Experiment) -> dict[str, Any]:
    """The trace and (one profile-priced group) cost model of ``exp``, reused across a
    worker's points.

    A trace is an immutable value and depends only on ``exp.trace``; a profile cost model
    depends only on what its :class:`~llmsim.costmodel.registry.CostModelContext` holds
    (model, parallel layout, profile, link, largest CUDA-graph size) and keeps nothing
    between steps but a memo of pure results, so reusing either changes no output (the
    tests compare the pool's rows, reused, with serial ones). Anything else (several groups,
    a gRPC cost model) is built by the replay as usual. Building ~0.1 s of trace and
    ~0.15 s of cost model is ~30% of a 300-request point's CPU time.
    """
    from llmsim.replay import build_cost_model, load_experiment_trace

    out: dict[str, Any] = {"trace": _cached(_TRACES, _key(exp.trace),
                                             lambda: load_experiment_trace(exp))}
    groups = exp.groups()
    if len(groups) == 1 and groups[0].cost_model == "profile":
        from llmsim.model.config import load_model_config

        g = groups[0]
        sizes = g.engine.cudagraph_capture_sizes
        key = _key({"model": g.model_path, "parallel": g.parallel, "profile": g.profile_path,
                    "hardware": g.link or g.hardware.name,
                    "cudagraph_max_tokens": max(sizes) if sizes else 0})
        try:
            model = load_model_config(g.model_path)
            out["cost_model"] = _cached(_COST_MODELS, key,
                                        lambda: build_cost_model(exp, model, g))
            out["model"] = model
        except LlmsimError:  # let the replay raise it, in its own order of checks
            out.pop("cost_model", None)
    return out


def _key(value: Any) -> str:
    return json.dumps(_plain(value), sort_keys=True, separators=(",", ":"))


def run_point(task: PointTask) -> dict[str, Any]:
    """Replay one point (in a worker) and return its record.

    Returns:
        ``{"schema", "config_hash", "metrics": {...} | None, "error": str | None,
        "wall_s", "cpu_s"}``; ``error`` is the text of an :class:`LlmsimError` the replay raised.
    """
    t0, c0 = time.perf_counter(), time.process_time()
    from llmsim.experiment import load_experiment
    from llmsim.replay import run

    metrics: dict[str, Any] | None = None
    error = None
    try:
        exp = load_experiment(task.experiment, dict(task.overrides))
        result = run(exp, **_inputs(exp))
        metrics = point_metrics(result)
        if task.slo is not None:
            metrics.update(slo_metrics(result.requests, task.slo, duration_s=metrics["duration_s"]))
    except ENVIRONMENT_ERRORS as exc:
        raise ConfigError(f"point {task.config_hash[:12]} could not run here: "
                          f"{type(exc).__name__}: {exc}") from None
    except LlmsimError as exc:
        error = f"{type(exc).__name__}: {exc}"
    return {"schema": ROW_SCHEMA, "config_hash": task.config_hash, "metrics": metrics,
            "error": error, "wall_s": time.perf_counter() - t0,
            "cpu_s": time.process_time() - c0}
