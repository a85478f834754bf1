"""Capacity search: the highest request rate, or the fewest instances, that meets an SLO.

Schema (``SEARCH.yaml``)::

    experiment: ../rtxpro6000-llama-3.1-8b.yaml
    name: capacity                   # default: the file's stem
    output_dir: out/searches/capacity
    set: {engine.cudagraph_capture_sizes: null}   # overrides of every point
    slo: {ttft_s: 0.5, tpot_s: 0.05, attainment: 0.9}   # as in a sweep file (required)
    find: max_rate                   # or min_instances
    rate: {low_per_s: 1, high_per_s: 64, rel_tol: 0.05}   # max_rate: the bracket
    # min_instances: rate: {per_s: 40} (omitted: the trace's own rate) and
    # instances: {low: 1, high: 16}

**Rate.** A point's request rate is set by scaling the trace's arrival times (the
``scale_rate`` transform appended to the experiment's transforms): factor = rate /
base rate, where the base rate is ``(n - 1) / (last arrival - first arrival)`` of the
experiment's trace after its own transforms (the inverse mean inter-arrival gap), so the
scaled trace's mean rate is the asked rate (to the ns rounding of arrivals). The requests
(lengths, prefixes) stay the same. For a workload spec with Poisson or gamma arrivals
(``trace: {format: workload}``, e.g. vLLM bench's ``request_rate``, ``burstiness``) this is
exactly that process at the new rate: its seeded gaps are gamma(shape, 1 / (rate x shape))
draws, and dividing them by the factor gives the draws at ``rate x factor``.

**Criterion** (DistServe, Zhong et al., OSDI 2024: goodput is the highest rate at which the
SLO attainment goal is met): a point meets the SLO when :func:`llmsim.sweep.point.slo_metrics`
says ``slo_met`` (the fraction of requests meeting TTFT and TPOT bounds >= ``attainment``,
and the percentile bounds if given). A point whose replay fails does not meet it.

**Search.** Bisection assumes the criterion is monotone (met below some rate, not above;
not met below some instance count, met above). Each round evaluates ``workers`` probes at
once (geometrically spaced rates / evenly spaced counts inside the bracket, so a round of
``k`` probes narrows the bracket ``k + 1``-fold), through the sweep runner: points are
keyed by config hash and stored, so an interrupted search resumes. It stops when ``high <=
low x (1 + rel_tol)`` (rates) or ``high = low + 1`` (instances). Returned: the highest
evaluated rate that meets the SLO below the lowest that does not (so, under monotonicity,
``rate x (1 + rel_tol)`` does not), or the fewest instances that meet it. Every evaluation
is reported, with ``monotone: false`` when one contradicts the assumption (a met rate above
a failing one). If ``high_per_s`` already meets the SLO the answer is ``high_per_s`` with
``bounded: false`` (the capacity is at least that); if ``low_per_s`` (``instances.high``)
does not, there is no answer (None).
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass as plain_dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Self

from pydantic import ConfigDict, Field, Strict, TypeAdapter, ValidationError, model_validator
from pydantic.dataclasses import dataclass

from llmsim.errors import ConfigError
from llmsim.experiment import MAX_INSTANCES
from llmsim.sweep.backends import BackendKind, open_backend
from llmsim.sweep.point import PointTask, config_hash
from llmsim.sweep.runner import (
    RESULTS_DIR,
    PlannedPoint,
    default_out_dir,
    run_tasks,
    start_dir,
    sweep_table,
    write_results,
)
from llmsim.sweep.spec import FieldError, SloConfig, resolve_experiment_path, spec_error
from llmsim.yamlfile import load_yaml_document

if TYPE_CHECKING:
    import pandas as pd

    from llmsim.sweep.backends import PoolBackend, RayBackend, SerialBackend

__all__ = ["InstanceRange", "RateRange", "SearchGoal", "SearchResult", "SearchSpec",
           "load_search", "run_search"]

MAX_ROUNDS = 64
"""Most rounds of probes: 64 bisections narrow any bracket of finite floats to 2^-64."""

MAX_RATE_PER_S = 1e9
"""Highest rate searched, req/s: one request per ns, the simulation clock's resolution."""

_Float = Annotated[float, Strict(), Field(allow_inf_nan=False)]
_Int = Annotated[int, Strict()]
_CONFIG = ConfigDict(extra="forbid", validate_by_name=True, validate_by_alias=True)


class SearchGoal(StrEnum):
    """What ``find:`` asks for."""

    MAX_RATE = "max_rate"
    MIN_INSTANCES = "min_instances"


