"""Token-id synthesis and arrival processes shared by the workload generators.

Token ids
---------
Prefix caching keys a KV block on the ids of the tokens up to and including it
(:mod:`llmsim.kvcache.hashing`), so a generator only has to decide which *segments* of a
prompt are the same text. :class:`TokenAllocator` hands out each new segment as a run of ids
never used before in the workload (``next, next + 1, ...``), and a segment meant to be shared
(a system prompt, a ``prefix_len`` prefix) is the same tuple wherever it appears. Hence:

* two prompts share exactly the full blocks inside their common shared segments: a shared
  prefix of ``P`` tokens gives ``P // block_size`` cache hits to every later request that
  starts with it (the block that straddles the end of the prefix differs);
* two different segments never share a block, by construction, where random ids (as the
  tools draw them) make an accidental match only improbable.

The tools draw random ids from a tokenizer's vocabulary and decode them to text; the server
re-tokenizes that text, which can change a count by a token or two. llmsim has no tokenizer,
so counts are exact as specified (documented difference).

Arrivals
--------
Open loop (``open_loop_s``): the first request at ``t = 0``, then gaps of

* ``constant``: ``1 / rate`` s;
* ``poisson``: exponential with mean ``1 / rate``;
* ``gamma``: shape ``burstiness``, scale ``1 / (rate * burstiness)`` (mean ``1 / rate``,
  CV ``1 / sqrt(burstiness)``), vLLM ``bench serve``'s ``--burstiness``
  (``vllm/benchmarks/serve.py``, ``get_request``; ``burstiness = 1`` is Poisson);
* ``rate = inf``: every request at ``t = 0`` (vLLM's default ``--request-rate inf``).

Closed loop (``lane_parents``): ``C`` concurrent clients. Request ``k >= C`` gets request
``k - C`` as its ``parent_id``, so the serving loop (:mod:`llmsim.sim.loop`) releases it when
that request finishes, at ``max(arrival, parent finish)``. This keeps exactly ``C`` requests
in flight (until the trace runs out), as vLLM's ``--max-concurrency`` semaphore and
guidellm's ``concurrent`` streams do. **Approximation:** the lanes are fixed in advance
(request ``k`` waits for request ``k - C``), whereas a semaphore hands the freed slot to the
next request whichever request finished; with i.i.d. lengths (every synthetic dataset here)
the two agree in distribution, but not request by request.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np
import pandas as pd

from llmsim.errors import ConfigError
from llmsim.trace.frame import DEFAULT_MAX_SPAN_S, NS_PER_S, TraceFrame
from llmsim.workloads.fields import MAX_SPEC_TOTAL_TOKENS


class Arrival(StrEnum):
    """Open-loop arrival processes."""

    CONSTANT = "constant"
    POISSON = "poisson"
    GAMMA = "gamma"


def open_loop_s(kind: Arrival, *, rate_per_s: float, n: int, rng: np.random.Generator,
                burstiness: float = 1.0) -> np.ndarray:
    """Arrival times of ``n`` requests, s from the first one (which is at 0), shape (n,).

    Args:
        kind: the process (see the module docstring).
        rate_per_s: mean rate, req/s (> 0; ``inf``: all at 0).
        n: number of requests (>= 0).
        rng: the spec's generator.
        burstiness: gamma shape (gamma only, > 0).

    Raises:
        ConfigError: the span exceeds the 400-day trace limit.
    """
    if n <= 0:
        return np.zeros(0)
    if math.isinf(rate_per_s):
        return np.zeros(n)
    if kind is Arrival.CONSTANT:
        gaps = np.full(n - 1, 1.0 / rate_per_s)
    elif kind is Arrival.POISSON:
        gaps = rng.exponential(1.0 / rate_per_s, size=n - 1)
    else:
        gaps = rng.gamma(burstiness, 1.0 / (rate_per_s * burstiness), size=n - 1)
    times = np.concatenate([[0.0], np.cumsum(gaps)])
    if not times[-1] <= DEFAULT_MAX_SPAN_S:
        raise ConfigError(f"{n} requests at {rate_per_s} req/s span {times[-1]:.3g} s, more than "
                          f"the {DEFAULT_MAX_SPAN_S} s limit of a trace", field="rate")
    return times


def lane_parents(n: int, lanes: int | None) -> np.ndarray:
    """Closed-loop parents: index ``k - lanes`` for ``k >= lanes``, else -1; shape (n,).

    ``lanes = None`` (no concurrency limit) gives no parents.
    """
    idx = np.arange(n, dtype=np.int64)
    if lanes is None:
        return np.full(n, -1, dtype=np.int64)
    return np.where(idx >= lanes, idx - lanes, -1)


def clipped_normal(rng: np.random.Generator, *, mean: float, stdev: float, minimum: int,
                   maximum: int, n: int) -> np.ndarray:
    """``n`` integer lengths: normal(mean, stdev), clipped to ``[minimum, maximum]`` and
    rounded; ``stdev = 0`` gives ``round(mean)`` clipped. Shape (n,), int64.

    Source: inference-perf ``inference_perf/utils/distribution.py`` (``generate_distribution``,
    ``normal``: draw, clip, round, clip) and guidellm's synthetic token counts (mean, stdev,
    min, max); both clip rather than redraw.
    """
    draws = rng.normal(mean, stdev, size=n) if stdev > 0 else np.full(n, float(mean))
    return np.clip(np.round(np.clip(draws, minimum, maximum)), minimum, maximum).astype(np.int64)


def check_budget(total_tokens: float, error: Callable[[str], ConfigError]) -> None:
    """Refuse, before allocating them, more distinct prompt tokens than
    :data:`~llmsim.workloads.fields.MAX_SPEC_TOTAL_TOKENS`.

    Raises:
        ConfigError: built by ``error(message)`` (so it names the spec key at fault).
    """
    if total_tokens > MAX_SPEC_TOTAL_TOKENS:
        raise error(f"the spec asks for {total_tokens:.4g} distinct prompt tokens, more than "
                    f"{MAX_SPEC_TOTAL_TOKENS}; split it into smaller specs")


@dataclass(slots=True)
class TokenAllocator:
    """Fresh token ids: every call returns ids never returned before (see module docstring)."""

    next_id: int = 1

    def fresh(self, n: int) -> tuple[int, ...]:
        """``n`` new ids, as a tuple."""
        start = self.next_id
        self.next_id += n
        return tuple(range(start, start + n))


@dataclass(slots=True)
class WorkloadBuilder:
    """Collects generated requests and turns them into a :class:`TraceFrame`.

    Request ids are ``"0", "1", ...`` in the order added; parents are given by index and
    must be earlier requests.
    """

    arrivals_s: list[float] = field(default_factory=list)
    inputs: list[tuple[int, ...]] = field(default_factory=list)
    output_lens: list[int] = field(default_factory=list)
    output_ids: list[tuple[int, ...] | None] = field(default_factory=list)
    sessions: list[str | None] = field(default_factory=list)
    parents: list[int] = field(default_factory=list)
    turns: list[int] = field(default_factory=list)
    total_tokens: int = 0

    def add(self, *, arrival_s: float, input_ids: tuple[int, ...], output_tokens: int,
            output_ids: tuple[int, ...] | None = None, session: str | None = None,
            parent: int = -1, turn: int = 0) -> int:
        """Append one request; returns its index.

        Raises:
            ConfigError: an empty prompt or output, a parent that is not earlier, or more
                than :data:`~llmsim.workloads.fields.MAX_SPEC_TOTAL_TOKENS` prompt tokens in all.
        """
        if not input_ids or output_tokens < 1:
            raise ConfigError(f"request {len(self.inputs)}: prompt and output must have >= 1 "
                              f"token (got {len(input_ids)} and {output_tokens})", field="lengths")
        if parent >= len(self.inputs):
            raise ConfigError(f"request {len(self.inputs)}: parent {parent} is not earlier", field="parent")
        self.total_tokens += len(input_ids)
        if self.total_tokens > MAX_SPEC_TOTAL_TOKENS:
            raise ConfigError(f"the spec generates more than {MAX_SPEC_TOTAL_TOKENS} prompt tokens "
                              f"(at request {len(self.inputs)}); split it into smaller specs",
                              field="lengths")
        self.arrivals_s.append(float(arrival_s))
        self.inputs.append(input_ids)
        self.output_lens.append(int(output_tokens))
        self.output_ids.append(output_ids)
        self.sessions.append(session)
        self.parents.append(int(parent))
        self.turns.append(int(turn))
        return len(self.inputs) - 1

    def frame(self, *, name: str, source: str, metadata: dict[str, str]) -> TraceFrame:
        """The requests as a frame sorted by arrival (stable: ties keep the order added).

        Raises:
            ConfigError: no requests.
        """
        n = len(self.inputs)
        if n == 0:
            raise ConfigError("the spec generates no requests", field="num_requests")
        arrival_ns = np.round(np.asarray(self.arrivals_s) * NS_PER_S).astype(np.int64)
        data: dict[str, object] = {
            "request_id": [str(i) for i in range(n)],
            "arrival_ns": arrival_ns,
            "input_tokens": np.fromiter((len(t) for t in self.inputs), np.int64, n),
            "output_tokens": np.asarray(self.output_lens, dtype=np.int64),
            "input_token_ids": list(self.inputs),
        }
        if any(o is not None for o in self.output_ids):
            data["output_token_ids"] = list(self.output_ids)
        if any(p >= 0 for p in self.parents) or any(s is not None for s in self.sessions):
            data["session_id"] = pd.Series(self.sessions, dtype=object)
            data["parent_id"] = pd.Series([None if p < 0 else str(p) for p in self.parents], dtype=object)
            data["turn"] = np.asarray(self.turns, dtype=np.int64)
            data["think_time_ns"] = np.zeros(n, dtype=np.int64)
        df = pd.DataFrame(data)
        order = np.argsort(arrival_ns, kind="stable")
        position = np.empty(n, dtype=np.int64)
        position[order] = np.arange(n)
        parents = np.asarray(self.parents, dtype=np.int64)
        has = parents >= 0
        if (position[parents[has]] >= position[has]).any():
            raise ConfigError("a request arrives before the request it waits for; the serving loop "
                              "needs parents first (a generator bug)", field="parent")
        df = df.iloc[order].reset_index(drop=True)
        return TraceFrame(data=df, source=source, name=name, metadata=metadata)
