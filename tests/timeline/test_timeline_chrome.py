"""The Chrome / Perfetto writer on hand-built timelines: units, order, bytes, atomicity."""

from __future__ import annotations

import gzip
import json
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmsim.errors import InvariantError
from llmsim.timeline import (
    CounterSample,
    EventKind,
    Instant,
    Slice,
    Timeline,
    Track,
    check_trace_events,
    encode_trace_events,
    ns_to_us,
    write_trace_events,
)


def _track(tid: int, pid: int = 1, name: str = "GPU steps") -> Track:
    return Track(pid=pid, tid=tid, process_name=f"instance {pid - 1}", thread_name=name,
                 process_sort_index=pid, thread_sort_index=tid)


def _timeline(**kw) -> Timeline:
    base = {
        "tracks": (_track(1), _track(2, name="CPU schedule"), _track(3, pid=2, name="req a")),
        "slices": (
            Slice(kind=EventKind.STEP, track=1, name="decode", start_ns=2_500, duration_ns=1_000,
                  args=(("step", 1),)),
            Slice(kind=EventKind.STEP, track=1, name="prefill", start_ns=1_000, duration_ns=1_500,
                  args=(("step", 0), ("num_prefill_tokens", 64))),
            Slice(kind=EventKind.QUEUED, track=3, name="queued", start_ns=0, duration_ns=1_000),
        ),
        "instants": (Instant(kind=EventKind.PREEMPTION, track=2, name="preempt", time_ns=2_400),),
        "counters": (CounterSample(track=1, name="queue", time_ns=2_500,
                                values=(("running", 3), ("waiting", 1))),),
        "metadata": (("experiment", "unit"),),
    }
    base.update(kw)
    return Timeline(**base)


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=10**15 - 1))
def test_ns_to_us_is_exact_and_round_trips_like_perfetto(ns):
    us = ns_to_us(ns)
    text = json.dumps(us)
    # the JSON text is the exact decimal ns / 1000 ...
    whole, _, frac = text.partition(".")
    assert int(whole) * 1000 + int((frac or "0").ljust(3, "0")) == ns
    # ... and Perfetto's llround(ts * 1000) gives ns back
    assert round(json.loads(text) * 1000) == ns
    assert isinstance(us, int) == (ns % 1000 == 0)


def test_events_are_in_time_order_after_metadata_and_in_microseconds():
    doc = json.loads(encode_trace_events(_timeline()))
    evs = doc["traceEvents"]
    phases = [e["ph"] for e in evs]
    n_meta = phases.count("M")
    assert phases[:n_meta] == ["M"] * n_meta and "M" not in phases[n_meta:]
    assert n_meta == 2 * 2 + 2 * 3  # name + sort index per process and per track
    data = evs[n_meta:]
    assert [e["ts"] for e in data] == sorted(e["ts"] for e in data)
    prefill = next(e for e in data if e["name"] == "prefill")
    assert (prefill["ts"], prefill["dur"], prefill["cat"], prefill["pid"]) == (1, 1.5, "step", 1)
    assert prefill["args"] == {"step": 0, "num_prefill_tokens": 64}
    inst = next(e for e in data if e["ph"] == "i")
    assert (inst["ts"], inst["s"], inst["cat"], inst["tid"]) == (2.4, "t", "preemption", 2)
    counter = next(e for e in data if e["ph"] == "C")
    assert counter["args"] == {"running": 3, "waiting": 1} and counter["ts"] == 2.5
    assert doc["otherData"] == {"experiment": "unit"}
    assert "displayTimeUnit" not in doc
    assert check_trace_events(doc).problems == ()


def test_same_timeline_gives_same_bytes_and_gzip_holds_the_json(tmp_path):
    a = write_trace_events(_timeline(), tmp_path / "a.json")
    b = write_trace_events(_timeline(), tmp_path / "b.json")
    assert a.read_bytes() == b.read_bytes()
    ga = write_trace_events(_timeline(), tmp_path / "a.json.gz")
    gb = write_trace_events(_timeline(), tmp_path / "sub" / "b.json.gz")
    assert ga.read_bytes() == gb.read_bytes()  # no mtime, no file name in the header
    assert ga.read_bytes()[:2] == b"\x1f\x8b"
    assert gzip.decompress(ga.read_bytes()) == a.read_bytes()
    assert check_trace_events(ga).problems == ()


def test_parents_come_before_children_that_start_with_them():
    tl = _timeline(slices=(
        Slice(kind=EventKind.PREFILL, track=1, name="child", start_ns=1_000, duration_ns=10),
        Slice(kind=EventKind.STEP, track=1, name="parent", start_ns=1_000, duration_ns=500),
    ), instants=(), counters=())
    names = [e["name"] for e in json.loads(encode_trace_events(tl))["traceEvents"]
             if e["ph"] == "X"]
    assert names == ["parent", "child"]


@pytest.mark.parametrize("bad, match", [
    ({"slices": (Slice(kind=EventKind.STEP, track=9, name="x", start_ns=0, duration_ns=1),)},
     "unknown track 9"),
    ({"slices": (Slice(kind=EventKind.STEP, track=1, name="x", start_ns=-1, duration_ns=1),)},
     "negative time"),
    ({"slices": (Slice(kind=EventKind.STEP, track=1, name="x", start_ns=0, duration_ns=-5),)},
     "negative duration"),
    ({"slices": (Slice(kind=EventKind.STEP, track=1, name="x", start_ns=0, duration_ns=1,
                        args=(("kv", float("nan")),)),)}, "NaN"),
    ({"tracks": (_track(1), _track(1, name="again"))}, "tid 1 used by two tracks"),
    ({"tracks": (_track(1), Track(pid=1, tid=2, process_name="other", thread_name="t",
                                   process_sort_index=0, thread_sort_index=0))},
     "two process names"),
    ({"tracks": (Track(pid=0, tid=1, process_name="p", thread_name="t", process_sort_index=0,
                        thread_sort_index=0),)}, "must be > 0"),
])
def test_writer_refuses_broken_timelines(bad, match):
    tl = _timeline(**({"instants": (), "counters": ()} | bad))
    with pytest.raises(InvariantError, match=match):
        encode_trace_events(tl)


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = write_trace_events(_timeline(), tmp_path / "t.json")
    before = path.read_bytes()
    broken = _timeline(slices=(Slice(kind=EventKind.STEP, track=7, name="x", start_ns=0,
                                     duration_ns=1),))
    with pytest.raises(InvariantError):
        write_trace_events(broken, path)
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["t.json"]
