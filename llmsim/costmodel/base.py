"""The contract between the serving loop and every cost model.

A step is described by what the GPU computes in one forward pass: the prefill chunks (new
prompt tokens over already-cached KV) and the decodes (one new token each over their
context). Values are frozen and hashable so cost models can memoize on them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from llmsim.cluster.parallel import SINGLE_GPU, ParallelConfig

MAX_STEP_COST_NS = 600 * 10**9
"""Ceiling on the priced duration of one engine step or one operator, ns (600 s).

The longest forward pass in the data is ~0.3 s (a 2,048-token prefill step of Qwen3-32B on
one RTX PRO 6000 in LLMServingSim's profile); three orders of magnitude above it nothing is a
physical step of any model llmsim serves, so a cost beyond it is refused as bad input (a
corrupt profile row or a misbehaving bridge server) instead of stalling the simulated clock.
"""


def step_cost_is_valid(duration_ns: float) -> bool:
    """True when ``duration_ns`` is a finite number in ``[0, MAX_STEP_COST_NS]``.

    NaN fails every comparison, so it is refused here too.
    """
    return isinstance(duration_ns, (int, float)) and 0 <= duration_ns <= MAX_STEP_COST_NS


@dataclass(frozen=True, slots=True, kw_only=True)
class PrefillChunk:
    """One request's prompt tokens computed in this step.

    Attributes:
        num_new_tokens: prompt tokens computed in this step (> 0).
        num_cached_tokens: tokens whose KV is already in the cache before this step
            (prefix-cache hits plus earlier chunks of the same prompt).
        emits_token: the chunk completes the prompt, so the step samples a token for it.
    """

    num_new_tokens: int
    num_cached_tokens: int = 0
    emits_token: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class StepBatch:
    """Everything a cost model needs to know about one engine step.

    Attributes:
        prefills: prefill chunks, in scheduling order.
        decode_context_lens: per decode request, the number of KV tokens its new token
            attends to, *including* that token (= tokens computed so far + 1).
        parallel: the instance's parallel layout (TP, PP, ...).
    """

    prefills: tuple[PrefillChunk, ...] = ()
    decode_context_lens: tuple[int, ...] = ()
    parallel: ParallelConfig = SINGLE_GPU

    @property
    def tp(self) -> int:
        """Tensor-parallel degree of the instance (``parallel.tensor_parallel_size``)."""
        return self.parallel.tensor_parallel_size

    @property
    def num_decodes(self) -> int:
        """Decode requests in the step."""
        return len(self.decode_context_lens)

    @property
    def num_tokens(self) -> int:
        """Tokens computed in the step (prefill chunk tokens + one per decode)."""
        return sum(p.num_new_tokens for p in self.prefills) + len(self.decode_context_lens)

    @property
    def num_sampled(self) -> int:
        """Sequences that emit a token this step (lm_head / sampler rows)."""
        return sum(1 for p in self.prefills if p.emits_token) + len(self.decode_context_lens)


@dataclass(frozen=True, slots=True, kw_only=True)
class StepCost:
    """The cost of one step.

    Attributes:
        duration_ns: wall time of the forward pass on the device (kernel time), ns.
        breakdown_ns: per-op contribution to ``duration_ns`` (summed over layers), ns.
        energy_j: device energy of the step in joules, ``None`` when the model has none.
    """

    duration_ns: int
    breakdown_ns: Mapping[str, int] = field(default_factory=dict)
    energy_j: float | None = None


@runtime_checkable
class CostModel(Protocol):
    """Anything that prices an engine step.

    Implementations must be deterministic: the same batch gives the same cost.
    """

    def step_cost(self, batch: StepBatch) -> StepCost:
        """Return the cost of ``batch``.

        Raises:
            ProfileRangeError: the model cannot price this batch (e.g. absent TP degree).
            CostModelUnavailable: an external cost model failed.
        """
        ...