@dataclass(frozen=True, slots=True, kw_only=True, config=_CONFIG)
class RateRange:
    """Request rates, req/s.

    Attributes:
        low_per_s, high_per_s: the bracket of a ``max_rate`` search.
        rel_tol: stop when ``high <= low x (1 + rel_tol)``.
        per_s: the rate of a ``min_instances`` search (None: the trace's own).
    """

    low_per_s: Annotated[_Float | None, Field(gt=0, le=MAX_RATE_PER_S)] = None
    high_per_s: Annotated[_Float | None, Field(gt=0, le=MAX_RATE_PER_S)] = None
    rel_tol: Annotated[_Float, Field(gt=0, le=1)] = 0.05
    per_s: Annotated[_Float | None, Field(gt=0, le=MAX_RATE_PER_S)] = None


@dataclass(frozen=True, slots=True, kw_only=True, config=_CONFIG)
class InstanceRange:
    """Instance counts of a ``min_instances`` search (the experiment's ``instances``)."""

    low: Annotated[_Int, Field(ge=1, le=MAX_INSTANCES)] = 1
    high: Annotated[_Int, Field(ge=1, le=MAX_INSTANCES)]


@dataclass(frozen=True, slots=True, kw_only=True, config=_CONFIG)
class SearchSpec:
    """A validated search file (see the module doc)."""

    experiment: Path
    slo: SloConfig
    find: SearchGoal = SearchGoal.MAX_RATE
    name: Annotated[str, Strict(), Field(min_length=1, max_length=256)] = "search"
    output_dir: Path | None = None
    common: dict[Annotated[str, Strict()], Any] = Field(default_factory=dict,
                                                        validation_alias="set")
    rate: RateRange | None = None
    instances: InstanceRange | None = None
    source: Path | None = None
    lines: Mapping[str, int] = Field(default_factory=dict, repr=False)

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.find == SearchGoal.MAX_RATE:
            r = self.rate
            if r is None or r.low_per_s is None or r.high_per_s is None:
                raise FieldError("rate" if r is not None else "find",
                                 "find: max_rate needs rate: {low_per_s, high_per_s}")
            if r.low_per_s >= r.high_per_s:
                raise FieldError("rate.low_per_s", f"{r.low_per_s} must be below "
                                 f"rate.high_per_s ({r.high_per_s})")
            if self.instances is not None:
                raise FieldError("instances", "applies to find: min_instances")
        else:
            if self.instances is None:
                raise FieldError("find", "find: min_instances needs instances: {low, high}")
            if self.instances.low >= self.instances.high:
                raise FieldError("instances.low", f"{self.instances.low} must be below "
                                 f"instances.high ({self.instances.high})")
            if self.rate is not None and (self.rate.low_per_s or self.rate.high_per_s):
                raise FieldError("rate", "find: min_instances takes rate: {per_s} (one rate)")
        return self


@functools.cache
def _adapter() -> TypeAdapter[SearchSpec]:
    return TypeAdapter(SearchSpec)


def load_search(path: str | Path) -> SearchSpec:
    """Read and validate a search file.

    Raises:
        ConfigError: unreadable file, invalid YAML, unknown key or bad value (file, line,
            field), base experiment missing.
    """
    path = Path(path)
    doc = load_yaml_document(path, what="search file")
    if not isinstance(doc.data, dict):
        raise ConfigError("a search file is a YAML mapping", path=path)
    for key in ("source", "lines"):
        if key in doc.data:
            raise ConfigError("unknown key", path=path, line=doc.lines.get(key), field=key)
    data = {"name": path.stem, **doc.data, "source": path, "lines": doc.lines}
    try:
        spec = _adapter().validate_python(data)
    except ValidationError as exc:
        raise spec_error(exc, source=path, lines=doc.lines, sections={
            "": SearchSpec, "slo": SloConfig, "rate": RateRange,
            "instances": InstanceRange}) from None
    resolved: SearchSpec = resolve_experiment_path(spec, path, doc.lines)
    return resolved


@plain_dataclass(frozen=True, slots=True, kw_only=True)
class SearchResult:
    """What :func:`run_search` found.

    Attributes:
        find: the goal.
        answer: the highest rate meeting the SLO (req/s) or the fewest instances; None when
            even the easiest end of the bracket fails.
        bounded: False when the hardest end of the bracket already meets the SLO (the true
            capacity is at least ``answer``).
        monotone: False when an evaluation contradicts monotonicity.
        rate_per_s: the rate of a ``min_instances`` search (req/s).
        base_rate_per_s: the trace's own mean rate (req/s).
        evaluations: one row per evaluated point, by value (the sweep table's columns).
        rounds: rounds of probes after the two bracket ends.
        num_run: points replayed now (the others came from the store).
        out_dir: the search directory.
        wall_s: host time, s.
    """

    find: SearchGoal
    answer: float | int | None
    bounded: bool
    monotone: bool
    rate_per_s: float | None
    base_rate_per_s: float
    evaluations: pd.DataFrame
    rounds: int
    num_run: int
    out_dir: Path
    wall_s: float


