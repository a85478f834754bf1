"""The value a request carries from one instance to another (hand-offs, P/D)."""

from __future__ import annotations

from dataclasses import dataclass

from llmsim.trace.record import Request

__all__ = ["HandoffDescriptor"]


@dataclass(frozen=True, slots=True, kw_only=True)
class HandoffDescriptor:
    """A request leaving one instance for another, as an immutable value.

    Built by :meth:`llmsim.instance.Instance.release` (or the P/D flow, :mod:`llmsim.pd`)
    from the source's state at that moment; the destination builds its own state from it
    (:meth:`llmsim.instance.Instance.adopt`).

    Attributes:
        index: the request's position in the trace (row of the outputs, prefix-hash salt).
        request: the trace record (prompt token ids or trace hash ids, lengths).
        num_computed_tokens: tokens whose KV the source had computed (prompt + generated).
        num_output_tokens: output tokens the source delivered (sampled tokens).
        kv_bytes_per_rank: KV bytes of ``num_computed_tokens`` on one of the source's TP
            ranks (``num_computed_tokens x`` the model's KV bytes per token ``/ src_tp``;
            0 when the source does not know its model).
        src_tp: the source's tensor-parallel size.
        release_ns: when the request was first released to an instance (its TTFT counts
            from there), ns.
        first_scheduled_ns: when the source first scheduled it (-1: never), ns.
        prefix_hit_tokens: prompt tokens the source served from its prefix cache (-1: none
            looked up).
        num_preemptions: preemptions so far.
    """

    index: int
    request: Request
    num_computed_tokens: int
    num_output_tokens: int
    kv_bytes_per_rank: int = 0
    src_tp: int = 1
    release_ns: int = -1
    first_scheduled_ns: int = -1
    prefix_hit_tokens: int = -1
    num_preemptions: int = 0

    @property
    def request_id(self) -> str:
        """The trace's request id."""
        return self.request.request_id
