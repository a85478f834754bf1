"""inference-perf (kubernetes-sigs) workloads: ``shared_prefix``, ``random`` / ``synthetic``
data and ``constant`` / ``poisson`` / ``concurrent`` load stages.

The spec mirrors inference-perf's config file (``docs/config.md``)::

    tool: inference-perf
    seed: 0                             # seeds every draw (load.base_seed is accepted, unused)
    data:
      type: shared_prefix               # shared_prefix | random | synthetic
      shared_prefix:
        num_groups: 10                  # system prompts
        num_prompts_per_group: 10       # users (questions) per system prompt
        system_prompt_len: 100
        question_len: 50                # or question_distribution: {min, max, mean, std_dev}
        output_len: 50                  # or output_distribution
        enable_multi_turn_chat: false
      input_distribution: {min: 10, max: 100, mean: 50, std_dev: 10}   # random / synthetic
      output_distribution: {min: 10, max: 100, mean: 50, std_dev: 10}
    load:
      type: constant                    # constant | poisson | concurrent
      stages:
        - {rate: 5, duration: 60}       # constant / poisson: req/s for s
        - {concurrency_level: 4, num_requests: 100}   # concurrent

Semantics (inference-perf ``inference_perf/datagen/shared_prefix_datagen.py``,
``inference_perf/utils/distribution.py``, ``docs/config.md``):

* lengths: normal(mean, std_dev) clipped to ``[min, max]`` and rounded
  (:func:`llmsim.workloads.build.clipped_normal`); in ``shared_prefix`` each group draws its
  own ``num_prompts_per_group`` question and output lengths (fixed ``question_len`` /
  ``output_len`` when no distribution is given).
* ``shared_prefix``, single turn: ``num_groups * num_prompts_per_group`` prompts, each its
  group's system prompt (``system_prompt_len`` tokens, shared) followed by its own question;
  the prompts are shuffled once and request ``k`` sends prompt ``k mod (number of prompts)``,
  so after one pass the same prompts come back (full prefix hits).
* ``shared_prefix``, multi turn (``enable_multi_turn_chat``): one user session per
  (group, question); request ``k`` is round ``k // U`` of user ``k mod U`` (``U`` users, in a
  shuffled order). A user's context starts as its system prompt; each round sends context +
  question and appends question + answer to the context, so round ``r``'s prompt is the whole
  previous round's prompt and answer plus the question again. Rounds of one user run one
  after another: round ``r`` is released when round ``r - 1`` finishes (its ``parent_id``).
* ``random`` / ``synthetic``: every request an unshared prompt with lengths drawn from the
  distributions (``synthetic`` draws text from a corpus in inference-perf; for prefix caching
  both are unshared prompts).
* load: stages run one after another. A ``constant`` / ``poisson`` stage sends
  ``round(rate * duration)`` requests, evenly spaced from the stage start (``constant``) or
  as a Poisson process of that rate conditioned on that count: independent uniform times in
  the stage, sorted, whose gaps are exponential with mean ``1 / rate`` (``poisson``; no
  request of a stage spills into the next). A ``concurrent`` stage sends ``num_requests``
  requests with ``concurrency_level`` closed-loop clients
  (:func:`llmsim.workloads.build.lane_parents`) and starts when the previous stage's last
  request arrived (its end cannot be known before the simulation). Multi-turn chat with
  ``concurrent`` stages is refused (two release rules for one request).
"""

from __future__ import annotations

import numpy as np

from llmsim.errors import ConfigError
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


def generate(spec: Fields, rng: np.random.Generator, *, seed: int) -> TraceFrame:
    """The trace an inference-perf spec describes (see the module docstring).

    Raises:
        ConfigError: a bad or unknown key (file, line, field).
    """
    data = spec.need("data")
    load = spec.need("load")
    spec.check_unknown()
    kind = data.choice("type", ("shared_prefix", "random", "synthetic"))
    arrivals, lanes = _load_stages(load, rng)
    n = len(arrivals)
    tokens = TokenAllocator()
    b = WorkloadBuilder()
    if kind == "shared_prefix":
        sp = data.need("shared_prefix")
        data.check_unknown()
        _shared_prefix(sp, rng, tokens, b, arrivals, lanes)
    else:
        ins = _distribution(data, "input_distribution", rng, n)
        outs = _distribution(data, "output_distribution", rng, n, minimum=1)
        check_budget(float(ins.sum()), lambda m: data.error("input_distribution", m))
        data.check_unknown()
        for k in range(n):
            b.add(arrival_s=arrivals[k], input_ids=tokens.fresh(int(ins[k])), output_tokens=int(outs[k]),
                  parent=int(lanes[k]))
    desc = f"inference-perf data={kind} load={load.data.get('type')} seed={seed}"
    return b.frame(name=f"inference-perf-{kind}", source=f"generated: {desc}", metadata={"generator": desc})