class _Evaluator:
    """Runs probes through the sweep runner and remembers what each one gave."""

    def __init__(self, spec: SearchSpec, pool: SerialBackend | PoolBackend | RayBackend,
                 out_dir: Path) -> None:
        from llmsim.api import experiment_trace
        from llmsim.experiment import load_experiment

        self.spec = spec
        self.pool = pool
        self.store = start_dir(out_dir, {"name": spec.name, "experiment": str(spec.experiment)},
                               kind="search")
        self.slo = spec.slo.as_dict()
        try:
            base = load_experiment(spec.experiment, spec.common)
        except ConfigError as exc:
            raise ConfigError(f"base experiment with set: {exc}", path=spec.source,
                              line=spec.lines.get("set"), field="set") from None
        if spec.find == SearchGoal.MIN_INSTANCES and base.instance_groups:
            raise ConfigError("not supported yet: find: min_instances on instance_groups "
                              "(it varies the top-level instances)", path=spec.source,
                              line=spec.lines.get("find"), field="find")
        self.transforms = list(base.trace.transforms)
        trace = experiment_trace(base)
        arrivals = [r.arrival_ns for r in trace.requests]
        span_ns = (max(arrivals) - min(arrivals)) if arrivals else 0
        if len(arrivals) < 2 or span_ns <= 0:
            raise ConfigError("a rate search needs a trace of >= 2 requests arriving over a "
                              "time span", path=spec.source, field="experiment")
        self.base_rate_per_s = (len(arrivals) - 1) / (span_ns / 1e9)
        self.points: dict[float, PlannedPoint] = {}
        self.records: dict[str, dict[str, Any]] = {}
        self.num_run = 0

    def _point(self, value: float, rate_per_s: float | None) -> PlannedPoint:
        overrides = dict(self.spec.common)
        values: dict[str, Any] = {}
        if rate_per_s is not None:
            factor = rate_per_s / self.base_rate_per_s
            overrides["trace.transforms"] = [*self.transforms, {"scale_rate": factor}]
            values = {"rate_per_s": rate_per_s, "scale_rate": factor}
        if self.spec.find == SearchGoal.MIN_INSTANCES:
            overrides["instances"] = int(value)
            values = {"instances": int(value), **values}
        from llmsim.experiment import load_experiment

        try:
            exp = load_experiment(self.spec.experiment, overrides)
        except ConfigError as exc:
            raise ConfigError(f"probe {values}: {exc}", path=self.spec.source,
                              field="find") from None
        task = PointTask(config_hash=config_hash(exp, self.slo), experiment=str(
            self.spec.experiment), overrides=overrides, slo=self.slo)
        return PlannedPoint(index=len(self.points), values=values, task=task)

    def evaluate(self, values: list[float], rate_per_s: Callable[[float], float | None]) -> None:
        new = [v for v in dict.fromkeys(values) if v not in self.points]
        for v in new:
            self.points[v] = self._point(v, rate_per_s(v))
        records, ran = run_tasks([self.points[v].task for v in new], self.store, self.pool)
        self.records.update(records)
        self.num_run += ran

    def met(self, value: float) -> bool:
        record = self.records[self.points[value].task.config_hash]
        metrics = record.get("metrics")
        return bool(metrics is not None and metrics.get("slo_met"))

    def table(self) -> pd.DataFrame:
        order = sorted(self.points)
        planned = [PlannedPoint(index=i, values=self.points[v].values, task=self.points[v].task)
                   for i, v in enumerate(order)]
        axes = list(planned[0].values) if planned else []
        return sweep_table(planned, self.records, axes)


def _rate_probes(lo: float, hi: float, k: int) -> list[float]:
    """``k`` rates geometrically spaced strictly inside ``(lo, hi)``, 6 significant digits."""
    out = []
    for i in range(1, k + 1):
        r = float(f"{lo * (hi / lo) ** (i / (k + 1)):.6g}")
        if lo < r < hi:
            out.append(r)
    return out or [math.sqrt(lo * hi)]


