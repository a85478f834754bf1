"""Step time = cost model (kernel time) + the modelled effects the profiles lack.

Every modelled effect is a field of :class:`StepOverheads`, documented with its source, in
this one place. None is fitted to a measured run.

The GPU operator profiles (``llmservingsim/profiles``) time kernels only, with CUDA graphs
off (vLLM ``enforce_eager``). The measured engine (vLLM 0.19) differs in two systematic ways:

1. **CUDA-graph padding.** With ``cudagraph_mode`` FULL_AND_PIECEWISE (the RTX4090 run's
   resolved config), a step of ``T <= max(cudagraph_capture_sizes)`` tokens runs a graph
   captured for the next capture size ``P >= T``: every token-parallel operator (GEMMs,
   norms, activations, embedding, TP all-reduce) runs on ``P`` rows, while attention,
   ``lm_head`` and the sampler see only the real sequences. Modelled as
   ``cost(batch) + sum over token-scaled ops of [op at P tokens - op at T tokens]``, the
   token-scaled ops being those with ``rows == TOKENS`` in
   :func:`llmsim.costmodel.decompose.step_ops`. When the cost model gives no per-op
   breakdown, the whole cost difference of a batch padded with 1-token dummy decodes is used.
2. **Per-step CPU work** (scheduling, input preparation, sampling bookkeeping, output
   processing): ``cpu_step_ns + cpu_per_seq_ns x scheduled sequences``. With
   ``async_scheduling`` (vLLM 0.19's default, recorded in the RTX4090 run's resolved
   config) the CPU prepares step ``n+1`` while step ``n`` runs, so it delays the GPU only
   when it takes longer than the step in flight; without it, it adds to every step.
   Defaults are order-of-magnitude estimates of vLLM V1's Python engine-core work (about a
   millisecond per step plus a few microseconds per request), not measurements: with async
   scheduling and an 8B model (>= ~10 ms per step on these GPUs) they are hidden, so the
   validation runs do not constrain them. Override them in the experiment's ``overheads``.

Bounds (so bad input fails at once instead of stalling the simulated clock or exhausting
memory): every duration a cost model returns, for the real batch and for its padded copy,
must be a finite number in ``[0, MAX_STEP_COST_NS]`` (:mod:`llmsim.costmodel.base`), else
:class:`~llmsim.errors.CostModelUnavailable` names the batch (and, raised through
:meth:`llmsim.instance.Instance.try_start`, the instance and step); the CPU overheads are
integers in the same range; capture sizes are integers in ``[1, MAX_CAPTURE_SIZE]``.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

from llmsim.cluster.parallel import SINGLE_GPU, ParallelConfig
from llmsim.costmodel.base import (
    MAX_STEP_COST_NS,
    CostModel,
    StepBatch,
    StepCost,
    step_cost_is_valid,
)
from llmsim.costmodel.decompose import OpClass, Rows, step_ops
from llmsim.errors import ConfigError, CostModelUnavailable, InvariantError
from llmsim.model.config import ModelConfig
from llmsim.scheduler.plan import BatchPlan

logger = logging.getLogger(__name__)

MAX_CAPTURE_SIZE = 1 << 16
"""Largest accepted CUDA-graph capture size, tokens (65,536).

