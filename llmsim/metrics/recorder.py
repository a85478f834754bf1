"""The metrics recorder: per-request times, per-token times, per-step log, 1 s time series.

Hot-path methods append to plain lists; DataFrames are built once, by :meth:`Recorder.tables`
at the end of a replay.

Time-series semantics (vLLM's ``timeseries.csv``, sampled from vLLM's Prometheus metrics
once a second): tick ``k`` covers ``((k-1) s, k s]`` and is labelled ``t = k``;
``prompt_throughput`` is the prompt tokens of requests whose *first token* was delivered in
the tick (vLLM counts a request's whole prompt when its prefill completes, once, even if it
is recomputed after a preemption), per second; ``gen_throughput`` the tokens delivered in
the tick, per second; ``running`` / ``waiting`` / ``kv_cache_pct`` the gauges at the end of
the tick (summed over instances; KV usage averaged over instances, percent).

Sparse quiet runs: a tick is *quiet* when no token was counted in it and its gauges equal
the previous tick's. Of a run of consecutive quiet ticks, the first
:data:`QUIET_TICKS_WRITTEN` (60: a simulated minute) and the last are written; the ones in
between are omitted. Every omitted row equals the row before it except for ``t``, so
forward-filling the series on the 1 s grid restores it exactly. Busy ticks and short idle
gaps are written as vLLM writes them (one row a second); a long idle gap (two requests
days apart) or an absurdly long step costs O(1) rows instead of one per simulated second,
and closing the ticks of a gap costs O(1) too. Rows are thus bounded by the number of
events times 62, not by the simulated horizon.

The recorder reads no live simulator state: it consumes :class:`StepRecord` values, release
notifications and, when the loop crosses a tick boundary, a :class:`Gauges` snapshot.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain, pairwise
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from llmsim.errors import ConfigError
from llmsim.instance.instance import StepRecord
from llmsim.memory.host import (
    BYTES_PER_OUTPUT_TOKEN,
    BYTES_PER_REQUEST,
    check_host_memory,
)
from llmsim.trace.record import Request

if TYPE_CHECKING:
    from llmsim.instance.fastforward import DecodeRun
    from llmsim.power.accumulator import EnergyAccumulator

NS_PER_S = 1_000_000_000

QUIET_TICKS_WRITTEN = 60
"""Rows written at the start of a run of quiet ticks (module doc); the run's last tick is
written too."""

STEP_COLUMNS = [
    "instance_id", "step", "scheduled_s", "start_s", "end_s", "gpu_ms", "cpu_ms",
    "num_seqs", "num_prefill_tokens", "num_decodes", "num_preempted", "num_admitted",
    "num_emitted", "num_finished", "running", "waiting", "kv_cache_pct", "energy_j",
]
TIMESERIES_COLUMNS = ["t", "prompt_throughput", "gen_throughput", "running", "waiting",
                      "kv_cache_pct"]
REQUEST_COLUMNS = [
    "request_id", "arrival_s", "first_scheduled_s", "first_token_s", "finish_s",
    "input_tokens", "output_tokens", "prefix_hit_tokens", "num_preemptions", "ttft_s",
    "tpot_s", "e2e_s", "instance_id", "energy_j",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class Gauges:
    """The time-series gauges at a moment, over all instances.

    Attributes:
        running: running sequences, summed over instances.
        waiting: waiting sequences, summed over instances.
        kv_usage: KV usage fraction in [0, 1], averaged over instances.
    """

    running: int
    waiting: int
    kv_usage: float


class Recorder:
    """Collects everything a replay reports.

    Args:
        requests: the trace's requests (row order of the outputs).
        keep_steps: keep the per-step log.
        tick_ns: time-series period, ns (> 0).
        energy: fed every step (:class:`llmsim.power.accumulator.EnergyAccumulator`);
            None: energy unavailable (``energy_j`` columns NaN).

    Raises:
        ConfigError: the requests' rows and output-token times would not fit in the host's
            available memory (:mod:`llmsim.memory.host`; names the largest request).
    """

    def __init__(self, requests: Sequence[Request], *, keep_steps: bool = False,
                 tick_ns: int = NS_PER_S, energy: EnergyAccumulator | None = None) -> None:
        n = len(requests)
        _check_memory(requests)
        self.requests = requests
        self.keep_steps = keep_steps
        self.tick_ns = tick_ns
        self.energy = energy
        self.release_ns = [-1] * n
        self.first_scheduled_ns = [-1] * n
        self.first_token_ns = [-1] * n
        self.finish_ns = [-1] * n
        self.prefix_hit_tokens = [0] * n
        self.num_preemptions = [0] * n
        self.instance_of = [-1] * n
        # token times, flat: per step with tokens, its end and the trace indices it served
        # (8 bytes a token, nothing per request; regrouped per request by tables())
        self._emit_end_ns: list[int] = []
        self._emit_index: list[tuple[int, ...]] = []
        self.steps: list[tuple[float, ...]] = []  # ints and floats, STEP_COLUMNS
        self.ticks: list[tuple[float, ...]] = []  # TIMESERIES_COLUMNS
        self.num_finished = 0
        self.peak_kv_usage = 0.0  # highest KV usage after any step, fraction
        self.next_tick_ns = tick_ns  # end of the open tick; the loop calls advance() past it
        self._prompt_acc = 0
        self._gen_acc = 0
        self._last_gauges: tuple[int, int, float] | None = None  # of the last closed tick
        self._quiet_run = 0  # consecutive quiet ticks up to the last closed one
        self._omitted = False  # a tick of the current quiet run was not written

    # ------------------------------------------------------------ hot path
    def advance(self, now_ns: int, gauges: Gauges) -> None:
        """Close every tick that ends before ``now_ns`` (the loop calls it before handling
        an event past :attr:`next_tick_ns`); ``gauges`` is the state at that moment, which
        holds at the end of each of those ticks (nothing happens between two events)."""
        if now_ns > self.next_tick_ns:
            self._close_ticks((now_ns - self.next_tick_ns - 1) // self.tick_ns + 1, gauges)

    def _close_ticks(self, n: int, gauges: Gauges) -> None:
        """Close the open tick and the ``n - 1`` after it, all ending with ``gauges``.

        The ticks after the first count no tokens and repeat its gauges, so they are all
        quiet: they are written (or skipped) in bulk, O(QUIET_TICKS_WRITTEN).
        """
        g = (gauges.running, gauges.waiting, round(gauges.kv_usage * 100.0, 2))
        tick_ns = self.tick_ns
        per_s = NS_PER_S / tick_ns
        ticks = self.ticks
        t_ns = self.next_tick_ns
        if self._prompt_acc or self._gen_acc or g != self._last_gauges:
            self._end_quiet_run(t_ns - tick_ns)
            ticks.append((t_ns / NS_PER_S, self._prompt_acc * per_s, self._gen_acc * per_s,
                          *g))
            self._prompt_acc = 0
            self._gen_acc = 0
            first_quiet = 0
        else:
            first_quiet = 1  # this tick is quiet too
        self._last_gauges = g
        zero = 0 * per_s
        run = self._quiet_run
        write = max(0, min(n - 1 + first_quiet, QUIET_TICKS_WRITTEN - run))
        for k in range(1 - first_quiet, write + 1 - first_quiet):
            ticks.append(((t_ns + k * tick_ns) / NS_PER_S, zero, zero, *g))
        quiet = n - 1 + first_quiet
        self._quiet_run = run + quiet
        if quiet > write:
            self._omitted = True
        self.next_tick_ns = t_ns + n * tick_ns

    def _end_quiet_run(self, last_t_ns: int) -> None:
        """Before a tick that is not quiet (or at the end): write the last tick of the
        quiet run (ending at ``last_t_ns``) when it was omitted, so each gap in ``t`` lies
        between two equal rows."""
        if self._omitted and self._last_gauges is not None:
            zero = 0 * (NS_PER_S / self.tick_ns)
            self.ticks.append((last_t_ns / NS_PER_S, zero, zero, *self._last_gauges))
        self._omitted = False
        self._quiet_run = 0

    def on_release(self, index: int, instance_id: int, now_ns: int) -> None:
        """A request reached an instance's waiting queue."""
        self.release_ns[index] = now_ns
        self.instance_of[index] = instance_id

    def on_step(self, rec: StepRecord) -> None:
        """A step finished: record its tokens, finished requests and log line."""
        end = rec.end_ns
        out = rec.output
        emitted = out.emitted
        if emitted:
            self._emit_end_ns.append(end)
            self._emit_index.append(tuple([seq.index for seq in emitted]))
            self._gen_acc += len(emitted)
        for seq in out.first_tokens:
            self.first_token_ns[seq.index] = end
            self._prompt_acc += seq.num_prompt
        for seq in out.finished:
            i = seq.index
            self.finish_ns[i] = end
            self.first_scheduled_ns[i] = seq.first_scheduled_ns
            self.prefix_hit_tokens[i] = max(0, seq.prefix_hit_tokens)
            self.num_preemptions[i] = seq.num_preemptions
        self.num_finished += len(out.finished)
        if rec.kv_usage > self.peak_kv_usage:
            self.peak_kv_usage = rec.kv_usage
        energy_j = self.energy.on_step(rec) if self.energy is not None else math.nan
        if self.keep_steps:
            plan = rec.plan
            self.steps.append((
                rec.instance_id, rec.step, plan.scheduled_ns, rec.start_ns, end, rec.gpu_ns,
                rec.cpu_ns, len(plan.chunks), plan.num_prefill_tokens, plan.num_decodes,
                len(plan.preempted), len(plan.admitted), len(out.emitted), len(out.finished),
                rec.num_running, rec.num_waiting, rec.kv_usage, energy_j))

    @property
    def accepts_decode_runs(self) -> bool:
        """True when :meth:`on_decode_run` can stand for the steps of a decode run (the
        energy accumulator, when there is one, takes runs too)."""
        return self.energy is None or hasattr(self.energy, "on_decode_run")

    def on_decode_run(self, run: DecodeRun) -> None:
        """Steps of one instance that a decode fast-forward simulated at once
        (:class:`llmsim.instance.fastforward.DecodeRun`): exactly what :meth:`on_step`
        would record for each, in bulk (every step delivers one token to each sequence of
        the run; nothing finishes, no first token)."""
        k = run.num_steps
        if not k:
            return
        idx = run.seq_indices
        self._emit_end_ns.extend(run.end_ns.tolist())
        self._emit_index.extend([idx] * k)
        self._gen_acc += len(idx) * k
        peak = float(run.kv_usage.max())
        if peak > self.peak_kv_usage:
            self.peak_kv_usage = peak
        energy: list[float] | None = None
        if self.energy is not None:
            got = self.energy.on_decode_run(run.instance_id, idx, run.start_ns, run.end_ns,
                                            run.gpu_ns, run.kv_usage)
            energy = None if got is None else [float(e) for e in got]
        if self.keep_steps:
            n = len(idx)
            extra = len(STEP_COLUMNS) - 17  # 17 columns before the energy one
            cols = zip(range(run.first_step, run.first_step + k), run.scheduled_ns.tolist(),
                       run.start_ns.tolist(), run.end_ns.tolist(), run.gpu_ns.tolist(),
                       run.kv_usage.tolist(), energy or [math.nan] * k, strict=True)
            self.steps.extend(
                (run.instance_id, step, sch, start, end, gpu, run.cpu_ns, n, 0, n, 0, 0, n,
                 0, run.num_running, run.num_waiting, kv, *(e,) * extra)
                for step, sch, start, end, gpu, kv, e in cols)

    def finish(self, end_ns: int, gauges: Gauges) -> None:
        """Close the ticks up to and including the one holding ``end_ns`` (``gauges``: the
        final state), and write the last tick of a quiet run in progress."""
        self.advance(end_ns + self.tick_ns, gauges)
        self._end_quiet_run(self.next_tick_ns - self.tick_ns)
        if self.energy is not None:
            self.energy.finish(end_ns)

    # ------------------------------------------------------------ end of run
    def _token_times(self) -> tuple[np.ndarray, np.ndarray]:
        """``(flat, lens)``: every token time (ns, int64) grouped by request in trace order,
        each request's in delivery order, and the number per request."""
        per_step = np.fromiter(map(len, self._emit_index), dtype=np.int64,
                               count=len(self._emit_index))
        index = np.fromiter(chain.from_iterable(self._emit_index), dtype=np.int64,
                            count=int(per_step.sum()))
        times = np.repeat(np.asarray(self._emit_end_ns, dtype=np.int64), per_step)
        order = np.argsort(index, kind="stable")  # steps arrive in end order: stable keeps it
        return times[order], np.bincount(index, minlength=len(self.requests))

    @property
    def token_ns(self) -> list[list[int]]:
        """Per request (trace order), its token delivery times, ns (built on each access)."""
        flat, lens = self._token_times()
        flat_l = flat.tolist()
        starts = np.concatenate(([0], np.cumsum(lens))).tolist()
        return [flat_l[a:b] for a, b in pairwise(starts)]

    def tables(self) -> tuple[pd.DataFrame, list[np.ndarray], pd.DataFrame, pd.DataFrame | None]:
        """Build ``(requests, itls_s, timeseries, steps)``; see :class:`ReplayResult`."""
        reqs = self.requests

        def secs(values: list[int]) -> np.ndarray:
            a = np.asarray(values, dtype=np.float64)
            return np.where(a < 0, np.nan, a / NS_PER_S)

        arrival = secs(self.release_ns)
        first_token = secs(self.first_token_ns)
        finish = secs(self.finish_ns)
        out_tokens = np.asarray([r.output_tokens for r in reqs], dtype=np.int64)
        with np.errstate(invalid="ignore", divide="ignore"):
            tpot = np.where(out_tokens > 1, (finish - first_token) / (out_tokens - 1), np.nan)
        requests = pd.DataFrame({
            "request_id": [r.request_id for r in reqs],
            "arrival_s": arrival,
            "first_scheduled_s": secs(self.first_scheduled_ns),
            "first_token_s": first_token,
            "finish_s": finish,
            "input_tokens": np.asarray([r.input_tokens for r in reqs], dtype=np.int64),
            "output_tokens": out_tokens,
            "prefix_hit_tokens": np.asarray(self.prefix_hit_tokens, dtype=np.int64),
            "num_preemptions": np.asarray(self.num_preemptions, dtype=np.int64),
            "ttft_s": first_token - arrival,
            "tpot_s": tpot,
            "e2e_s": finish - arrival,
            "instance_id": np.asarray(self.instance_of, dtype=np.int64),
            "energy_j": (self.energy.request_energy_j() if self.energy is not None
                         and self.energy.horizon_ns is not None else np.full(len(reqs), np.nan)),
        }, columns=REQUEST_COLUMNS)
        itls = _gaps_s(*self._token_times())
        timeseries = pd.DataFrame(self.ticks, columns=TIMESERIES_COLUMNS)
        steps = None
        if self.keep_steps:
            steps = _frame(self.steps, STEP_COLUMNS)
            if len(steps) > 1:
                # by end, then instance and step: the order of the loop's step-end events,
                # with equal ends of different instances by instance (a fast-forward hands
                # over its steps ahead of time, so arrival order is not that order)
                end = steps["end_s"].to_numpy()
                if (np.diff(end) < 0).any() or steps["instance_id"].nunique() > 1:
                    order = np.lexsort((steps["step"].to_numpy(),
                                        steps["instance_id"].to_numpy(), end))
                    steps = steps.iloc[order].reset_index(drop=True)
            for col in ("scheduled_s", "start_s", "end_s"):
                steps[col] = steps[col] / NS_PER_S
            for col in ("gpu_ms", "cpu_ms"):
                steps[col] = steps[col] / 1e6
            steps["kv_cache_pct"] = (steps["kv_cache_pct"] * 100.0).round(2)
        return requests, itls, timeseries, steps


