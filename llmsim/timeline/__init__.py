"""Timelines: a replay as a Chrome / Perfetto trace (``llmsim replay --trace-events FILE``).

::

    ReplayResult --timeline_from_replay--> Timeline --write_trace_events--> FILE(.json[.gz])
    FILE --check_trace_events--> TraceCheck (problems, events)

* :mod:`llmsim.timeline.events`: the format-neutral model (tracks, slices, instants,
  counters; integer ns; :class:`EventKind` is each event's Chrome ``cat``);
* :mod:`llmsim.timeline.from_replay`: which tracks and events a replay gives;
* :mod:`llmsim.timeline.chrome`: the Trace Event Format writer (ns -> us in one place,
  deterministic bytes, atomic, gzip for ``.gz``);
* :mod:`llmsim.timeline.check`: reads a trace back and checks the rules Perfetto's JSON
  importer relies on.
"""

from llmsim.timeline.check import TraceCheck, check_trace_events, load_trace_events
from llmsim.timeline.chrome import encode_trace_events, ns_to_us, write_trace_events
from llmsim.timeline.events import (
    CounterSample,
    EventKind,
    Instant,
    Slice,
    Timeline,
    Track,
)
from llmsim.timeline.from_replay import timeline_from_replay

__all__ = [
    "CounterSample", "EventKind", "Instant", "Slice", "Timeline", "TraceCheck", "Track",
    "check_trace_events", "encode_trace_events", "load_trace_events", "ns_to_us",
    "timeline_from_replay", "write_trace_events",
]
