"""The timeline model: tracks and the events on them, in integer nanoseconds.

A :class:`Timeline` is format-neutral: :mod:`llmsim.timeline.chrome` turns it into a
Chrome / Perfetto trace, and :mod:`llmsim.timeline.replay` builds it from a replay's
public outputs. Every event carries an :class:`EventKind`, written as the Chrome ``cat``
field, so a reader (or a test) can count events per kind.

Adding an event kind (TP collectives, KV transfers between instances) means: a member of
:class:`EventKind`, a track for it in the builder, and the events; the writer and the checker
need no change, they handle any kind on any track.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

ArgValue = int | float | str
"""A value in an event's ``args`` (shown in the Perfetto UI's details panel)."""


class EventKind(StrEnum):
    """What an event stands for (the Chrome ``cat`` field)."""

    STEP = "step"
    """One engine step's forward pass on the GPU (``start_ns`` to ``end_ns``)."""
    SCHEDULE = "schedule"
    """The CPU side of one step: ``schedule()`` plus input preparation (``cpu_ns``)."""
    PREFILL = "prefill"
    """The prefill chunks of one step (all chunks that are not single-token decodes)."""
    PREEMPTION = "preemption"
    """One sequence preempted while scheduling a step (an instant)."""
    QUEUED = "queued"
    """A request from its arrival at an instance to its first scheduling."""
    REQUEST_PREFILL = "request_prefill"
    """A request from its first scheduling to its first token."""
    DECODE = "decode"
    """A request from its first token to its last."""
    COUNTER = "counter"
    """A sampled gauge (queue lengths, KV-cache usage)."""
    COLLECTIVE = "collective"
    """Reserved: a tensor-parallel collective inside a step (no source yet)."""
    KV_TRANSFER = "kv_transfer"
    """A request's KV-cache transfer from its prefill to its decode instance (P/D: from
    when it could start to its end, :mod:`llmsim.pd`)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Track:
    """One timeline row: a thread (``tid``) of a process (``pid``) in Chrome terms.

    Attributes:
        pid: process id (> 0), one per instance or group of tracks.
        tid: thread id (> 0), unique across the whole timeline (Perfetto's JSON importer
            names threads by ``tid`` alone).
        process_name: label of the process group (e.g. ``instance 0 · H100``).
        thread_name: label of the row (e.g. ``GPU steps``).
        process_sort_index: order of process groups in the UI (ascending).
        thread_sort_index: order of rows inside the group (ascending).
    """

    pid: int
    tid: int
    process_name: str
    thread_name: str
    process_sort_index: int
    thread_sort_index: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Slice:
    """An interval on a track (Chrome ``ph: X``).

    Attributes:
        kind: what it stands for.
        track: the track's ``tid``.
        name: label shown on the slice.
        start_ns: start, ns from trace start.
        duration_ns: length, ns (>= 0).
        args: ``(key, value)`` pairs, in display order.
    """

    kind: EventKind
    track: int
    name: str
    start_ns: int
    duration_ns: int
    args: tuple[tuple[str, ArgValue], ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Instant:
    """A point event on a track (Chrome ``ph: i``, thread scope).

    Attributes:
        kind: what it stands for.
        track: the track's ``tid``.
        name: label.
        time_ns: when, ns from trace start.
        args: ``(key, value)`` pairs.
    """

    kind: EventKind
    track: int
    name: str
    time_ns: int
    args: tuple[tuple[str, ArgValue], ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class CounterSample:
    """Values of a group of counters at one time (Chrome ``ph: C``; Perfetto draws one
    counter track per ``(process, name, key)``, named ``"<name> <key>"``).

    Attributes:
        track: a ``tid`` of the process the counters belong to.
        name: counter group (e.g. ``queue``).
        time_ns: when, ns from trace start.
        values: ``(key, value)`` pairs (e.g. ``("running", 12)``).
    """

    track: int
    name: str
    time_ns: int
    values: tuple[tuple[str, int | float], ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Timeline:
    """Tracks and their events.

    Attributes:
        tracks: every track, each ``tid`` once.
        slices: interval events (any order; the writer sorts).
        instants: point events.
        counters: counter samples.
        metadata: JSON-able facts about the run (written as the trace's ``otherData``).
    """

    tracks: tuple[Track, ...]
    slices: tuple[Slice, ...]
    instants: tuple[Instant, ...] = ()
    counters: tuple[CounterSample, ...] = ()
    metadata: tuple[tuple[str, str], ...] = ()


__all__ = ["ArgValue", "CounterSample", "EventKind", "Instant", "Slice", "Timeline", "Track"]
