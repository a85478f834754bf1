"""Event kinds of the simulation loop, their tie-breaking priority, and hand-off values.

Events are ordered by ``(time_ns, kind, sequence)``: at equal times, step ends are handled
first (they free KV blocks and deliver tokens), then arrivals and hand-offs, and step starts
last, so a step starting at ``t`` sees everything that happened at ``t``. ``sequence`` is a
per-simulation counter, so equal ``(time, kind)`` pairs keep insertion order.

The core kinds' values are spaced by 10 so that kinds registered later
(:meth:`llmsim.sim.loop.Simulation.register_event`, e.g. a KV transfer finishing) can sort
between them; the value *is* the priority.

What crosses from one instance to another is a :class:`HandoffDescriptor` (defined in
:mod:`llmsim.instance.handoff`): a frozen value (the trace record, token counts, KV size),
never the source's live scheduler state.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from llmsim.instance.handoff import HandoffDescriptor
from llmsim.scheduler.state import SeqState

__all__ = ["EventKind", "Handoff", "HandoffDescriptor", "HandoffOrder"]


class EventKind(IntEnum):
    """Core event kinds; the value is the priority at equal time (lower first)."""

    STEP_END = 0     # payload: instance id
    ARRIVAL = 10     # payload: request index
    HANDOFF = 20     # payload: Handoff
    STEP_START = 30  # payload: instance id


@dataclass(frozen=True, slots=True, kw_only=True)
class Handoff:
    """Move a request from one instance to another (routing, prefill/decode split).

    Attributes:
        desc: what moves (the source released the request when the hand-off was issued).
        src: instance id it leaves.
        dst: instance id it joins.
        delay_ns: transfer time before it joins ``dst``'s waiting queue.
    """

    desc: HandoffDescriptor
    src: int
    dst: int
    delay_ns: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class HandoffOrder:
    """A hand-off policy's decision after a step: move ``seq`` (live, on ``src``) to ``dst``.

    The loop consumes it at once: it releases the sequence on ``src`` (which returns a
    :class:`HandoffDescriptor`) and schedules the :class:`Handoff` ``delay_ns`` later.

    Attributes:
        seq: the source's sequence (a :class:`llmsim.scheduler.state.SeqState`).
        src: instance id it leaves.
        dst: instance id it joins.
        delay_ns: transfer time, ns.
    """

    seq: SeqState
    src: int
    dst: int
    delay_ns: int = 0
