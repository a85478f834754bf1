"""Build a :class:`~llmsim.timeline.events.Timeline` from a replay's public outputs.

Reads only :class:`llmsim.replay.ReplayResult`'s per-request table (``requests``), its
per-step log (``steps``, :data:`llmsim.metrics.STEP_COLUMNS`) and its ``summary``. Those hold
times in seconds / milliseconds as float64 (the recorder divides integer ns by 1e9 / 1e6);
:func:`seconds_to_ns` recovers the integer ns exactly (the division and the multiplication
each err by under half an ulp, far below 0.5 ns for times under ~10^6 s).

Tracks (Perfetto groups each process; rows in this order):

* per instance ``i`` (process ``instance i: HW``):

  - ``GPU steps``: one slice per step, ``start_ns`` to ``end_ns``, named by its composition
    (``prefill``, ``decode``, ``prefill+decode``), with the batch composition in ``args``;
    counter tracks ``queue running`` / ``queue waiting`` / ``kv_cache pct`` sampled at each
    step's end;
  - ``CPU schedule``: one slice per step, ``scheduled_ns`` to ``scheduled_ns + cpu_ns``,
    and one ``preempt`` instant per sequence preempted while scheduling it;
  - ``prefill chunks``: one slice per step that computes prefill chunks, over the step,
    with ``num_prefill_chunks`` and ``num_prefill_tokens``;

* ``requests``: one row per request (trace order) with ``queued`` (arrival at the instance
  to first scheduling), ``prefill`` (to the first token; a preemption before it, with its
  re-queueing, stays inside) and ``decode`` (to the last token; absent for one-token
  outputs). A request that never finished has only the spans whose ends are known. In a
  P/D replay (:mod:`llmsim.pd`) a ``kv transfer`` span (its bytes, prefill and decode
  instance) sits inside ``prefill``, from when the transfer could start to its end.

What the public outputs do not hold, and so is not drawn yet: which request each prefill
chunk and each preemption belongs to (the step log has counts only), TP collectives (the
cost model's ``breakdown_ns["all_reduce"]`` is not in the step log) and KV transfers (not
simulated). :class:`~llmsim.timeline.events.EventKind` reserves ``COLLECTIVE`` and
``KV_TRANSFER`` for them.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from llmsim.errors import ConfigError
from llmsim.timeline.events import (
    CounterSample,
    EventKind,
    Instant,
    Slice,
    Timeline,
    Track,
)

__all__ = ["seconds_to_ns", "timeline_from_replay"]

NS_PER_S = 1_000_000_000
NS_PER_MS = 1_000_000

_STEP_FIELDS = ("instance_id", "step", "num_seqs", "num_prefill_tokens", "num_decodes",
                "num_preempted", "num_admitted", "num_emitted", "num_finished", "running",
                "waiting")


def seconds_to_ns(values: Any, scale: int = NS_PER_S) -> np.ndarray:
    """Float seconds (``scale=NS_PER_S``) or milliseconds (``NS_PER_MS``) -> int64 ns,
    rounded to nearest; NaN stays NaN in a float64 array instead.

    Args:
        values: a sequence or array of floats.
        scale: ns per input unit.

    Returns:
        int64 array when every value is finite, else float64 (NaN where missing).
    """
    a = np.rint(np.asarray(values, dtype=np.float64) * scale)
    return a.astype(np.int64) if np.isfinite(a).all() else a


class _Tracks:
    """Allocates ``tid`` values (unique across the timeline) and keeps the tracks."""

    def __init__(self) -> None:
        self.tracks: list[Track] = []

    def add(self, *, pid: int, process: str, process_sort: int, thread: str,
            thread_sort: int) -> int:
        tid = len(self.tracks) + 1
        self.tracks.append(Track(pid=pid, tid=tid, process_name=process, thread_name=thread,
                                 process_sort_index=process_sort, thread_sort_index=thread_sort))
        return tid


def _step_name(num_prefill_chunks: int, num_decodes: int) -> str:
    if num_prefill_chunks and num_decodes:
        return "prefill+decode"
    return "prefill" if num_prefill_chunks else "decode"


def _instance_label(i: int, summary: dict[str, Any]) -> str:
    hw = summary.get("hardware") or "instance"
    engine = summary.get("engine") or {}
    tp = engine.get("tensor_parallel_size") or 1
    pp = engine.get("pipeline_parallel_size") or 1
    return f"instance {i}: {hw}" + (f" TP{tp}" if tp > 1 else "") + (f" PP{pp}" if pp > 1 else "")


def _instance_ids(steps: pd.DataFrame, requests: pd.DataFrame, summary: dict[str, Any]) -> list[int]:
    ids = {int(x) for x in steps["instance_id"].tolist()}
    ids.update(int(x) for x in requests["instance_id"].tolist() if int(x) >= 0)
    ids.update(range(int(summary.get("num_instances") or 0)))
    return sorted(ids)


def _step_events(steps: pd.DataFrame, lanes: dict[int, tuple[int, int, int]],
                 slices: list[Slice], instants: list[Instant],
                 counters: list[CounterSample]) -> None:
    cols = {name: steps[name].to_numpy(dtype=np.int64).tolist() for name in _STEP_FIELDS}
    sched = seconds_to_ns(steps["scheduled_s"]).tolist()
    start = seconds_to_ns(steps["start_s"]).tolist()
    end = seconds_to_ns(steps["end_s"]).tolist()
    gpu = seconds_to_ns(steps["gpu_ms"], NS_PER_MS).tolist()
    cpu = seconds_to_ns(steps["cpu_ms"], NS_PER_MS).tolist()
    kv_pct = steps["kv_cache_pct"].to_numpy(dtype=np.float64).tolist()
    for r in range(len(steps)):
        gpu_tid, cpu_tid, prefill_tid = lanes[cols["instance_id"][r]]
        k = cols["step"][r]
        n_seqs, n_dec = cols["num_seqs"][r], cols["num_decodes"][r]
        n_chunks = n_seqs - n_dec
        n_pre, n_tok = cols["num_preempted"][r], cols["num_prefill_tokens"][r]
        args = (("step", k), ("num_seqs", n_seqs), ("num_prefill_chunks", n_chunks),
                ("num_prefill_tokens", n_tok), ("num_decodes", n_dec),
                ("num_admitted", cols["num_admitted"][r]), ("num_preempted", n_pre),
                ("num_emitted", cols["num_emitted"][r]),
                ("num_finished", cols["num_finished"][r]), ("gpu_ns", gpu[r]),
                ("cpu_ns", cpu[r]), ("running_after", cols["running"][r]),
                ("waiting_after", cols["waiting"][r]), ("kv_cache_pct_after", kv_pct[r]))
        slices.append(Slice(kind=EventKind.STEP, track=gpu_tid, name=_step_name(n_chunks, n_dec),
                            start_ns=start[r], duration_ns=end[r] - start[r], args=args))
        slices.append(Slice(kind=EventKind.SCHEDULE, track=cpu_tid, name="schedule",
                            start_ns=sched[r], duration_ns=cpu[r],
                            args=(("step", k), ("num_seqs", n_seqs))))
        for j in range(n_pre):
            instants.append(Instant(kind=EventKind.PREEMPTION, track=cpu_tid, name="preempt",
                                    time_ns=sched[r],
                                    args=(("step", k), ("preemption", j + 1),
                                          ("num_preempted", n_pre))))
        if n_chunks > 0:
            slices.append(Slice(kind=EventKind.PREFILL, track=prefill_tid, name="prefill chunks",
                                start_ns=start[r], duration_ns=end[r] - start[r],
                                args=(("step", k), ("num_prefill_chunks", n_chunks),
                                      ("num_prefill_tokens", n_tok))))
        counters.append(CounterSample(track=gpu_tid, name="queue", time_ns=end[r],
                                      values=(("running", cols["running"][r]),
                                              ("waiting", cols["waiting"][r]))))
        counters.append(CounterSample(track=gpu_tid, name="kv_cache", time_ns=end[r],
                                      values=(("pct", kv_pct[r]),)))


def _request_events(requests: pd.DataFrame, tracks: _Tracks, pid: int, process_sort: int,
                    slices: list[Slice]) -> None:
    times = {c: seconds_to_ns(requests[c]).tolist()
             for c in ("arrival_s", "first_scheduled_s", "first_token_s", "finish_s")}
    ints = {c: requests[c].to_numpy(dtype=np.int64).tolist()
            for c in ("input_tokens", "output_tokens", "prefix_hit_tokens", "num_preemptions",
                      "instance_id")}
    kv: dict[str, list[Any]] | None = None
    if "kv_transfer_ready_s" in requests.columns:
        kv = {c: seconds_to_ns(requests[c]).tolist()
              for c in ("kv_transfer_ready_s", "kv_transfer_end_s")}
        kv.update({c: requests[c].to_numpy(dtype=np.int64).tolist()
                   for c in ("kv_transfer_bytes", "prefill_instance_id", "decode_instance_id")})
    for r, rid in enumerate(requests["request_id"].astype(str).tolist()):
        tid = tracks.add(pid=pid, process="requests", process_sort=process_sort,
                         thread=f"req {rid}", thread_sort=r)
        common = (("request_id", rid), ("instance_id", ints["instance_id"][r]))
        phases = (
            (EventKind.QUEUED, "queued", "arrival_s", "first_scheduled_s", ()),
            (EventKind.REQUEST_PREFILL, "prefill", "first_scheduled_s", "first_token_s",
             (("input_tokens", ints["input_tokens"][r]),
              ("prefix_hit_tokens", ints["prefix_hit_tokens"][r]),
              ("num_preemptions", ints["num_preemptions"][r]))),
            (EventKind.DECODE, "decode", "first_token_s", "finish_s",
             (("output_tokens", ints["output_tokens"][r]),
              ("num_preemptions", ints["num_preemptions"][r]))),
        )
        for kind, name, a, b, extra in phases:
            t0, t1 = times[a][r], times[b][r]
            if not (math.isfinite(t0) and math.isfinite(t1) and t1 >= t0):
                continue  # not reached (unfinished request) or not ordered (never seen)
            if kind is EventKind.DECODE and ints["output_tokens"][r] <= 1:
                continue
            slices.append(Slice(kind=kind, track=tid, name=name, start_ns=int(t0),
                                duration_ns=int(t1) - int(t0), args=common + extra))
        if kv is not None:  # P/D: the KV transfer, inside the prefill span
            t0, t1 = kv["kv_transfer_ready_s"][r], kv["kv_transfer_end_s"][r]
            if math.isfinite(t0) and math.isfinite(t1) and t1 >= t0:
                slices.append(Slice(kind=EventKind.KV_TRANSFER, track=tid, name="kv transfer",
                                    start_ns=int(t0), duration_ns=int(t1) - int(t0),
                                    args=common + (
                                        ("bytes", kv["kv_transfer_bytes"][r]),
                                        ("prefill_instance_id", kv["prefill_instance_id"][r]),
                                        ("decode_instance_id", kv["decode_instance_id"][r]))))


def timeline_from_replay(result: Any) -> Timeline:
    """The timeline of a replay.

    Args:
        result: a :class:`llmsim.replay.ReplayResult` (``requests``, ``steps``, ``summary``).

    Returns:
        The timeline (tracks and events as in the module docstring).

    Raises:
        ConfigError: the result has no per-step log (``steps`` is ``None``).
    """
    steps, requests, summary = result.steps, result.requests, result.summary
    if steps is None:
        raise ConfigError("the timeline needs the replay's per-step log, and this result has "
                          "none", field="steps")
    tracks = _Tracks()
    lanes: dict[int, tuple[int, int, int]] = {}
    ids = _instance_ids(steps, requests, summary)
    for i in ids:
        pid, label = i + 1, _instance_label(i, summary)
        gpu, cpu, prefill = (tracks.add(pid=pid, process=label, process_sort=i, thread=name,
                                        thread_sort=k)
                             for k, name in enumerate(("GPU steps", "CPU schedule",
                                                       "prefill chunks")))
        lanes[i] = (gpu, cpu, prefill)
    slices: list[Slice] = []
    instants: list[Instant] = []
    counters: list[CounterSample] = []
    _step_events(steps, lanes, slices, instants, counters)
    req_pid = (ids[-1] + 2) if ids else 1
    _request_events(requests, tracks, req_pid, len(ids), slices)
    metadata = (("generator", "llmsim"), ("experiment", str(summary.get("name", ""))),
                ("hardware", str(summary.get("hardware", ""))),
                ("num_instances", str(len(ids))), ("clock", "simulated; ts from trace start"))
    return Timeline(tracks=tuple(tracks.tracks), slices=tuple(slices), instants=tuple(instants),
                    counters=tuple(counters), metadata=metadata)