vLLM 0.19 captures graphs of at most ``min(2 x max_num_seqs, 512)`` tokens by default and
never runs a graph larger than ``max_num_batched_tokens``; 128x its default is far above
any real list. The padding table and a padded step's dummy decodes are both sized by the
largest capture size (8 bytes per token each), so a bigger value is refused instead of
allocated.
"""


@dataclass(frozen=True, slots=True, kw_only=True)
class StepOverheads:
    """Modelled effects added to the cost model's kernel time.

    Attributes:
        cpu_step_ns: CPU time per step independent of the batch, ns.
        cpu_per_seq_ns: CPU time per scheduled sequence, ns.
        cudagraph_padding: pad steps of up to the largest capture size to the next
            capture size (requires ``cudagraph_capture_sizes``).
    """

    cpu_step_ns: int = 1_000_000
    cpu_per_seq_ns: int = 5_000
    cudagraph_padding: bool = True

    def __post_init__(self) -> None:
        for name in ("cpu_step_ns", "cpu_per_seq_ns"):
            value = getattr(self, name)
            if (isinstance(value, bool) or not isinstance(value, int)
                    or not 0 <= value <= MAX_STEP_COST_NS):
                raise ConfigError(f"must be an integer in [0, {MAX_STEP_COST_NS}] ns "
                                  f"(MAX_STEP_COST_NS), got {value!r}", field=f"overheads.{name}")

    def cpu_ns(self, num_seqs: int) -> int:
        """CPU time of a step scheduling ``num_seqs`` sequences, ns."""
        return self.cpu_step_ns + self.cpu_per_seq_ns * num_seqs


class StepTimeModel:
    """Prices a :class:`BatchPlan`: GPU time (cost model + padding) and CPU time.

    Args:
        cost_model: kernel-time cost model.
        overheads: the modelled effects.
        cudagraph_capture_sizes: vLLM's capture sizes (token counts), ascending; empty
            disables padding.
        model: architecture, to know which operators scale with tokens (optional).
        parallel: the instance's parallel layout.

    Raises:
        ConfigError: a capture size that is not an integer in ``[1, MAX_CAPTURE_SIZE]``
            (field ``engine.cudagraph_capture_sizes``).
    """

    def __init__(self, cost_model: CostModel, overheads: StepOverheads, *,
                 cudagraph_capture_sizes: tuple[int, ...] = (), model: ModelConfig | None = None,
                 parallel: ParallelConfig = SINGLE_GPU) -> None:
        self.cost_model = cost_model
        self.overheads = overheads
        for size in cudagraph_capture_sizes:
            if (isinstance(size, bool) or not isinstance(size, int)
                    or not 1 <= size <= MAX_CAPTURE_SIZE):
                raise ConfigError(f"capture size {size!r} is not an integer in [1, "
                                  f"{MAX_CAPTURE_SIZE}] (MAX_CAPTURE_SIZE)",
                                  field="engine.cudagraph_capture_sizes")
        self.capture_sizes = tuple(sorted(set(cudagraph_capture_sizes)))
        self.pad = overheads.cudagraph_padding and bool(self.capture_sizes)
        self.parallel = parallel
        self._token_ops: frozenset[str] = frozenset()
        # (tokens the step ran at, sampled sequences) -> steps; kept only when the layout
        # communicates (TP or PP > 1), for the communication report
        self.comm_shapes: Counter[tuple[int, int]] | None = None
        if model is not None:
            ops = step_ops(model, parallel)
            self._token_ops = frozenset(op.name for op in ops if op.rows == Rows.TOKENS)
            if any(op.op_class is OpClass.COLLECTIVE for op in ops):
                self.comm_shapes = Counter()
        self._pad_extra_ns: dict[tuple[int, int], int] = {}  # (tokens, padded) -> ns
        self._pending_run: tuple[Any, int, int] | None = None  # decode_run_gpu_ns
        # padded size per token count 0..max capture size (a list lookup per step)
        self._pad_to: list[int] = []
        if self.pad:
            pad_to = self._pad_to  # tokens n -> the first size >= n (sizes ascending)
            for size in self.capture_sizes:
                pad_to += [size] * (size + 1 - len(pad_to))

    @property
    def tp(self) -> int:
        """Tensor-parallel degree (``parallel.tensor_parallel_size``)."""
        return self.parallel.tensor_parallel_size

    def _checked_ns(self, value: object, what: str, batch: StepBatch) -> int:
        """``value``, unchanged, when it is a valid step duration (an int or a finite float
        in ``[0, MAX_STEP_COST_NS]``; a float is kept as is, as before the check).

        Raises:
            CostModelUnavailable: it is not (names ``what`` and the batch's shape).
        """
        if step_cost_is_valid(value):  # type: ignore[arg-type]
            return value  # type: ignore[return-value]
        raise CostModelUnavailable(
            f"cost model {type(self.cost_model).__name__} priced {what} at {value!r} ns, not a "
            f"finite duration in [0, {MAX_STEP_COST_NS}] ns (MAX_STEP_COST_NS); batch: "
            f"{len(batch.prefills)} prefill chunks ({sum(p.num_new_tokens for p in batch.prefills)}"
            f" tokens), {batch.num_decodes} decodes, tp {batch.tp}")

    def padded_tokens(self, num_tokens: int) -> int:
        """Token count the CUDA graph runs at (``num_tokens`` when no graph applies)."""
        pad_to = self._pad_to
        return pad_to[num_tokens] if num_tokens < len(pad_to) else num_tokens

    def gpu_ns(self, plan: BatchPlan) -> tuple[int, StepCost]:
        """GPU time of the step, ns, and the cost model's answer for the real batch.

        Raises:
            CostModelUnavailable: the cost model failed, or returned a duration that is not
                finite in ``[0, MAX_STEP_COST_NS]`` (for the batch or its padded copy).
        """
        batch = plan.batch
        cost = self.cost_model.step_cost(batch)
        duration_ns = cost.duration_ns
        if type(duration_ns) is not int or not 0 <= duration_ns <= MAX_STEP_COST_NS:
            duration_ns = self._checked_ns(duration_ns, "the step", batch)
        num_tokens = plan.num_prefill_tokens + plan.num_decodes
        pad_to = self._pad_to
        padded_tokens = num_tokens
        if num_tokens < len(pad_to):
            padded_tokens = pad_to[num_tokens]
            if padded_tokens > num_tokens:
                duration_ns += self._padding_ns(batch, cost, num_tokens, padded_tokens)
        if self.comm_shapes is not None:
            self.count_comm_steps(padded_tokens, batch.num_sampled)
        return duration_ns, cost

    def count_comm_steps(self, padded_tokens: int, sampled: int, steps: int = 1) -> None:
        """Count ``steps`` steps that ran at ``padded_tokens`` tokens (after CUDA-graph
        padding) and sampled ``sampled`` sequences, for the communication report
        (:mod:`llmsim.metrics.communication`); a no-op when the layout does not
        communicate. :meth:`gpu_ns` calls it for every step it prices; a caller that prices
        steps another way must call it for them."""
        if self.comm_shapes is not None:
            self.comm_shapes[(padded_tokens, sampled)] += steps

    def _padding_ns(self, batch: StepBatch, cost: StepCost, num_tokens: int,
                    padded_tokens: int) -> int:
        """Extra GPU time of running ``batch`` (``num_tokens`` tokens) in the graph captured
        for ``padded_tokens`` tokens, ns (>= 0; see the module doc, item 1)."""
        key = (num_tokens, padded_tokens)
        extra_ns = self._pad_extra_ns.get(key)
        if extra_ns is not None:
            return extra_ns
        dummies = (1,) * (padded_tokens - num_tokens)
        padded = StepBatch(prefills=batch.prefills,
                           decode_context_lens=batch.decode_context_lens + dummies,
                           parallel=batch.parallel)
        pcost = self.cost_model.step_cost(padded)
        padded_ns = pcost.duration_ns
        if type(padded_ns) is not int or not 0 <= padded_ns <= MAX_STEP_COST_NS:
            padded_ns = self._checked_ns(padded_ns, f"the step padded to {padded_tokens} "
                                         "tokens", padded)
        ops = self._token_ops
        if ops and ops & cost.breakdown_ns.keys() and ops & pcost.breakdown_ns.keys():
            extra_ns = max(0, sum(pcost.breakdown_ns.get(o, 0) - cost.breakdown_ns.get(o, 0)
                                  for o in ops))
            if type(extra_ns) is not int or extra_ns > MAX_STEP_COST_NS:
                extra_ns = self._checked_ns(extra_ns, "the CUDA-graph padding of the step "
                                            "(token-scaled ops)", padded)
            self._pad_extra_ns[key] = extra_ns  # token-scaled ops depend on token counts only
            return extra_ns
        return max(0, padded_ns - self._checked_ns(cost.duration_ns, "the step", batch))

    def decode_run_gpu_ns(self, batch: StepBatch, k: int) -> np.ndarray | None:
        """GPU times (kernel + CUDA-graph padding) of ``k`` decode-only steps, the ``j``-th
        being ``batch`` with every KV length ``j`` longer, ns (int64, shape ``(k,)``), each
        equal to :meth:`gpu_ns` of that step; nothing is counted until
        :meth:`commit_decode_run` says how many of them ran.

        Returns:
            ``None`` when they cannot be priced at once (a cost model without
            ``decode_run``, a prefill chunk, a duration outside ``[0, MAX_STEP_COST_NS]``
            (step by step raises on it), or a padding that depends on more than the token
            count); the caller then simulates the steps one by one.
        """
        self._pending_run = None
        price_run = getattr(self.cost_model, "decode_run", None)
        if price_run is None:
            return None
        run = price_run(batch, k)
        if run is None:
            return None
        kernel = run.duration_ns
        if len(kernel) and (int(kernel.min()) < 0 or int(kernel.max()) > MAX_STEP_COST_NS):
            return None
        n = len(batch.decode_context_lens)
        padded = self._pad_to[n] if n < len(self._pad_to) else n
        extra = 0
        if padded > n:
            memo = self._pad_extra_ns.get((n, padded))
            if memo is None:
                return None
            extra = memo
        self._pending_run = (run, padded, n)
        out: np.ndarray = kernel + extra if extra else kernel
        return out

    def decode_run_cost(self, j: int) -> StepCost:
        """The cost model's answer for step ``j`` of the last :meth:`decode_run_gpu_ns`
        (what :meth:`gpu_ns` returns with its GPU time).

        Raises:
            InvariantError: no run priced.
        """
        if self._pending_run is None:
            raise InvariantError("decode_run_cost without a priced decode run")
        cost: StepCost = self._pending_run[0].cost_at(j)
        return cost

    def commit_decode_run(self, m: int) -> None:
        """Count the first ``m`` steps priced by the last :meth:`decode_run_gpu_ns` as run
        (the cost model's counters and the communication report advance as ``m``
        :meth:`gpu_ns` calls would)."""
        pending = self._pending_run
        self._pending_run = None
        if pending is None or m <= 0:
            return
        run, padded, n = pending
        run.count(m)
        count_comm = getattr(self, "count_comm_steps", None)
        if count_comm is not None:
            count_comm(padded, n, m)
