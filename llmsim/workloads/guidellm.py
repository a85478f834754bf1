"""guidellm workloads: synthetic data and its rate types.

The spec uses guidellm's synthetic-data keys (``--data "prompt_tokens=256,..."``) and its
benchmark options::

    tool: guidellm
    seed: 42                      # guidellm's --random-seed default
    data:
      prompt_tokens: 256
      prompt_tokens_stdev: 0      # optional: normal(mean, stdev) clipped to [min, max]
      prompt_tokens_min: 1
      prompt_tokens_max: 10000000
      output_tokens: 128          # same four keys for the output
      prefix_tokens: 0            # a prefix shared by every request
    rate_type: constant           # synchronous | throughput | concurrent | constant | poisson | sweep
    rate: 10                      # req/s (constant, poisson) or streams (concurrent)
    max_requests: 1000
    max_seconds: null             # constant / poisson: stop sending after this many s

Semantics (guidellm docs, "Run a Benchmark" and "Datasets"): lengths are normal(mean, stdev)
clipped to ``[min, max]`` and rounded (a fixed length without ``stdev``); the prompt is the
shared ``prefix_tokens`` prefix followed by ``prompt_tokens`` unshared tokens. Rate types:

* ``synchronous``: one request at a time (a closed loop of 1);
* ``concurrent``: ``rate`` streams, each sending its next request when the last finished
  (closed-loop lanes, :func:`llmsim.workloads.build.lane_parents`);
* ``throughput``: every request at ``t = 0``;
* ``constant``: evenly spaced at ``rate`` req/s; ``poisson``: exponential gaps, mean
  ``1 / rate``; both from ``t = 0``.

Closed-loop types need ``max_requests`` (their end time is known only after the simulation).
Not supported yet: ``sweep``, whose constant rates lie between the synchronous and throughput
rates guidellm first *measures* on the server; run one spec per rate instead.
"""

from __future__ import annotations

import math

import numpy as np

from llmsim.trace.frame import TraceFrame
from llmsim.workloads.build import (
    Arrival,
    TokenAllocator,
    WorkloadBuilder,
    check_budget,
    clipped_normal,
    lane_parents,
    open_loop_s,
)
from llmsim.workloads.fields import MAX_SPEC_REQUESTS, MAX_SPEC_TOKENS, Fields

RATE_TYPES = ("synchronous", "throughput", "concurrent", "constant", "poisson", "sweep")


def generate(spec: Fields, rng: np.random.Generator, *, seed: int) -> TraceFrame:
    """The trace a guidellm spec describes (see the module docstring).

    Raises:
        ConfigError: a bad or unknown key (file, line, field), or ``sweep``.
    """
    kind = spec.choice("rate_type", RATE_TYPES, "constant")
    if kind == "sweep":
        raise spec.error("rate_type", "sweep is not supported yet: its rates come from the "
                         "synchronous and throughput rates guidellm measures first; write one "
                         "spec per constant rate instead")
    data = spec.need("data")
    max_req = spec.raw("max_requests")
    n_cap = MAX_SPEC_REQUESTS if max_req is None else spec.int_("max_requests", minimum=1,
                                                               maximum=MAX_SPEC_REQUESTS)
    max_s = spec.raw("max_seconds")
    lanes: int | None = None
    if kind in ("constant", "poisson"):
        rate = spec.float_("rate", open_min=True, maximum=1e9)
        if max_s is not None:
            seconds = spec.float_("max_seconds", open_min=True, maximum=400 * 86_400.0)
            n = min(n_cap, int(math.ceil(rate * seconds)))
        elif max_req is None:
            raise spec.error("max_requests", "missing: give max_requests or max_seconds")
        else:
            n = n_cap
        proc = Arrival.CONSTANT if kind == "constant" else Arrival.POISSON
        arrivals = open_loop_s(proc, rate_per_s=rate, n=n, rng=rng)
        if max_s is not None:
            arrivals = arrivals[arrivals < seconds]
            n = len(arrivals)
    else:
        if max_req is None:
            raise spec.error("max_requests", f"missing: a {kind} benchmark needs max_requests "
                             "(its duration is known only after the simulation)")
        n = n_cap
        if kind == "concurrent":
            lanes = spec.int_("rate", minimum=1, maximum=MAX_SPEC_REQUESTS)
        elif kind == "synchronous":
            lanes = 1
        arrivals = np.zeros(n)
    spec.check_unknown()
    prompt = _lengths(data, "prompt_tokens", rng, n)
    output = _lengths(data, "output_tokens", rng, n)
    prefix_len = data.int_("prefix_tokens", 0)
    check_budget(prefix_len + float(prompt.sum()), lambda m: data.error("prompt_tokens", m))
    data.raw("samples")
    data.check_unknown()
    tokens = TokenAllocator()
    prefix = tokens.fresh(prefix_len)
    parents = lane_parents(n, lanes)
    b = WorkloadBuilder()
    for k in range(n):
        b.add(arrival_s=arrivals[k], input_ids=prefix + tokens.fresh(int(prompt[k])),
              output_tokens=int(output[k]), parent=int(parents[k]),
              session=None if lanes is None else f"stream{k % lanes}")
    desc = f"guidellm rate_type={kind} rate={spec.data.get('rate')} max_requests={max_req} seed={seed}"
    return b.frame(name=f"guidellm-{kind}", source=f"generated: {desc}", metadata={"generator": desc})


def _lengths(data: Fields, key: str, rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` lengths from ``key``, ``key_stdev``, ``key_min``, ``key_max``, shape (n,)."""
    mean = data.int_(key, minimum=0 if key == "prompt_tokens" else 1)
    std = data.float_(f"{key}_stdev", 0.0, maximum=MAX_SPEC_TOKENS)
    lo = data.int_(f"{key}_min", 0 if key == "prompt_tokens" else 1,
                   minimum=0 if key == "prompt_tokens" else 1)
    hi = data.int_(f"{key}_max", MAX_SPEC_TOKENS, minimum=lo)
    if not lo <= mean <= hi:
        raise data.error(key, f"must be within [{key}_min, {key}_max] = [{lo}, {hi}], got {mean}")
    return clipped_normal(rng, mean=mean, stdev=std, minimum=lo, maximum=hi, n=n)
