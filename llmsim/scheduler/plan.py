"""What the scheduler hands to the instance for one step, and what it gets back."""

from __future__ import annotations

from dataclasses import dataclass

from llmsim.costmodel.base import StepBatch
from llmsim.scheduler.state import SeqState

Chunk = tuple[SeqState, int, int, bool, int]
"""Tokens of one sequence computed in a step, as a plain tuple (built ~10^5-10^6 times per
replay, so no dataclass): ``(seq, num_new_tokens, num_cached_tokens, emits_token, epoch)``.

* ``num_new_tokens``: tokens computed for ``seq`` in this step (> 0);
* ``num_cached_tokens``: its tokens whose KV was computed before this step (prefix hits
  plus earlier chunks);
* ``emits_token``: the chunk reaches the end of the known tokens, so the step samples one;
* ``epoch``: ``seq.epoch`` when scheduled; outputs of an older epoch (the sequence was
  preempted meanwhile) are dropped.
"""
CHUNK_SEQ, CHUNK_NEW, CHUNK_CACHED, CHUNK_EMITS, CHUNK_EPOCH = range(5)


@dataclass(slots=True, kw_only=True)
class BatchPlan:
    """One scheduled engine step (vLLM's ``SchedulerOutput``).

    Not frozen (read-only by convention): one is built per engine step, ~10^5 per long
    replay, and a frozen dataclass's ``__init__`` costs ~3x a plain slotted one's.

    Attributes:
        chunks: scheduled sequences: running ones in running order, then admitted ones.
        batch: the cost model's view of the step.
        num_prefill_tokens: tokens of chunks that are not decodes.
        num_decodes: single-token chunks that emit a token.
        preempted: sequences preempted while scheduling this step.
        admitted: sequences moved from waiting to running in this step.
        scheduled_ns: simulated time at which ``schedule()`` ran.
        offload: the step's lower-tier KV work (an
            :class:`llmsim.kvcache.offload.OffloadStep`), None without KV offloading.
    """

    chunks: tuple[Chunk, ...]
    batch: StepBatch
    num_prefill_tokens: int
    num_decodes: int
    preempted: tuple[SeqState, ...]
    admitted: tuple[SeqState, ...]
    scheduled_ns: int
    offload: object | None = None

    @property
    def num_tokens(self) -> int:
        """Tokens computed in the step."""
        return self.num_prefill_tokens + self.num_decodes

    @property
    def is_decode_only(self) -> bool:
        """True when every chunk is a single-token decode (CUDA-graph eligible)."""
        return self.num_prefill_tokens == 0


@dataclass(slots=True, kw_only=True)
class StepOutput:
    """The result of processing a finished step (vLLM's ``update_from_output``).

    Not frozen (read-only by convention): one is built per engine step, ~10^5 per long
    replay, and a frozen dataclass's ``__init__`` costs ~3x a plain slotted one's.

    Attributes:
        emitted: sequences that received a token, in chunk order.
        finished: sequences that reached their output length (blocks freed).
        first_tokens: sequences whose first token this was.
        kv_held: P/D producers that finished here and keep their blocks until the decode
            instance has read them (:mod:`llmsim.pd`); their token is not in ``emitted``
            (the proxy discards it) and they are not ``finished`` requests.
    """

    emitted: tuple[SeqState, ...]
    finished: tuple[SeqState, ...]
    first_tokens: tuple[SeqState, ...]
    kv_held: tuple[SeqState, ...] = ()