def _search_rate(ev: _Evaluator, r: RateRange, k: int) -> tuple[float | None, bool, bool, int]:
    low, high = r.low_per_s or 0.0, r.high_per_s or 0.0  # both set (SearchSpec checks)
    ev.evaluate([low, high], lambda v: v)
    if ev.met(high):
        return high, False, _monotone(ev, decreasing=True), 0
    if not ev.met(low):
        return None, True, _monotone(ev, decreasing=True), 0
    lo, hi, rounds = low, high, 0
    while hi > lo * (1 + r.rel_tol) and rounds < MAX_ROUNDS:
        ev.evaluate(_rate_probes(lo, hi, k), lambda v: v)
        rounds += 1
        hi = min(v for v in ev.points if not ev.met(v))
        lo = max(v for v in ev.points if ev.met(v) and v < hi)
    return lo, True, _monotone(ev, decreasing=True), rounds


def _search_instances(ev: _Evaluator, n: InstanceRange, rate_per_s: float | None, k: int
                      ) -> tuple[int | None, bool, bool, int]:
    ev.evaluate([n.low, n.high], lambda v: rate_per_s)
    if ev.met(n.low):
        return n.low, True, _monotone(ev, decreasing=False), 0
    if not ev.met(n.high):
        return None, True, _monotone(ev, decreasing=False), 0
    lo, hi, rounds = n.low, n.high, 0
    while hi - lo > 1 and rounds < MAX_ROUNDS:
        step = (hi - lo) / (k + 1)
        probes = sorted({min(hi - 1, max(lo + 1, round(lo + i * step))) for i in range(1, k + 1)})
        ev.evaluate([float(p) for p in probes], lambda v: rate_per_s)
        rounds += 1
        lo = int(max(v for v in ev.points if not ev.met(v)))
        hi = int(min(v for v in ev.points if ev.met(v) and v > lo))
    return hi, True, _monotone(ev, decreasing=False), rounds


def _monotone(ev: _Evaluator, *, decreasing: bool) -> bool:
    """True when the evaluations are consistent with a monotone criterion."""
    flags = [ev.met(v) for v in sorted(ev.points)]
    if decreasing:
        flags = flags[::-1]
    # increasing: once met, met from there on
    return all(b or not a for a, b in zip(flags, flags[1:], strict=False))


def run_search(spec: SearchSpec, *, out_dir: str | Path | None = None,
               backend: BackendKind | str = BackendKind.LOCAL, workers: int | None = None,
               address: str | None = None, plots: bool = True) -> SearchResult:
    """Run a capacity search (see the module doc) and publish its evaluations.

    Writes ``<out_dir>/results/`` (``results.parquet``/``.csv`` with one row per evaluated
    point, ``sweep.json`` with the answer, plots against the searched value) atomically.

    Raises:
        ConfigError: a bad probe experiment, an output directory that is not a search's, a
            trace without a time span, a backend that cannot start.
    """
    t0 = time.perf_counter()
    out = Path(out_dir) if out_dir is not None else default_out_dir(spec, "search")
    pool = open_backend(backend, workers=workers, address=address)
    with pool:
        ev = _Evaluator(spec, pool, out)
        k = max(1, pool.workers)
        rate: float | None = None
        answer: float | int | None
        if spec.find == SearchGoal.MAX_RATE and spec.rate is not None:  # set (SearchSpec)
            answer, bounded, monotone, rounds = _search_rate(ev, spec.rate, k)
        elif spec.instances is not None:  # set for min_instances (SearchSpec)
            rate = spec.rate.per_s if spec.rate is not None else None
            answer, bounded, monotone, rounds = _search_instances(ev, spec.instances, rate, k)
        else:
            raise ConfigError("find: min_instances needs instances", path=spec.source,
                              field="instances")
    table = ev.table()
    info = {"name": spec.name, "experiment": str(spec.experiment), "find": str(spec.find),
            "answer": answer, "bounded": bounded, "monotone": monotone, "rounds": rounds,
            "rate_per_s": rate, "base_rate_per_s": ev.base_rate_per_s,
            "slo": spec.slo.as_dict(), "set": dict(spec.common),
            "rate": None if spec.rate is None else {
                "low_per_s": spec.rate.low_per_s, "high_per_s": spec.rate.high_per_s,
                "rel_tol": spec.rate.rel_tol, "per_s": spec.rate.per_s},
            "rate_method": "scale_rate of the trace's arrivals (factor = rate / base rate)"}
    axis = "rate_per_s" if spec.find == SearchGoal.MAX_RATE else "instances"
    write_results(out / RESULTS_DIR, table, [axis], info, plots=plots)
    return SearchResult(find=spec.find, answer=answer, bounded=bounded, monotone=monotone,
                        rate_per_s=rate, base_rate_per_s=ev.base_rate_per_s, evaluations=table,
                        rounds=rounds, num_run=ev.num_run, out_dir=out,
                        wall_s=time.perf_counter() - t0)
