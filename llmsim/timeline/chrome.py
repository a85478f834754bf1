"""Write a :class:`~llmsim.timeline.events.Timeline` as a Chrome / Perfetto trace (JSON).

The output follows the Trace Event Format (the JSON that ``chrome://tracing`` and
https://ui.perfetto.dev open): an object ``{"traceEvents": [...], "otherData": {...}}``
whose events are

* ``M`` metadata: ``process_name`` / ``process_sort_index`` per process,
  ``thread_name`` / ``thread_sort_index`` per track;
* ``X`` complete events (``ts`` + ``dur``) for slices, ``i`` instants (``s: "t"``) and
  ``C`` counters, sorted by time (ties: longer slice first, so parents precede children).

``ts`` and ``dur`` are microseconds (the format's unit); the simulator's integer
nanoseconds are converted in one place, :func:`ns_to_us`, which keeps them exact (a whole
number of microseconds is written as an integer, otherwise as a decimal with at most three
fractional digits). No ``displayTimeUnit`` is written: Perfetto's importer has read
``displayTimeUnit: "ns"`` as the unit of ``ts``, which would scale the trace by 1000.

The bytes are deterministic: the same timeline gives the same file. A path ending in
``.gz`` is gzip-compressed (header time 0, no file name), which the Perfetto UI opens as is.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from llmsim.data.atomic import atomic_write_bytes
from llmsim.errors import InvariantError
from llmsim.timeline.events import Timeline, Track

__all__ = ["encode_trace_events", "ns_to_us", "trace_event_dicts", "write_trace_events"]

NS_PER_US = 1000


def ns_to_us(ns: int) -> int | float:
    """Nanoseconds -> the Trace Event Format's microseconds, exactly.

    Args:
        ns: a time or duration, integer ns; exact below 10**15 ns (~11.5 days), where the
            decimal ``ns / 1000`` has at most 15 significant digits.

    Returns:
        ``ns // 1000`` as an ``int`` when ``ns`` is a whole number of microseconds, else the
        float ``ns / 1000``, whose shortest repr is that exact decimal (any decimal of at
        most 15 significant digits survives a round trip through a double); Perfetto
        rounds ``ts * 1000`` back to the same integer ns.
    """
    if ns % NS_PER_US == 0:
        return ns // NS_PER_US
    return ns / NS_PER_US


def _metadata_events(tracks: tuple[Track, ...]) -> Iterator[dict[str, Any]]:
    seen_pids: set[int] = set()
    for t in sorted(tracks, key=lambda t: (t.pid, t.tid)):
        if t.pid not in seen_pids:
            seen_pids.add(t.pid)
            yield {"name": "process_name", "ph": "M", "ts": 0, "pid": t.pid, "tid": t.tid,
                   "args": {"name": t.process_name}}
            yield {"name": "process_sort_index", "ph": "M", "ts": 0, "pid": t.pid, "tid": t.tid,
                   "args": {"sort_index": t.process_sort_index}}
        yield {"name": "thread_name", "ph": "M", "ts": 0, "pid": t.pid, "tid": t.tid,
               "args": {"name": t.thread_name}}
        yield {"name": "thread_sort_index", "ph": "M", "ts": 0, "pid": t.pid, "tid": t.tid,
               "args": {"sort_index": t.thread_sort_index}}


def _check_tracks(timeline: Timeline) -> dict[int, int]:
    """``tid -> pid``; raises on a duplicate ``tid``, a non-positive id or a process with two
    names."""
    pid_of: dict[int, int] = {}
    pname: dict[int, str] = {}
    for t in timeline.tracks:
        if t.pid <= 0 or t.tid <= 0:
            raise InvariantError(f"timeline track {t.thread_name!r}: pid {t.pid} / tid {t.tid} "
                                 "must be > 0")
        if t.tid in pid_of:
            raise InvariantError(f"timeline: tid {t.tid} used by two tracks")
        if pname.setdefault(t.pid, t.process_name) != t.process_name:
            raise InvariantError(f"timeline: pid {t.pid} has two process names")
        pid_of[t.tid] = t.pid
    return pid_of


def trace_event_dicts(timeline: Timeline) -> list[dict[str, Any]]:
    """The trace's events as JSON-able dicts, in file order (metadata first, then by time).

    Raises:
        InvariantError: an event on an unknown track, a negative time or duration, or
            inconsistent track ids (see :class:`~llmsim.timeline.events.Track`).
    """
    pid_of = _check_tracks(timeline)
    keyed: list[tuple[tuple[int, int, int, int], dict[str, Any]]] = []
    ev: dict[str, Any]

    def where(tid: int, what: str, t_ns: int) -> int:
        pid = pid_of.get(tid)
        if pid is None:
            raise InvariantError(f"timeline: {what} on unknown track {tid}")
        if t_ns < 0:
            raise InvariantError(f"timeline: {what} at negative time {t_ns} ns")
        return pid

    for s in timeline.slices:
        pid = where(s.track, f"slice {s.name!r}", s.start_ns)
        if s.duration_ns < 0:
            raise InvariantError(f"timeline: slice {s.name!r} has negative duration "
                                 f"{s.duration_ns} ns")
        ev = {"name": s.name, "cat": s.kind.value, "ph": "X", "ts": ns_to_us(s.start_ns),
              "dur": ns_to_us(s.duration_ns), "pid": pid, "tid": s.track}
        if s.args:
            ev["args"] = dict(s.args)
        keyed.append(((s.start_ns, -s.duration_ns, s.track, len(keyed)), ev))
    for i in timeline.instants:
        pid = where(i.track, f"instant {i.name!r}", i.time_ns)
        ev = {"name": i.name, "cat": i.kind.value, "ph": "i", "ts": ns_to_us(i.time_ns),
              "pid": pid, "tid": i.track, "s": "t"}
        if i.args:
            ev["args"] = dict(i.args)
        keyed.append(((i.time_ns, 0, i.track, len(keyed)), ev))
    for c in timeline.counters:
        pid = where(c.track, f"counter {c.name!r}", c.time_ns)
        keyed.append(((c.time_ns, 0, c.track, len(keyed)),
                      {"name": c.name, "cat": "counter", "ph": "C", "ts": ns_to_us(c.time_ns),
                       "pid": pid, "tid": c.track, "args": dict(c.values)}))
    keyed.sort(key=lambda kv: kv[0])
    return [*_metadata_events(timeline.tracks), *(ev for _k, ev in keyed)]


def encode_trace_events(timeline: Timeline) -> bytes:
    """The trace as UTF-8 JSON bytes, one event per line (deterministic).

    Raises:
        InvariantError: as :func:`trace_event_dicts`, or a non-finite number in an event.
    """
    encode = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode  # one, reused
    try:
        lines = [encode(ev) for ev in trace_event_dicts(timeline)]
        other = encode(dict(sorted(timeline.metadata)))
    except ValueError as exc:
        raise InvariantError(f"timeline: {exc} (NaN or infinity in an event)") from exc
    text = '{"traceEvents":[\n' + ",\n".join(lines) + '\n],\n"otherData":' + other + "}\n"
    return text.encode("utf-8")


def write_trace_events(timeline: Timeline, path: str | Path) -> Path:
    """Write the trace to ``path`` atomically; gzip it when ``path`` ends in ``.gz``.

    Returns:
        ``path``.

    Raises:
        InvariantError: as :func:`encode_trace_events`.
        OSError: the file cannot be written.
    """
    path = Path(path)
    data = encode_trace_events(timeline)
    if path.suffix == ".gz":
        data = gzip.compress(data, compresslevel=6, mtime=0)
    return atomic_write_bytes(path, data)