def _load_stages(load: Fields, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Arrival times (s) and closed-loop parents (-1: none) of every request, shape (n,)."""
    kind = load.choice("type", ("constant", "poisson", "concurrent"))
    load.raw("base_seed")
    stages = load.items("stages")
    load.check_unknown(ignore=("interval", "num_workers", "worker_max_concurrency",
                               "worker_max_tcp_connections", "request_timeout"))
    times: list[np.ndarray] = []
    parents: list[np.ndarray] = []
    start_s, count = 0.0, 0
    for st in stages:
        if kind == "concurrent":
            lanes = st.int_("concurrency_level", minimum=1, maximum=MAX_SPEC_REQUESTS)
            m = st.int_("num_requests", minimum=1, maximum=MAX_SPEC_REQUESTS - count)
            t = np.full(m, start_s)
            p = lane_parents(m, lanes)
            parents.append(np.where(p >= 0, p + count, -1))
        else:
            rate = st.float_("rate", open_min=True, maximum=1e9)
            duration = st.float_("duration", open_min=True, maximum=400 * 86_400.0)
            if count + rate * duration > MAX_SPEC_REQUESTS:
                raise st.error("rate", f"the stages send more than {MAX_SPEC_REQUESTS} requests")
            m = int(round(rate * duration))
            if m < 1:
                raise st.error("rate", f"rate * duration = {rate * duration:g} sends no request")
            if kind == "constant":
                t = start_s + open_loop_s(Arrival.CONSTANT, rate_per_s=rate, n=m, rng=rng)
            else:  # a Poisson process with m arrivals in the stage: sorted uniform times
                t = start_s + np.sort(rng.uniform(0.0, duration, size=m))
            parents.append(np.full(m, -1, dtype=np.int64))
            start_s += duration
        st.check_unknown()
        times.append(t)
        count += m
        if kind == "concurrent":
            start_s = float(t[-1])
    return np.concatenate(times), np.concatenate(parents)


def _distribution(data: Fields, key: str, rng: np.random.Generator, n: int, *, minimum: int = 1,
                  fixed: int | None = None) -> np.ndarray:
    """Lengths from ``data[key]`` ({min, max, mean, std_dev}), or ``fixed`` when absent."""
    d = data.sub(key, required=fixed is None)
    if d is None:
        return np.full(n, fixed, dtype=np.int64)
    lo = d.int_("min", minimum, minimum=minimum)
    hi = d.int_("max", MAX_SPEC_TOKENS, minimum=lo)
    mean = d.float_("mean", maximum=MAX_SPEC_TOKENS)
    std = d.float_("std_dev", 0.0, maximum=MAX_SPEC_TOKENS)
    d.raw("total_count")
    d.check_unknown()
    if not lo <= mean <= hi:
        raise d.error("mean", f"must be within [min, max] = [{lo}, {hi}], got {mean:g}")
    return clipped_normal(rng, mean=mean, stdev=std, minimum=lo, maximum=hi, n=n)


def _shared_prefix(sp: Fields, rng: np.random.Generator, tokens: TokenAllocator, b: WorkloadBuilder,
                   arrivals: np.ndarray, lanes: np.ndarray) -> None:
    groups = sp.int_("num_groups", 10, minimum=1, maximum=MAX_SPEC_REQUESTS)
    per = sp.int_("num_prompts_per_group", 10, minimum=1, maximum=MAX_SPEC_REQUESTS)
    sys_len = sp.int_("system_prompt_len", 100)
    q_fixed = sp.int_("question_len", 50)
    o_fixed = sp.int_("output_len", 50, minimum=1)
    multi = sp.bool_("enable_multi_turn_chat", False)
    sp.raw("max_model_len")
    if groups * per > MAX_SPEC_REQUESTS:
        raise sp.error("num_prompts_per_group", f"num_groups * num_prompts_per_group exceeds {MAX_SPEC_REQUESTS}")
    prompts: list[tuple[tuple[int, ...], tuple[int, ...], int]] = []  # (system, question, output len)
    lens = [(_distribution(sp, "question_distribution", rng, per, minimum=0, fixed=q_fixed),
             _distribution(sp, "output_distribution", rng, per, fixed=o_fixed)) for _ in range(groups)]
    check_budget(groups * sys_len + sum(float(q.sum()) for q, _ in lens),
                 lambda m: sp.error("system_prompt_len", m))
    for q_lens, o_lens in lens:
        system = tokens.fresh(sys_len)
        prompts.extend((system, tokens.fresh(int(q)), int(o)) for q, o in zip(q_lens, o_lens, strict=True))
    sp.check_unknown()
    order = rng.permutation(len(prompts))
    prompts = [prompts[i] for i in order]
    users = len(prompts)
    if multi and (lanes >= 0).any():
        raise sp.error("enable_multi_turn_chat", "multi-turn chat with a concurrent load is not "
                       "supported yet (each round already waits for the previous one)")
    contexts: list[tuple[int, ...]] = [p[0] for p in prompts]
    for k, t in enumerate(arrivals):
        u = k % users
        system, question, out_len = prompts[u]
        if not multi:
            b.add(arrival_s=t, input_ids=system + question, output_tokens=out_len, parent=int(lanes[k]))
            continue
        answer = tokens.fresh(out_len)
        ids = contexts[u] + question
        b.add(arrival_s=t, input_ids=ids, output_tokens=out_len, output_ids=answer,
              session=f"user{u}", parent=k - users if k >= users else -1, turn=k // users)
        contexts[u] = ids + answer
        if len(contexts[u]) > MAX_SPEC_TOKENS:
            raise ConfigError(f"user {u}'s context passes {MAX_SPEC_TOKENS} tokens at round "
                              f"{k // users}; send fewer rounds", field="load.stages")
