"""vLLM ``bench serve`` workloads: the ``random`` and ``prefix_repetition`` datasets, request
rate with burstiness, ``--max-concurrency``.

Spec keys are ``vllm bench serve``'s flags without the dashes::

    tool: vllm-bench
    seed: 0                       # --seed
    dataset_name: random          # random | prefix_repetition
    num_prompts: 1000
    random_input_len: 1024        # random
    random_output_len: 128
    random_range_ratio: 0.0
    random_prefix_len: 0
    prefix_repetition_prefix_len: 256   # prefix_repetition
    prefix_repetition_suffix_len: 256
    prefix_repetition_num_prefixes: 10
    prefix_repetition_output_len: 128
    request_rate: inf
    burstiness: 1.0
    max_concurrency: null

Semantics (vLLM ``vllm/benchmarks/datasets/random.py``, ``prefix_repetition.py`` and
``vllm/benchmarks/serve.py``; defaults are vLLM's):

* ``random``: per request, input length uniform over the integers
  ``[floor(L * (1 - r)), ceil(L * (1 + r))]`` and output length over
  ``[max(1, floor(O * (1 - r))), max(1, ceil(O * (1 + r)))]`` (``r`` = range ratio, in
  ``[0, 1)``); the prompt is one ``random_prefix_len``-token prefix, the same for every
  request, followed by the sampled input tokens, so a prompt has
  ``prefix_len + sampled`` tokens. vLLM subtracts the tokenizer's special tokens from ``L``;
  llmsim has no tokenizer and takes 0.
* ``prefix_repetition``: ``num_prefixes`` prefixes of ``prefix_len`` tokens, each followed by
  ``num_prompts // num_prefixes`` different suffixes of ``suffix_len`` tokens (so
  ``num_prefixes * (num_prompts // num_prefixes)`` requests), output ``output_len``, the
  requests shuffled.
* arrivals: ``request_rate = inf`` sends everything at once; otherwise gamma gaps of shape
  ``burstiness`` and scale ``1 / (request_rate * burstiness)``
  (:func:`llmsim.workloads.build.open_loop_s`).
* ``max_concurrency``: at most that many requests in flight, as closed-loop lanes
  (:func:`llmsim.workloads.build.lane_parents`; approximation documented there).

Not supported yet: ``sharegpt`` (its lengths come from tokenizing the conversations, and
llmsim has no tokenizer); asking for it is a ConfigError that says so.
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
    lane_parents,
    open_loop_s,
)
from llmsim.workloads.fields import MAX_SPEC_REQUESTS, Fields

DATASETS = ("random", "prefix_repetition", "sharegpt")


def generate(spec: Fields, rng: np.random.Generator, *, seed: int) -> TraceFrame:
    """The trace a vLLM ``bench serve`` spec describes (see the module docstring).

    Raises:
        ConfigError: a bad or unknown key (file, line, field), or ``sharegpt``.
    """
    dataset = spec.choice("dataset_name", DATASETS, "random")
    n = spec.int_("num_prompts", 1000, minimum=1, maximum=MAX_SPEC_REQUESTS)
    if dataset == "sharegpt":
        raise spec.error("dataset_name", "sharegpt is not supported yet (its lengths come from "
                         "tokenizing the conversations; llmsim has no tokenizer): use random or "
                         "prefix_repetition, or convert measured lengths to a trace")
    tokens = TokenAllocator()
    if dataset == "random":
        prompts, outs = _random(spec, rng, n, tokens)
    else:
        prompts, outs = _prefix_repetition(spec, rng, n, tokens)
    rate = spec.float_("request_rate", math.inf, open_min=True, allow_inf=True)
    burstiness = spec.float_("burstiness", 1.0, open_min=True, maximum=1e6)
    conc = spec.raw("max_concurrency")
    lanes = None if conc is None else spec.int_("max_concurrency", minimum=1, maximum=MAX_SPEC_REQUESTS)
    spec.check_unknown()
    arrivals = open_loop_s(Arrival.GAMMA, rate_per_s=rate, n=len(prompts), rng=rng, burstiness=burstiness)
    parents = lane_parents(len(prompts), lanes)
    b = WorkloadBuilder()
    for k, (ids, out) in enumerate(zip(prompts, outs, strict=True)):
        b.add(arrival_s=arrivals[k], input_ids=ids, output_tokens=out, parent=int(parents[k]),
              session=None if lanes is None else f"lane{k % lanes}")
    desc = (f"vllm bench serve --dataset-name {dataset} --num-prompts {n} --request-rate {rate} "
            f"--burstiness {burstiness} --max-concurrency {lanes} --seed {seed}")
    return b.frame(name=f"vllm-bench-{dataset}", source=f"generated: {desc}",
                   metadata={"generator": desc, "request_rate": str(rate), "burstiness": str(burstiness),
                             "max_concurrency": "" if lanes is None else str(lanes)})


def _random(spec: Fields, rng: np.random.Generator, n: int,
            tokens: TokenAllocator) -> tuple[list[tuple[int, ...]], list[int]]:
    in_len = spec.int_("random_input_len", 1024)
    out_len = spec.int_("random_output_len", 128, minimum=1)
    ratio = spec.float_("random_range_ratio", 0.0, maximum=0.999999)
    prefix_len = spec.int_("random_prefix_len", 0)
    in_lo, in_hi = math.floor(in_len * (1 - ratio)), math.ceil(in_len * (1 + ratio))
    out_lo, out_hi = max(1, math.floor(out_len * (1 - ratio))), max(1, math.ceil(out_len * (1 + ratio)))
    if prefix_len + in_lo < 1:
        raise spec.error("random_input_len", f"the shortest prompt would have {prefix_len + in_lo} "
                         "tokens; raise random_input_len or random_prefix_len")
    in_lens = rng.integers(in_lo, in_hi + 1, size=n)
    out_lens = rng.integers(out_lo, out_hi + 1, size=n)
    check_budget(prefix_len + float(in_lens.sum()), lambda m: spec.error("random_input_len", m))
    prefix = tokens.fresh(prefix_len)
    return [prefix + tokens.fresh(int(k)) for k in in_lens], [int(k) for k in out_lens]


def _prefix_repetition(spec: Fields, rng: np.random.Generator, n: int,
                       tokens: TokenAllocator) -> tuple[list[tuple[int, ...]], list[int]]:
    prefix_len = spec.int_("prefix_repetition_prefix_len", 256)
    suffix_len = spec.int_("prefix_repetition_suffix_len", 256)
    groups = spec.int_("prefix_repetition_num_prefixes", 10, minimum=1, maximum=MAX_SPEC_REQUESTS)
    out_len = spec.int_("prefix_repetition_output_len", 128, minimum=1)
    if n < groups:
        raise spec.error("num_prompts", f"must be >= prefix_repetition_num_prefixes ({groups}), got {n}")
    if prefix_len + suffix_len < 1:
        raise spec.error("prefix_repetition_prefix_len", "prefix and suffix lengths are both 0")
    per = n // groups
    check_budget(groups * (prefix_len + per * suffix_len),
                 lambda m: spec.error("prefix_repetition_suffix_len", m))
    prompts: list[tuple[int, ...]] = []
    for _ in range(groups):
        prefix = tokens.fresh(prefix_len)
        prompts.extend(prefix + tokens.fresh(suffix_len) for _ in range(per))
    order = rng.permutation(len(prompts))
    return [prompts[i] for i in order], [out_len] * len(prompts)
