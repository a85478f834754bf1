"""Error bars for a validation: Monte Carlo bands and one-at-a-time sensitivities.

**Bands (measurement spread of the profile).** Each Monte Carlo replay prices the same
workload with a perturbed copy of the operator profile: every measured point of every op
table (per TP degree, plus the collective tables the cost model uses) is multiplied by its
own factor ``exp(sigma_i z)``, ``z ~ N(0, 1)`` from ``numpy.random.default_rng(seed + k)``
(replay ``k``). The per-point log-spread ``sigma_i`` is, in this order of preference:

1. ``std_ns / mean_ns / sqrt(num_samples)`` (standard error of the mean) when the table
   records both;
2. ``(max_ns - min_ns) / mean_ns / d2(n) / sqrt(n)`` when it records min, max and ``n``
   (``d2``: expected range of ``n`` standard normals, ASTM E2587 table; range-based sigma);
3. otherwise the **stated noise model**: one profile-wide ``sigma`` estimated from repeated
   measurements inside the profile itself. The LLMServingSim bundles record only the mean of
   3 runs per point, but their decode-skew table measures the all-at-``kv_big`` batch
   (``t_max``) again for every ``(regime, n, pc, kp, kv_big)`` it covers, independently of the
   attention grid's point ``(pc, kp, n, kv_big)``. The log ratio of the two measurements has
   a constant offset (the skew run's timer convention) and a spread ``s``; for two
   independent measurements with the same spread ``sigma = s / sqrt(2)``. The RTX PRO 6000
   Llama-3.1-8B bundle gives ``s`` = 0.71% -> ``sigma`` = 0.50%, RTX 4090 1.71% -> 1.21%
   (13,006 pairs each). The same sigma is assumed for dense, per-sequence and collective
   tables, which have no repeats. A profile without a skew table uses
   :data:`FALLBACK_SIGMA_LOG` (the larger of the two estimates, rounded up).

The band of a metric is the 5th-95th percentile of its simulated value over the replays
(linear interpolation), i.e. a 90% band of what profile noise alone can do. It does not
contain modelling error, so a measured value outside it says the gap is not explained by
the profile's measurement noise.

**Sensitivity.** One replay per parameter setting, everything else nominal, reported as the
change of each metric in percent of its nominal simulated value. Ranges are stated choices,
not measured spreads (:data:`PARAMETERS`): TP link bandwidth (x0.8 / x1.25, collectives
priced x1.25 / x0.8, i.e. bandwidth-bound; no effect at TP1, where no step communicates),
CPU overhead per step and per sequence (x0.5 / x1.5 of ``overheads``), KV-cache capacity
(x0.9 / x1.1 blocks), the decode-skew correction (forced off / forced on) and kernel time
(x0.98 / x1.02 of every step's device time; a systematic profile bias four times the
RTX PRO 6000 per-point sigma). Perturbations go through cost-model wrappers and experiment
overrides; the cost model itself is not changed.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from llmsim.costmodel.base import StepBatch, StepCost
from llmsim.errors import ConfigError
from llmsim.validate.compare import LATENCY_METRICS, LATENCY_STATS, Comparison, compare
from llmsim.validate.measured import MeasuredRun

__all__ = [
    "FALLBACK_SIGMA_LOG",
    "PARAMETERS",
    "Band",
    "NoiseModel",
    "ScaledCostModel",
    "SensitivityRow",
    "Uncertainty",
    "bands_from_samples",
    "estimate_uncertainty",
    "noise_model_from_profile",
    "perturbed_profile",
]

logger = logging.getLogger(__name__)

#: Per-point log-sigma when a profile has no repeated measurements (see module docstring).
FALLBACK_SIGMA_LOG = 0.0125
#: Band percentiles (a 90% band).
BAND_PERCENTILES = (5.0, 95.0)
#: Expected range of n standard normals (ASTM E2587), n = 2..10.
_D2 = {2: 1.128, 3: 1.693, 4: 2.059, 5: 2.326, 6: 2.534, 7: 2.704, 8: 2.847, 9: 2.970, 10: 3.078}
_COLLECTIVE_KEYS = frozenset({"all_reduce", "embedding_all_reduce", "logits_all_gather"})
_METRIC_KEYS = tuple(f"{m}_{s}" for m in LATENCY_METRICS for s in LATENCY_STATS)

#: parameter -> (low label, high label, description of the range).
PARAMETERS: dict[str, tuple[str, str, str]] = {
    "link_bandwidth": ("x0.8", "x1.25", "TP link bandwidth; collectives priced x1.25 / x0.8"),
    "cpu_overhead": ("x0.5", "x1.5", "overheads.cpu_step_ns and cpu_per_seq_ns"),
    "kv_capacity": ("x0.9", "x1.1", "KV-cache blocks (engine.num_gpu_blocks_override)"),
    "skew_correction": ("off", "on", "decode-skew fit forced off / on"),
    "kernel_time": ("x0.98", "x1.02", "every step's device time"),
}


@dataclass(frozen=True, slots=True, kw_only=True)
class NoiseModel:
    """Per-point multiplicative (lognormal) noise of a profile's measured points.

    Attributes:
        sigma_log: log-spread of a point whose table records no spread of its own.
        source: where ``sigma_log`` comes from, in words.
        num_pairs: repeated-measurement pairs behind ``sigma_log`` (0 for the fallback).
    """

    sigma_log: float
    source: str
    num_pairs: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Band:
    """The 90% band of one metric.

    Attributes:
        key: metric key, e.g. ``ttft_p50``.
        measured_ms: measured value, ms.
        simulated_ms: nominal simulated value, ms.
        low_ms / high_ms: 5th / 95th percentile over the Monte Carlo replays, ms.
        inside: ``low_ms <= measured_ms <= high_ms``.
    """

    key: str
    measured_ms: float
    simulated_ms: float
    low_ms: float
    high_ms: float
    inside: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class SensitivityRow:
    """One parameter's effect on every metric.

    Attributes:
        parameter: a key of :data:`PARAMETERS`.
        low_label / high_label: the two settings (``x0.8``, ``off``...).
        description: what was changed.
        low_pct / high_pct: metric key -> change of the simulated value at the low / high
            setting, percent of the nominal simulated value.
        applicable: False when the parameter cannot act on this experiment (then all 0).
        note: why not applicable, or an empty string.
    """

    parameter: str
    low_label: str
    high_label: str
    description: str
    low_pct: dict[str, float]
    high_pct: dict[str, float]
    applicable: bool = True
    note: str = ""

    def span_pct(self, key: str) -> float:
        """Largest |change| of ``key`` over the two settings, percent."""
        return max(abs(self.low_pct[key]), abs(self.high_pct[key]))


@dataclass(frozen=True, slots=True, kw_only=True)
class Uncertainty:
    """Bands and sensitivities of one validation.

    Attributes:
        samples: Monte Carlo replays (0: no bands).
        seed: seed of replay 0 (replay k uses ``seed + k``).
        noise: the noise model used where tables record no spread.
        bands: per metric (the 15 TTFT/TPOT/E2E keys), empty without samples.
        sensitivity: per parameter, empty when not requested.
        sample_values_ms: metric key -> simulated value per replay, ms.
    """

    samples: int
    seed: int
    noise: NoiseModel
    bands: tuple[Band, ...] = ()
    sensitivity: tuple[SensitivityRow, ...] = ()
    sample_values_ms: dict[str, tuple[float, ...]] = dataclasses.field(default_factory=dict)

    @property
    def coverage(self) -> float | None:
        """Fraction of metrics whose measured value lies inside its band (None: no bands)."""
        if not self.bands:
            return None
        return sum(b.inside for b in self.bands) / len(self.bands)


# --------------------------------------------------------------------------- noise model


def noise_model_from_profile(profile: Any, tp: int | None = None) -> NoiseModel:
    """The profile-wide sigma from its skew table's repeats (module docstring, item 3).

    Args:
        profile: the operator profile.
        tp: use only this TP degree's tables (None: every degree in the profile).
    """
    logs = []
    for tpp in profile.tp:
        if tp is not None and tpp.tp_degree != tp:
            continue
        if not tpp.HasField("skew") or not len(tpp.skew.t_max_ns):
            continue
        att = next((op for op in tpp.ops if op.op == "attention"), None)
        if att is None:
            continue
        values = list(att.mean_ns) or list(att.median_ns)
        axes = {a.name: list(a.values) for a in att.axes}
        try:
            keys = zip(axes["prefill_chunk"], axes["kv_prefill"], axes["n_decode"], axes["kv_decode"], strict=True)
        except KeyError:
            continue
        point = dict(zip(keys, values, strict=True))
        sk = tpp.skew
        for pc, kp, n, kv, t in zip(sk.pc, sk.kp, sk.n, sk.kv_big, sk.t_max_ns, strict=False):
            ref = point.get((pc, kp, n, kv))
            if ref and t > 0 and math.isfinite(t):
                logs.append(math.log(t / ref))
    if len(logs) < 10:
        return NoiseModel(sigma_log=FALLBACK_SIGMA_LOG, source=(
            f"no repeated measurements in the profile: {FALLBACK_SIGMA_LOG:.2%} assumed (the larger of the "
            "two LLMServingSim bundles' repeat estimates, rounded up)"))
    spread = float(np.std(np.asarray(logs), ddof=1))
    sigma = spread / math.sqrt(2.0)
    return NoiseModel(sigma_log=sigma, num_pairs=len(logs), source=(
        f"decode-skew table t_max vs the attention grid at the same point{'' if tp is None else f' (TP{tp})'}: "
        f"{len(logs)} pairs, "
        f"log-ratio spread {spread:.2%}, per-measurement sigma = spread / sqrt(2) = {sigma:.2%}"))


def _point_sigma(table: Any, fallback: float) -> np.ndarray:
    """Per-point log-sigma of one table (module docstring, items 1-3)."""
    mean = np.asarray(list(table.mean_ns) or list(table.median_ns), dtype=np.float64)
    n = np.asarray(list(table.num_samples), dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        if len(table.std_ns) == mean.size and n.size == mean.size:
            sig = np.asarray(list(table.std_ns)) / mean / np.sqrt(np.maximum(n, 1.0))
        elif len(table.min_ns) == mean.size and len(table.max_ns) == mean.size and n.size == mean.size:
            d2 = np.array([_D2.get(int(k), _D2[10]) for k in n])
            rng = np.asarray(list(table.max_ns)) - np.asarray(list(table.min_ns))
            sig = rng / mean / d2 / np.sqrt(np.maximum(n, 1.0))
        else:
            return np.full(mean.size, fallback)
    return np.where(np.isfinite(sig) & (sig >= 0), sig, fallback)


def _perturb_table(table: Any, rng: np.random.Generator, fallback: float) -> None:
    field = "mean_ns" if len(table.mean_ns) else "median_ns"
    values = np.asarray(list(getattr(table, field)), dtype=np.float64)
    if not values.size:
        return
    factor = np.exp(_point_sigma(table, fallback) * rng.standard_normal(values.size))
    getattr(table, field)[:] = (values * factor).tolist()


def perturbed_profile(profile: Any, noise: NoiseModel, rng: np.random.Generator,
                      collectives: Sequence[Any] = ()) -> tuple[Any, list[Any]]:
    """A copy of ``profile`` (and of ``collectives``) with every point perturbed.

    Returns:
        ``(profile copy, collective table copies)``; the inputs are not modified.
    """
    out = type(profile)()
    out.CopyFrom(profile)
    for tpp in out.tp:
        for table in tpp.ops:
            _perturb_table(table, rng, noise.sigma_log)
    for table in out.collectives:
        _perturb_table(table, rng, noise.sigma_log)
    tables = []
    for table in collectives:
        copy = type(table)()
        copy.CopyFrom(table)
        _perturb_table(copy, rng, noise.sigma_log)
        tables.append(copy)
    return out, tables


# --------------------------------------------------------------------------- wrappers


class ScaledCostModel:
    """A cost model whose device time is scaled: all ops by ``kernel``, collectives by ``link``.

    Args:
        base: any cost model returning a per-op ``breakdown_ns`` summing to ``duration_ns``.
        kernel: factor on every op.
        link: extra factor on the collective ops (``all_reduce``, ``embedding_all_reduce``,
            ``logits_all_gather``).
    """

    def __init__(self, base: Any, *, kernel: float = 1.0, link: float = 1.0) -> None:
        self.base = base
        self.kernel = kernel
        self.link = link

    def step_cost(self, batch: StepBatch) -> StepCost:
        """The base cost with the factors applied (ns rounded per op)."""
        cost: StepCost = self.base.step_cost(batch)
        if not cost.breakdown_ns:
            return dataclasses.replace(cost, duration_ns=round(cost.duration_ns * self.kernel))
        parts = {k: round(v * self.kernel * (self.link if k in _COLLECTIVE_KEYS else 1.0))
                 for k, v in cost.breakdown_ns.items()}
        rest = cost.duration_ns - sum(cost.breakdown_ns.values())
        return StepCost(duration_ns=sum(parts.values()) + round(rest * self.kernel),
                        breakdown_ns=parts, energy_j=cost.energy_j)


def _profile_model(base: Any, profile: Any = None, collectives: Any = None, skew: Any = "same") -> Any:
    from llmsim.costmodel.profile_model import ProfileCostModel

    return ProfileCostModel(
        profile if profile is not None else base.profile, model=base.model, parallel=base.parallel,
        collectives=collectives if collectives is not None else base.collectives, link=base.link,
        link_spec=base.link_spec, cudagraph_max_tokens=base.cudagraph_max_tokens, source=base.source,
        skew=base.skew if skew == "same" else skew)


# --------------------------------------------------------------------------- estimation


def _values_ms(comp: Comparison) -> dict[str, float]:
    return {row.key: row.simulated_ms for row in comp.latency}


def bands_from_samples(measured: Mapping[str, float], nominal: Mapping[str, float],
                       samples: Mapping[str, Sequence[float]]) -> tuple[Band, ...]:
    """The 90% band of every metric from its Monte Carlo values (ms)."""
    out = []
    for key in _METRIC_KEYS:
        vals = np.asarray(samples[key], dtype=np.float64)
        lo, hi = (float(np.percentile(vals, q)) for q in BAND_PERCENTILES)
        m = measured[key]
        out.append(Band(key=key, measured_ms=m, simulated_ms=nominal[key], low_ms=lo, high_ms=hi,
                        inside=bool(lo <= m <= hi)))
    return tuple(out)


def estimate_uncertainty(
    experiment: Any,
    measured: MeasuredRun,
    comparison: Comparison,
    *,
    trace: Any = None,
    samples: int = 20,
    sensitivity: bool = True,
    seed: int = 0,
    noise: NoiseModel | None = None,
    replay: Callable[..., Any] | None = None,
) -> Uncertainty:
    """Monte Carlo bands (``samples`` replays) and, optionally, the sensitivity replays.

    Args:
        experiment: the validated experiment (its cost model must be ``profile``).
        measured: the measured run.
        comparison: the nominal comparison (its simulated values are the centre).
        trace: the experiment's loaded trace (loaded again when None).
        samples: Monte Carlo replays; 0 for none.
        sensitivity: run the one-at-a-time replays of :data:`PARAMETERS`.
        seed: replay ``k`` draws from ``default_rng(seed + k)``.
        noise: override the noise model (default :func:`noise_model_from_profile`).
        replay: ``llmsim.replay.run`` or a stand-in with its signature (tests).

    Raises:
        ConfigError: the experiment's cost model is not the profile cost model (field
            ``cost_model``), or ``samples`` is negative.
    """
    from llmsim.api import experiment_trace
    from llmsim.costmodel.profile_model import ProfileCostModel
    from llmsim.model.config import load_model_config
    from llmsim.replay import build_cost_model, resolve_capacity
    from llmsim.replay import run as replay_run

    if samples < 0:
        raise ConfigError(f"expected a non-negative number of Monte Carlo replays, got {samples}", field="bands")
    replay = replay or replay_run
    model = load_model_config(experiment.model_path)
    trace = trace if trace is not None else experiment_trace(experiment)
    base = build_cost_model(experiment, model)
    if not isinstance(base, ProfileCostModel):
        raise ConfigError("error bars need the profile cost model (they perturb its measured points)",
                          path=getattr(experiment, "source", None), field="cost_model")
    noise = noise or noise_model_from_profile(base.profile, tp=base.tp)
    nominal = _values_ms(comparison)
    measured_ms = {row.key: row.measured_ms for row in comparison.latency}

    def metrics(exp: Any, cost_model: Any) -> dict[str, float]:
        result = replay(exp, trace=trace, cost_model=cost_model, model=model, keep_steps=True)
        return _values_ms(compare(measured, result, name=getattr(exp, "name", "")))

    values: dict[str, list[float]] = {k: [] for k in _METRIC_KEYS}
    for k in range(samples):
        rng = np.random.default_rng(seed + k)
        prof, tables = perturbed_profile(base.profile, noise, rng, collectives=base.collectives)
        got = metrics(experiment, _profile_model(base, prof, tables))
        for key in _METRIC_KEYS:
            values[key].append(got[key])
    bands = bands_from_samples(measured_ms, nominal, values) if samples else ()
    rows: tuple[SensitivityRow, ...] = ()
    if sensitivity:
        capacity = resolve_capacity(experiment, model).num_gpu_blocks
        rows = tuple(_sensitivity(experiment, base, nominal, metrics, capacity))
    return Uncertainty(samples=samples, seed=seed, noise=noise, bands=bands, sensitivity=rows,
                       sample_values_ms={k: tuple(v) for k, v in values.items()} if samples else {})


def _sensitivity(experiment: Any, base: Any, nominal: dict[str, float],
                 metrics: Callable[[Any, Any], dict[str, float]], capacity_blocks: int) -> list[SensitivityRow]:
    def change(got: dict[str, float]) -> dict[str, float]:
        return {k: (got[k] - nominal[k]) / nominal[k] * 100.0 if nominal[k] else 0.0 for k in _METRIC_KEYS}

    zero = dict.fromkeys(_METRIC_KEYS, 0.0)
    o, e = experiment.overheads, experiment.engine
    has_fit = any(t.HasField("skew_fit") and len(t.skew_fit.pc) for t in base.profile.tp)
    fit_default = base.tp_tables(base.parallel).skew is not None

    def overheads(f: float) -> Any:
        return dataclasses.replace(experiment, overheads=dataclasses.replace(
            o, cpu_step_ns=round(o.cpu_step_ns * f), cpu_per_seq_ns=round(o.cpu_per_seq_ns * f)))

    def blocks(f: float) -> Any:
        return dataclasses.replace(experiment, engine=dataclasses.replace(
            e, num_gpu_blocks_override=max(2, round(capacity_blocks * f))))

    rows = []
    for name, (lo_label, hi_label, desc) in PARAMETERS.items():
        applicable, note = True, ""
        if name == "link_bandwidth" and base.tp == 1:
            applicable, note = False, "TP1: no step communicates"
        if name == "skew_correction" and not has_fit:
            applicable, note = False, "the profile has no skew fit"
        if not applicable:
            rows.append(SensitivityRow(parameter=name, low_label=lo_label, high_label=hi_label, description=desc,
                                       low_pct=dict(zero), high_pct=dict(zero), applicable=False, note=note))
            continue
        if name == "link_bandwidth":
            low = metrics(experiment, ScaledCostModel(_profile_model(base), link=1.25))
            high = metrics(experiment, ScaledCostModel(_profile_model(base), link=0.8))
        elif name == "cpu_overhead":
            low = metrics(overheads(0.5), _profile_model(base))
            high = metrics(overheads(1.5), _profile_model(base))
        elif name == "kv_capacity":
            low = metrics(blocks(0.9), _profile_model(base))
            high = metrics(blocks(1.1), _profile_model(base))
        elif name == "skew_correction":
            low = nominal if not fit_default else metrics(experiment, _profile_model(base, skew=False))
            high = nominal if fit_default else metrics(experiment, _profile_model(base, skew=True))
            note = f"nominal: {'on' if fit_default else 'off'} (as the profile says)"
        else:
            low = metrics(experiment, ScaledCostModel(_profile_model(base), kernel=0.98))
            high = metrics(experiment, ScaledCostModel(_profile_model(base), kernel=1.02))
        rows.append(SensitivityRow(parameter=name, low_label=lo_label, high_label=hi_label, description=desc,
                                   low_pct=change(low), high_pct=change(high), note=note))
    return rows
