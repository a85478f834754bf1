"""Seeded synthetic traces: Poisson or Gamma arrivals, fixed or empirical lengths.

Inter-arrival gaps for a target rate ``r`` (req/s) and coefficient of variation ``cv``:

* Poisson: exponential gaps with mean ``1/r`` (CV = 1);
* Gamma: shape ``k = 1 / cv**2``, scale ``1 / (r * k)`` (mean ``1/r``, CV = ``cv``);
  ``cv > 1`` gives bursty traffic, ``cv < 1`` smoother than Poisson.

Lengths are either fixed (``{"input": 512, "output": 128}``) or drawn jointly, with
replacement, from the (input, output) pairs of a named catalog trace (``"azure-conv-2023"``)
or a given :class:`TraceFrame`, which keeps their correlation. All draws come from one
``numpy.random.default_rng(seed)``: the same arguments give the same trace.
"""

from __future__ import annotations

from enum import StrEnum

import numpy as np
import pandas as pd

from llmsim.errors import ConfigError
from llmsim.trace.frame import NS_PER_S, TraceFrame


class ArrivalProcess(StrEnum):
    """Arrival processes of :func:`generate_trace`."""

    POISSON = "poisson"
    GAMMA = "gamma"


def interarrival_s(process: ArrivalProcess | str, *, rate_per_s: float, n: int, rng: np.random.Generator,
                   cv: float = 1.0) -> np.ndarray:
    """``n`` inter-arrival gaps in seconds, shape (n,).

    Raises:
        ConfigError: non-positive rate or CV, or unknown process.
    """
    if not rate_per_s > 0:
        raise ConfigError(f"rate must be > 0 req/s, got {rate_per_s}", field="rate_per_s")
    try:
        kind = ArrivalProcess(process)
    except ValueError:
        raise ConfigError(f"unknown arrival process {process!r}", field="arrival") from None
    if kind is ArrivalProcess.POISSON:
        return rng.exponential(1.0 / rate_per_s, size=n)
    if not cv > 0:
        raise ConfigError(f"cv must be > 0, got {cv}", field="cv")
    shape = 1.0 / cv**2
    return rng.gamma(shape, 1.0 / (rate_per_s * shape), size=n)


def _length_pairs(lengths: str | dict | TraceFrame, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, str]:
    if isinstance(lengths, dict):
        try:
            n_in, n_out = int(lengths["input"]), int(lengths["output"])
        except (KeyError, TypeError, ValueError):
            raise ConfigError("fixed lengths need integer 'input' and 'output'", field="lengths") from None
        if n_in < 1 or n_out < 1:
            raise ConfigError("fixed lengths must be >= 1", field="lengths")
        return np.full(n, n_in, np.int64), np.full(n, n_out, np.int64), f"fixed {n_in}/{n_out}"
    if isinstance(lengths, str):
        from llmsim.data.catalog import named_trace_path
        from llmsim.trace.registry import load_trace_frame

        path, fmt = named_trace_path(lengths)
        source, name = load_trace_frame(fmt, path), lengths
    else:
        source, name = lengths, lengths.name or "frame"
    idx = rng.integers(0, len(source), size=n)
    return (source.data["input_tokens"].to_numpy()[idx].astype(np.int64),
            source.data["output_tokens"].to_numpy()[idx].astype(np.int64), f"empirical {name}")


def generate_trace(
    *,
    n: int,
    rate_per_s: float,
    arrival: ArrivalProcess | str = ArrivalProcess.POISSON,
    cv: float = 1.0,
    lengths: str | dict | TraceFrame = {"input": 512, "output": 128},  # noqa: B006 (read-only)
    seed: int = 0,
) -> TraceFrame:
    """A synthetic trace of ``n`` requests; the first arrives at 0.

    Args:
        n: number of requests (>= 1).
        rate_per_s: mean arrival rate, req/s.
        arrival: ``poisson`` or ``gamma``.
        cv: inter-arrival coefficient of variation (gamma only).
        lengths: fixed ``{"input", "output"}``, a catalog trace name, or a frame to sample.
        seed: RNG seed.

    Raises:
        ConfigError: bad parameter.
        DataNotFoundError: the named length trace is not available locally.
    """
    if n < 1:
        raise ConfigError(f"n must be >= 1, got {n}", field="n")
    rng = np.random.default_rng(seed)
    gaps = interarrival_s(arrival, rate_per_s=rate_per_s, n=n - 1, rng=rng, cv=cv)
    arrival_ns = np.concatenate([[0], np.round(np.cumsum(gaps) * NS_PER_S)]).astype(np.int64)
    n_in, n_out, how = _length_pairs(lengths, n, rng)
    df = pd.DataFrame({"request_id": np.arange(n), "arrival_ns": arrival_ns, "input_tokens": n_in,
                       "output_tokens": n_out})
    desc = f"{arrival} rate={rate_per_s}/s cv={cv if str(arrival) == 'gamma' else 1.0} lengths={how} seed={seed}"
    return TraceFrame(data=df, source=f"generated: {desc}", name=f"synthetic-{arrival}",
                      metadata={"generator": desc})
