"""Simulated time without bound (issue 17): long gaps, the sparse time series, the horizon.

Two requests 399 days apart replay in a few rows; the sparse series, forward-filled on the
1 s grid, equals the dense one tick for tick; arrivals and session turns past
``MAX_SIMULATED_NS`` are refused naming the request; the trace's arrivals, read outside
the heap, give exactly the event order of pushing them all on it.
"""

from __future__ import annotations

import heapq

import numpy as np
import pandas as pd
import pytest
from bounds_factories import (
    DAY_NS,
    MS,
    FnCost,
    S,
    make_instance,
    make_request,
    simulate,
)
from hypothesis import given, settings
from hypothesis import strategies as st

import llmsim.metrics.recorder as recorder_mod
import llmsim.sim.loop as loop_mod
from llmsim.errors import ConfigError, TraceFormatError
from llmsim.metrics import Recorder
from llmsim.metrics.recorder import QUIET_TICKS_WRITTEN
from llmsim.replay import validate_trace
from llmsim.router import LeastLoaded
from llmsim.sim.events import EventKind
from llmsim.trace.record import Trace


def _frame(rec) -> pd.DataFrame:
    return rec.tables()[2]


def _dense_from_sparse(ts: pd.DataFrame) -> pd.DataFrame:
    """Forward-fill a sparse series onto ticks 1..last (omitted ticks repeat the row before
    them, throughputs 0)."""
    t = np.rint(ts["t"].to_numpy()).astype(int)
    grid = pd.DataFrame({"t": np.arange(1, t.max() + 1, dtype=np.float64)})
    out = grid.merge(ts.assign(t=t.astype(np.float64)), on="t", how="left")
    missing = out["running"].isna()
    out[["running", "waiting", "kv_cache_pct"]] = out[["running", "waiting",
                                                       "kv_cache_pct"]].ffill()
    out.loc[missing, ["prompt_throughput", "gen_throughput"]] = 0.0
    return out.astype({"running": np.int64, "waiting": np.int64})


def test_two_requests_399_days_apart_take_a_few_rows():
    reqs = [make_request("a"), make_request("b", arrival_ns=399 * DAY_NS)]
    rec, _sim = simulate(reqs)
    ts = _frame(rec)
    requests = rec.tables()[0]
    assert requests["finish_s"].notna().all()
    # tick 1 (busy), 60 quiet ticks, the gap's last tick, the busy tick of b (+ its quiet end)
    assert len(ts) <= 2 * (QUIET_TICKS_WRITTEN + 2)
    assert ts["t"].is_monotonic_increasing
    assert ts["gen_throughput"].sum() == 8  # every token counted once
    # b arrives at the very end of tick 399 d (it covers (k - 1 s, k]): the tick before
    # is the gap's last, written although it repeats the gap's first rows
    last_quiet = ts[ts["t"] == 399 * 86_400 - 1].iloc[0]
    assert (last_quiet["running"], last_quiet["waiting"], last_quiet["gen_throughput"]) == (0, 0, 0)


def test_sparse_series_restores_the_dense_one(monkeypatch):
    reqs = [make_request("a", output=30), make_request("b", arrival_ns=200 * S + 5 * MS),
            make_request("c", arrival_ns=200 * S + 7 * MS, output=200),
            make_request("d", arrival_ns=1000 * S)]
    sparse = _frame(simulate(reqs)[0])
    monkeypatch.setattr(recorder_mod, "QUIET_TICKS_WRITTEN", 10**9)
    dense = _frame(simulate(reqs)[0])
    assert len(sparse) < len(dense) == 1001
    pd.testing.assert_frame_equal(_dense_from_sparse(sparse), dense, check_dtype=False)


@settings(max_examples=60, deadline=None)
@given(gaps_ms=st.lists(st.integers(0, 90_000), min_size=1, max_size=6),
       outputs=st.lists(st.integers(1, 40), min_size=6, max_size=6),
       keep=st.integers(0, 4), step_ms=st.sampled_from([10, 700, 2_500]))