def _check_memory(requests: Sequence[Request]) -> None:
    """Refuse requests whose metrics (a row each, a time per output token) cannot fit.

    Raises:
        ConfigError: naming the total output tokens and the largest request.
    """
    out_tokens = sum(map(_output_tokens, requests))
    needed = len(requests) * BYTES_PER_REQUEST + out_tokens * BYTES_PER_OUTPUT_TOKEN
    try:
        check_host_memory(needed, field="output_tokens", what=(
            f"recording {len(requests)} requests with {out_tokens} output tokens in all"))
    except ConfigError as exc:
        big = max(range(len(requests)), key=lambda i: requests[i].output_tokens)
        r = requests[big]
        raise ConfigError(f"{exc.reason} (the largest request, {r.request_id!r} at position "
                          f"{big + 1}, has {r.output_tokens} output tokens)", line=big + 1,
                          field="output_tokens") from None


def _output_tokens(r: Request) -> int:
    return r.output_tokens


def _frame(rows: list[tuple[float, ...]], columns: list[str]) -> pd.DataFrame:
    """``pd.DataFrame(rows, columns=columns)`` for rows of ints and floats, built column by
    column (the row-wise constructor costs ~1 s per 10^5 rows)."""
    if not rows:
        return pd.DataFrame(rows, columns=columns)
    return pd.DataFrame({name: np.asarray(col) for name, col in zip(columns, zip(*rows, strict=True),
                                                                      strict=True)})


def _gaps_s(flat: np.ndarray, lens: np.ndarray) -> list[np.ndarray]:
    """Per request, the gaps between its consecutive token times in s (float64).

    Args:
        flat: token times, ns (int64), grouped by request.
        lens: tokens per request, shape (num_requests,).

    Returns:
        One array per request, each a slice of one array of gaps.
    """
    gaps = np.diff(flat).astype(np.float64) / NS_PER_S
    starts = np.concatenate(([0], np.cumsum(lens)[:-1])).tolist() if len(lens) else []
    return [gaps[s:s + n - 1] if n > 1 else gaps[:0] for s, n in zip(starts, lens.tolist(), strict=True)]
