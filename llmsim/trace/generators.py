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

import math
from enum import StrEnum

import numpy as np
import pandas as pd

from llmsim.errors import ConfigError
from llmsim.trace.frame import DEFAULT_MAX_SPAN_S, NS_PER_S, TraceFrame
from llmsim.trace.inputs import MAX_TOKENS

#: Most requests one generated trace may hold (10^8 rows = a few GB as a frame).
MAX_REQUESTS = 100_000_000
#: Largest inter-arrival CV accepted (Gamma shape 1/cv**2 >= 1e-6 stays well conditioned).
MAX_CV = 1000.0


def _is_real(value: object) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


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
    if not _is_real(rate_per_s) or not (math.isfinite(rate_per_s) and rate_per_s > 0):
        raise ConfigError(f"rate must be a finite number > 0 req/s, got {rate_per_s!r}", field="rate_per_s")
    try:
        kind = ArrivalProcess(process)
    except ValueError:
        raise ConfigError(f"unknown arrival process {process!r}", field="arrival") from None
    if kind is ArrivalProcess.POISSON:
        return rng.exponential(1.0 / rate_per_s, size=n)
    if not _is_real(cv) or not (math.isfinite(cv) and 0 < cv <= MAX_CV):
        raise ConfigError(f"cv must be a number in (0, {MAX_CV}], got {cv!r}", field="cv")
    shape = 1.0 / cv**2
    return rng.gamma(shape, 1.0 / (rate_per_s * shape), size=n)


def _length_pairs(lengths: str | dict[str, int] | TraceFrame, n: int, rng: np.random.Generator
                  ) -> tuple[np.ndarray, np.ndarray, str]:
    if isinstance(lengths, dict):
        n_in, n_out = lengths.get("input"), lengths.get("output")
        if set(lengths) != {"input", "output"} or not all(
                isinstance(v, (int, np.integer)) and not isinstance(v, bool) and 1 <= v <= MAX_TOKENS
                for v in (n_in, n_out)):
            raise ConfigError(f"fixed lengths need exactly integer 'input' and 'output' in [1, {MAX_TOKENS}], "
                              f"got {lengths!r}"[:300], field="lengths")
        return np.full(n, n_in, np.int64), np.full(n, n_out, np.int64), f"fixed {n_in}/{n_out}"
    if isinstance(lengths, str):
        from llmsim.data.catalog import named_trace_path
        from llmsim.trace.registry import load_trace_frame

        path, fmt = named_trace_path(lengths)
        source, name = load_trace_frame(fmt, path), lengths
    elif isinstance(lengths, TraceFrame) and len(lengths):
        source, name = lengths, lengths.name or "frame"
    else:
        raise ConfigError("lengths must be {input, output}, a catalog trace name or a non-empty trace, "
                          f"got {lengths!r}"[:300], field="lengths")
    idx = rng.integers(0, len(source), size=n)
    return (source.data["input_tokens"].to_numpy()[idx].astype(np.int64),
            source.data["output_tokens"].to_numpy()[idx].astype(np.int64), f"empirical {name}")


def generate_trace(
    *,
    n: int,
    rate_per_s: float,
    arrival: ArrivalProcess | str = ArrivalProcess.POISSON,
    cv: float = 1.0,
    lengths: str | dict[str, int] | TraceFrame = {"input": 512, "output": 128},  # noqa: B006 (read-only)
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
        ConfigError: bad parameter (``n`` not an integer in [1, :data:`MAX_REQUESTS`], rate
            or cv not finite and positive, a negative seed, fixed lengths that are not
            integers in [1, MAX_TOKENS], or a trace longer than 400 days).
        DataNotFoundError: the named length trace is not available locally.
    """
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or not 1 <= n <= MAX_REQUESTS:
        raise ConfigError(f"n must be an integer in [1, {MAX_REQUESTS}], got {n!r}", field="n")
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ConfigError(f"seed must be an integer >= 0, got {seed!r}", field="seed")
    rng = np.random.default_rng(seed)
    gaps = interarrival_s(arrival, rate_per_s=rate_per_s, n=n - 1, rng=rng, cv=cv)
    end_s = float(np.sum(gaps))
    if not end_s <= DEFAULT_MAX_SPAN_S:
        raise ConfigError(f"{n} requests at {rate_per_s!r} req/s span {end_s:.3g} s, more than the "
                          f"{DEFAULT_MAX_SPAN_S} s limit of a trace", field="rate_per_s")
    arrival_ns = np.concatenate([[0], np.round(np.cumsum(gaps) * NS_PER_S)]).astype(np.int64)
    n_in, n_out, how = _length_pairs(lengths, n, rng)
    df = pd.DataFrame({"request_id": np.arange(n), "arrival_ns": arrival_ns, "input_tokens": n_in,
                       "output_tokens": n_out})
    desc = f"{arrival} rate={rate_per_s}/s cv={cv if str(arrival) == 'gamma' else 1.0} lengths={how} seed={seed}"
    return TraceFrame(data=df, source=f"generated: {desc}", name=f"synthetic-{arrival}",
                      metadata={"generator": desc})
