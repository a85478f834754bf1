"""Event kinds of the simulation loop and their tie-breaking priority.

Events are ordered by ``(time_ns, kind, sequence)``: at equal times, step ends are handled
first (they free KV blocks and deliver tokens), then arrivals and hand-offs, and step starts
last, so a step starting at ``t`` sees everything that happened at ``t``. ``sequence`` is a
per-simulation counter, so equal ``(time, kind)`` pairs keep insertion order.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from llmsim.scheduler.state import SeqState


class EventKind(IntEnum):
    """Event kinds; the value is the priority at equal time (lower first)."""

    STEP_END = 0    # payload: instance id
    ARRIVAL = 1     # payload: request index
    HANDOFF = 2     # payload: Handoff
    STEP_START = 3  # payload: instance id


@dataclass(frozen=True, slots=True, kw_only=True)
class Handoff:
    """Move a sequence from one instance to another (routing, prefill/decode split).

    Attributes:
        seq: the sequence (released from ``src`` when the hand-off is issued).
        src: instance id it leaves.
        dst: instance id it joins.
        delay_ns: transfer time before it joins ``dst``'s waiting queue.
    """

    seq: SeqState
    src: int
    dst: int
    delay_ns: int = 0
