"""Sweep files: a grid or a list of overrides over one base experiment.

Schema (``SWEEP.yaml``)::

    experiment: ../rtxpro6000-llama-3.1-8b.yaml   # base experiment (relative to this file)
    name: engine-grid                # default: the file's stem
    output_dir: out/sweeps/engine-grid   # default out/sweeps/<name> (relative to the cwd)
    set:                             # overrides applied to every point (``--set`` keys)
      engine.cudagraph_capture_sizes: null
    grid:                            # cartesian product, axes in file order (last fastest)
      engine.max_num_seqs: [32, 64, 128]
      router: [round_robin, least_loaded]
    points:                          # explicit points, run after the grid's
      - {engine.max_num_seqs: 256, instances: 4}
    slo:                             # optional: per-request SLOs for goodput
      ttft_s: 1.0
      tpot_s: 0.05
      attainment: 0.9                # SLO met when >= 90% of requests meet both
      ttft_percentile: 99            # optional: also TTFT p99 <= ttft_s
      tpot_percentile: 99            # optional: also TPOT p99 <= tpot_s

Keys of ``set``, ``grid`` and ``points`` are the dotted experiment keys of ``llmsim replay
--set`` (:func:`llmsim.experiment.parse_override`); a point's override replaces the
``set`` value of the same key. Every point is validated as a full experiment when the sweep
is loaded (:func:`llmsim.sweep.runner.plan_sweep`), so an unknown key or a bad value stops
the sweep before anything runs, naming this file, the line of the axis and the key.

SLO definitions (DistServe, Zhong et al., OSDI 2024, sec. 2: goodput is the rate served
while meeting the SLO attainment goal; vLLM ``bench serve --goodput``, vllm/benchmarks/
serve.py ``calculate_metrics``: a request is good when every metric is <= its SLO, TPOT
counts as 0 for a request of one output token, ``request_goodput`` = good requests /
duration): see :mod:`llmsim.sweep.point`.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Self

from pydantic import ConfigDict, Field, Strict, TypeAdapter, ValidationError, model_validator
from pydantic.dataclasses import dataclass

from llmsim.errors import ConfigError
from llmsim.experiment import line_of
from llmsim.yamlfile import load_yaml_document

__all__ = [
    "FieldError",
    "MAX_AXIS_VALUES",
    "MAX_SWEEP_POINTS",
    "SloConfig",
    "SweepSpec",
    "load_sweep",
    "spec_error",
]

MAX_SWEEP_POINTS = 100_000
"""Most points of one sweep: the driver validates every point's experiment before the run
(~10 ms each: ~20 min at this bound), holds every point's overrides and record (a few KiB
each) and the store keeps one file per point."""

MAX_AXIS_VALUES = 10_000
"""Most values of one axis (each is a point of its own at least)."""

_MAX_NAME_CHARS = 256

_Float = Annotated[float, Strict(), Field(allow_inf_nan=False)]
_Name = Annotated[str, Strict(), Field(min_length=1, max_length=_MAX_NAME_CHARS)]
_Key = Annotated[str, Strict(), Field(min_length=1, max_length=_MAX_NAME_CHARS,
                                      pattern=r"^[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*$")]
_CONFIG = ConfigDict(extra="forbid", validate_by_name=True, validate_by_alias=True)


@dataclass(frozen=True, slots=True, kw_only=True, config=_CONFIG)
class SloConfig:
    """Per-request service-level objectives.

    Attributes:
        ttft_s: a request meets the TTFT SLO when its TTFT is <= this, s (None: no bound).
        tpot_s: ... its TPOT (mean time per output token after the first) is <= this, s;
            a request of one output token counts as TPOT 0 (vLLM bench's rule).
        attainment: the SLO is met when at least this fraction of all requests meets
            every bound (DistServe's SLO attainment goal), in (0, 1].
        ttft_percentile: when given, the SLO also needs TTFT at this percentile (numpy
            linear, unfinished requests counted as infinite) <= ``ttft_s``.
        tpot_percentile: likewise for TPOT and ``tpot_s``.
    """

    ttft_s: Annotated[_Float | None, Field(gt=0)] = None
    tpot_s: Annotated[_Float | None, Field(gt=0)] = None
    attainment: Annotated[_Float, Field(gt=0, le=1)] = 0.9
    ttft_percentile: Annotated[_Float | None, Field(gt=0, le=100)] = None
    tpot_percentile: Annotated[_Float | None, Field(gt=0, le=100)] = None

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.ttft_s is None and self.tpot_s is None:
            raise ValueError("give ttft_s, tpot_s or both")
        if self.ttft_percentile is not None and self.ttft_s is None:
            raise FieldError("ttft_percentile", "needs ttft_s")
        if self.tpot_percentile is not None and self.tpot_s is None:
            raise FieldError("tpot_percentile", "needs tpot_s")
        return self

    def as_dict(self) -> dict[str, float | None]:
        """The SLO as a JSON-able mapping (part of every point's config hash)."""
        return {"ttft_s": self.ttft_s, "tpot_s": self.tpot_s, "attainment": self.attainment,
                "ttft_percentile": self.ttft_percentile, "tpot_percentile": self.tpot_percentile}


_Overrides = dict[_Key, Any]


class FieldError(ValueError):
    """Raised in a spec's validator to blame ``field`` (dotted, relative to the section)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True, slots=True, kw_only=True, config=_CONFIG)
class SweepSpec:
    """A validated sweep file (see the module doc).

    Attributes:
        experiment: the base experiment file (resolved against the sweep file's directory).
        name: sweep name.
        output_dir: where results go (None: ``out/sweeps/<name>``).
        common: overrides of every point (YAML ``set``).
        grid: axis key -> values; the points are their cartesian product.
        points: explicit points (key -> value), after the grid's.
        slo: SLOs for goodput columns (None: none).
        source: the sweep file (None when built in code).
        lines: dotted key -> 1-based line in ``source``.
    """

    experiment: Path
    name: _Name = "sweep"
    output_dir: Path | None = None
    common: _Overrides = Field(default_factory=dict, validation_alias="set")
    grid: dict[_Key, Annotated[list[Any], Field(min_length=1, max_length=MAX_AXIS_VALUES)]] = \
        Field(default_factory=dict)
    points: Annotated[tuple[_Overrides, ...], Field(max_length=MAX_SWEEP_POINTS)] = ()
    slo: SloConfig | None = None
    source: Path | None = None
    lines: Mapping[str, int] = Field(default_factory=dict, repr=False)

    @model_validator(mode="after")
    def _check(self) -> Self:
        if not self.grid and not self.points:
            raise ValueError("a sweep needs a grid, points, or both")
        n = math.prod(len(v) for v in self.grid.values()) if self.grid else 0
        if n + len(self.points) > MAX_SWEEP_POINTS:
            raise FieldError("grid" if self.grid else "points",
                             f"{n + len(self.points)} points exceeds {MAX_SWEEP_POINTS} (the "
                             "driver validates and holds every point)")
        return self

    @property
    def axes(self) -> list[str]:
        """The swept keys: grid axes in file order, then keys only explicit points set."""
        keys = list(self.grid)
        for p in self.points:
            keys += [k for k in p if k not in keys]
        return keys

    def point_overrides(self) -> list[dict[str, Any]]:
        """Every point's swept values (grid first, last axis fastest; then ``points``)."""
        out: list[dict[str, Any]] = []
        if self.grid:
            keys = list(self.grid)
            out += [dict(zip(keys, combo, strict=True))
                    for combo in itertools.product(*self.grid.values())]
        out += [dict(p) for p in self.points]
        return out

    def line_of_axis(self, index: int, key: str) -> int | None:
        """The line that sets ``key`` for point ``index`` (its grid axis or points entry)."""
        n_grid = math.prod(len(v) for v in self.grid.values()) if self.grid else 0
        if index >= n_grid:
            return line_of(f"points.{index - n_grid}.{key}", self.lines)
        return line_of(f"grid.{key}", self.lines) if key in self.grid else \
            line_of(f"set.{key}", self.lines)


# ------------------------------------------------------------------------ errors
def _known(cls: type) -> list[str]:
    fields = getattr(cls, "__pydantic_fields__", {})
    return sorted((info.validation_alias if isinstance(info.validation_alias, str) else name)
                  for name, info in fields.items() if name not in ("source", "lines"))


def spec_error(exc: ValidationError, *, source: Path | None, lines: Mapping[str, int],
               sections: Mapping[str, type]) -> ConfigError:
    """The located :class:`ConfigError` of a sweep/search file's first failing field.

    Args:
        exc: pydantic's error.
        source: the file.
        lines: dotted key -> line.
        sections: dotted section (``""`` for the top level) -> its config class, for the
            list of known keys after an unknown one.
    """
    found = []
    for err in exc.errors():
        parts = [str(p) for p in err["loc"] if "[" not in str(p) and "function-" not in str(p)]
        parts = [p for p in parts if p not in ("list", "tuple")]
        kind = err["type"]
        cause = (err.get("ctx") or {}).get("error")
        if isinstance(cause, FieldError):
            parts += cause.field.split(".")
        field = ".".join(parts)
        if isinstance(cause, FieldError):
            message = str(cause)
        elif kind in ("unexpected_keyword_argument", "extra_forbidden"):
            cls = sections.get(".".join(parts[:-1]))
            message = f"unknown key (known: {', '.join(_known(cls))})" if cls else "unknown key"
        elif kind.startswith("missing"):
            message = "missing"
        else:
            message = str(err["msg"])
            message = message.removeprefix("Value error, ")
            message = message.replace("Input should be ", "must be ")
            if kind not in ("value_error",):
                message += f", got {str(err.get('input'))[:80]!s}"
        found.append((line_of(field, lines) or 10**9, field, message))
    line, field, message = min(found)
    return ConfigError(message, path=source, line=line if line < 10**9 else None,
                       field=field or None)


@functools.cache
def _adapter() -> TypeAdapter[SweepSpec]:
    return TypeAdapter(SweepSpec)


def load_sweep(path: str | Path) -> SweepSpec:
    """Read and validate a sweep file (the points are validated by ``plan_sweep``).

    Raises:
        ConfigError: unreadable file, invalid YAML, an unknown key or bad value (file,
            line, field); the base experiment file missing.
    """
    path = Path(path)
    doc = load_yaml_document(path, what="sweep file")
    raw = doc.data
    if not isinstance(raw, dict):
        raise ConfigError("a sweep file is a YAML mapping", path=path)
    for key in ("source", "lines"):
        if key in raw:
            raise ConfigError(f"unknown key (known: {', '.join(_known(SweepSpec))})", path=path,
                              line=doc.lines.get(key), field=key)
    data = {"name": path.stem, **raw, "source": path, "lines": doc.lines}
    try:
        spec = _adapter().validate_python(data)
    except ValidationError as exc:
        raise spec_error(exc, source=path, lines=doc.lines,
                         sections={"": SweepSpec, "slo": SloConfig}) from None
    resolved: SweepSpec = resolve_experiment_path(spec, path, doc.lines)
    return resolved


def resolve_experiment_path(spec: Any, path: Path, lines: Mapping[str, int]) -> Any:
    """``spec`` with ``experiment`` made absolute, relative to ``path``'s directory (must
    exist)."""
    import dataclasses

    # absolute: workers (a Ray cluster's) may run elsewhere, and the config hash holds the
    # input paths resolved against it, so it must not depend on the working directory
    exp = (spec.experiment if spec.experiment.is_absolute()
           else path.parent / spec.experiment).absolute()
    if not exp.is_file():
        raise ConfigError(f"base experiment file not found: {exp}", path=path,
                          line=lines.get("experiment"), field="experiment")
    return dataclasses.replace(spec, experiment=exp)