def test_sparse_equals_dense_after_forward_fill(gaps_ms, outputs, keep, step_ms):
    t, reqs = 0, []
    for i, gap in enumerate(gaps_ms):
        t += gap * MS
        reqs.append(make_request(f"r{i}", arrival_ns=t, output=outputs[i]))

    def run(quiet_kept):
        old = recorder_mod.QUIET_TICKS_WRITTEN
        recorder_mod.QUIET_TICKS_WRITTEN = quiet_kept
        try:
            cost = FnCost(lambda _b: step_ms * MS)
            return _frame(simulate(reqs, [make_instance(cost=cost)])[0])
        finally:
            recorder_mod.QUIET_TICKS_WRITTEN = old

    sparse, dense = run(keep), run(10**9)
    assert len(dense) == int(dense["t"].iloc[-1])  # dense: one row a tick
    pd.testing.assert_frame_equal(_dense_from_sparse(sparse), dense, check_dtype=False)
    # at most `keep` + 1 rows per quiet run beyond the ticks with activity
    assert len(sparse) <= len(dense)


def test_arrival_beyond_the_horizon_is_refused_with_the_request():
    reqs = [make_request("a"), make_request("late", arrival_ns=loop_mod.MAX_SIMULATED_NS + 1)]
    with pytest.raises(TraceFormatError) as err:
        simulate(reqs)
    assert err.value.field == "arrival_ns" and err.value.line == 2 and "late" in str(err.value)
    with pytest.raises(TraceFormatError) as err:
        validate_trace(Trace(requests=tuple(reqs), source="t.jsonl"), capacity_tokens=10**6)
    assert (err.value.path, err.value.line, err.value.field) == ("t.jsonl", 2, "arrival_ns")


def test_session_turn_released_past_the_horizon_names_its_think_time(monkeypatch):
    monkeypatch.setattr(loop_mod, "MAX_SIMULATED_NS", 100 * S)
    reqs = [make_request("a"), make_request("b", parent_id="a", think_time_ns=500 * S)]
    with pytest.raises(TraceFormatError) as err:
        simulate(reqs)
    assert (err.value.line, err.value.field) == (2, "think_time_ns")


def test_steps_running_past_the_horizon_stop_the_run(monkeypatch):
    monkeypatch.setattr(loop_mod, "MAX_SIMULATED_NS", 30 * S)
    slow = make_instance(cost=FnCost(lambda _b: 2 * S))  # 2 s a step, 20 tokens: 40 s
    with pytest.raises(ConfigError) as err:
        simulate([make_request("a", output=20)], [slow])
    assert err.value.field == "overheads" and "MAX_SIMULATED_NS" in str(err.value)


class _HeapOnly(loop_mod.Simulation):
    """The loop as it was: every trace arrival pushed on the heap up front."""

    def _initial_events(self) -> None:
        super()._initial_events()
        self._seq = 0
        for i in self._roots:
            self._seq += 1
            self._heap.append((self.requests[i].arrival_ns, EventKind.ARRIVAL, self._seq, i))
        heapq.heapify(self._heap)
        self._roots = []


@settings(max_examples=60, deadline=None)
@given(arrivals=st.lists(st.integers(0, 40), min_size=1, max_size=14),
       outputs=st.lists(st.integers(1, 12), min_size=14, max_size=14),
       parents=st.lists(st.booleans(), min_size=14, max_size=14),
       n_inst=st.integers(1, 3), async_scheduling=st.booleans())
def test_arrivals_outside_the_heap_keep_the_event_order(arrivals, outputs, parents, n_inst,
                                                        async_scheduling):
    reqs = []
    for i, a in enumerate(sorted(arrivals)):
        parent = f"r{i - 1}" if i and parents[i] else None
        reqs.append(make_request(f"r{i}", arrival_ns=a * 5 * MS, output=outputs[i],
                                 parent_id=parent, think_time_ns=3 * MS if parent else 0))

    def run(cls):
        insts = [make_instance(instance_id=k, async_scheduling=async_scheduling,
                               cost=FnCost(lambda b: 5 * MS + 100_000 * b.num_tokens))
                 for k in range(n_inst)]
        rec = Recorder(reqs, keep_steps=True)
        stats = cls(reqs, insts, LeastLoaded(), rec).run()
        return rec.tables(), stats

    (req_a, _itl_a, ts_a, steps_a), stats_a = run(loop_mod.Simulation)
    (req_b, _itl_b, ts_b, steps_b), stats_b = run(_HeapOnly)
    pd.testing.assert_frame_equal(req_a, req_b)
    pd.testing.assert_frame_equal(steps_a, steps_b)
    pd.testing.assert_frame_equal(ts_a, ts_b)
    assert stats_a == stats_b
