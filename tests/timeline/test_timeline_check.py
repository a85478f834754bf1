"""The trace checker: each Trace Event Format / Perfetto-importer rule is caught when broken."""

from __future__ import annotations

import copy
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmsim.timeline import check_trace_events


def _meta(pid: int, tid: int, thread: str) -> list[dict]:
    return [{"name": "process_name", "ph": "M", "pid": pid, "tid": tid,
             "args": {"name": f"p{pid}"}},
            {"name": "thread_name", "ph": "M", "pid": pid, "tid": tid, "args": {"name": thread}}]


def _x(ts, dur, tid=1, pid=1, name="s", cat="step") -> dict:
    return {"name": name, "cat": cat, "ph": "X", "ts": ts, "dur": dur, "pid": pid, "tid": tid}


def _good() -> dict:
    return {"traceEvents": [
        *_meta(1, 1, "GPU"), *_meta(1, 2, "CPU")[1:],
        {"name": "thread_sort_index", "ph": "M", "pid": 1, "tid": 2, "args": {"sort_index": 1}},
        _x(0, 10), _x(2, 3, name="child", cat="prefill"), _x(10, 5),
        {"name": "preempt", "cat": "preemption", "ph": "i", "s": "t", "ts": 12, "pid": 1,
         "tid": 2},
        {"name": "B", "cat": "schedule", "ph": "B", "ts": 20, "pid": 1, "tid": 2},
        {"name": "B", "cat": "schedule", "ph": "E", "ts": 21.5, "pid": 1, "tid": 2},
        {"name": "queue", "cat": "counter", "ph": "C", "ts": 15, "pid": 1, "tid": 1,
         "args": {"running": 2, "waiting": 0.5}},
    ]}


def test_a_valid_trace_has_no_problems_and_counts_per_kind():
    chk = check_trace_events(_good())
    assert chk.problems == ()
    assert chk.counts_by_cat() == {"step": 2, "prefill": 1, "preemption": 1, "schedule": 2,
                                   "counter": 1}
    assert chk.count("step", "X") == 2 and chk.count("schedule", "B") == 1
    assert chk.process_names == {1: "p1"} and chk.thread_names == {(1, 1): "GPU", (1, 2): "CPU"}
    assert chk.arg_sum("counter", "running") == 2


def _broken(edit) -> tuple[str, ...]:
    doc = copy.deepcopy(_good())
    edit(doc["traceEvents"])
    return check_trace_events(doc).problems


def _set(index: int, **fields):
    def edit(evs):
        evs[index].update(fields)
    return edit


def _drop(key: str, index: int):
    def edit(evs):
        del evs[index][key]
    return edit


STEP0 = 4  # index of _x(0, 10) in _good()


@pytest.mark.parametrize("edit, expect", [
    (_set(STEP0, ph="Q"), "ph 'Q'"),
    (_set(STEP0, ts="0"), "ts must be a finite number"),
    (_set(STEP0, ts=-1), "ts must be a finite number"),
    (_drop("ts", STEP0), "ts must be a finite number"),
    (_set(STEP0, dur=None), "dur must be"),
    (_set(STEP0, dur=-0.5), "dur must be"),
    (_set(STEP0, pid="1"), "pid must be an integer"),
    (_set(STEP0, tid=True), "tid must be an integer"),
    (_set(STEP0, tid=2**32), "tid must be an integer"),
    (_set(STEP0, name=""), "name must be a non-empty string"),
    (_set(STEP0, name=["x"]), "name must be a non-empty string"),
    (_set(STEP0, args=[1]), "args must be an object"),
    (_set(STEP0, cat=3), "cat must be a string"),
    (_set(7, s="x"), "instant scope"),
    (_set(10, args={"running": "two"}), "numeric args"),
    (_set(10, args={}), "numeric args"),
    (_set(0, name="process_label"), "unknown metadata"),
    (_set(3, args={"sort_index": "1"}), "sort_index must be an integer"),
    (_set(1, args={"name": 5}), "args.name must be a string"),
    (_set(STEP0, dur=12), "overlaps slice"),             # [0,12] vs sibling [10,15]
    (_set(5, ts=8), "overlaps slice"),                   # child [8,11] sticks out of [0,10]
    (_set(6, ts=1), "goes back in time"),                # ts 1 after the child at ts 2
    (_set(STEP0, tid=3), "has slices but no thread_name"),
    (_set(STEP0, pid=5, tid=9), "no process_name"),
    (_set(9, ph="B"), "never ends"),
    (_set(8, ph="E"), "without an open B"),
    (lambda evs: evs.append({"name": "thread_name", "ph": "M", "pid": 2, "tid": 1,
                             "args": {"name": "GPU"}}), "tid 1 used in pid 2"),
    (lambda evs: evs.append({"name": "thread_name", "ph": "M", "pid": 1, "tid": 1,
                             "args": {"name": "other"}}), "named twice"),
    (lambda evs: evs.append(7), "not an object"),
])
def test_each_broken_rule_is_reported(edit, expect):
    problems = _broken(edit)
    assert any(expect in p for p in problems), problems


def test_root_shapes_and_display_time_unit():
    assert check_trace_events(_good()["traceEvents"]).problems == ()
    assert "root must be" in check_trace_events({"events": []}).problems[0]
    doc = _good() | {"displayTimeUnit": "ns"}
    assert any("displayTimeUnit" in p for p in check_trace_events(doc).problems)
    assert check_trace_events(_good() | {"displayTimeUnit": "ms"}).problems == ()


def test_bytes_and_many_problems_are_capped():
    evs = [_x(i, 1, tid=1000 + i) for i in range(80)]  # 80 unnamed tracks, 1 unnamed pid
    chk = check_trace_events(json.dumps({"traceEvents": evs}).encode())
    assert len(chk.problems) == 51 and chk.problems[-1] == "... and 31 more"


intervals = st.lists(st.tuples(st.integers(0, 40), st.integers(0, 15)), min_size=1, max_size=12)


@settings(max_examples=200, deadline=None)
@given(intervals)
def test_nesting_check_agrees_with_the_pairwise_definition(spans):
    # laminar: every two slices are disjoint (touching ends allowed) or one contains the other
    def ok(a, b):
        (s1, d1), (s2, d2) = a, b
        e1, e2 = s1 + d1, s2 + d2
        return e1 <= s2 or e2 <= s1 or (s1 <= s2 and e2 <= e1) or (s2 <= s1 and e1 <= e2)

    laminar = all(ok(spans[i], spans[j]) for i in range(len(spans)) for j in range(i))
    ordered = sorted(spans, key=lambda sd: (sd[0], -sd[1]))
    doc = {"traceEvents": [*_meta(1, 1, "t"), *(_x(s, d) for s, d in ordered)]}
    problems = check_trace_events(doc).problems
    assert (problems == ()) == laminar, (ordered, problems)
