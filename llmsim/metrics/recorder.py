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
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import chain

import numpy as np
import pandas as pd

from llmsim.instance.instance import Instance, StepRecord
from llmsim.trace.record import Request

NS_PER_S = 1_000_000_000

STEP_COLUMNS = [
    "instance_id", "step", "scheduled_s", "start_s", "end_s", "gpu_ms", "cpu_ms",
    "num_seqs", "num_prefill_tokens", "num_decodes", "num_preempted", "num_admitted",
    "num_emitted", "num_finished", "running", "waiting", "kv_cache_pct",
]
TIMESERIES_COLUMNS = ["t", "prompt_throughput", "gen_throughput", "running", "waiting",
                      "kv_cache_pct"]
REQUEST_COLUMNS = [
    "request_id", "arrival_s", "first_scheduled_s", "first_token_s", "finish_s",
    "input_tokens", "output_tokens", "prefix_hit_tokens", "num_preemptions", "ttft_s",
    "tpot_s", "e2e_s", "instance_id",
]


class Recorder:
    """Collects everything a replay reports.

    Args:
        requests: the trace's requests (row order of the outputs).
        instances: the simulated instances (for the time-series gauges).
        keep_steps: keep the per-step log.
        tick_ns: time-series period, ns.
    """

    def __init__(self, requests: Sequence[Request], instances: Sequence[Instance], *,
                 keep_steps: bool = False, tick_ns: int = NS_PER_S) -> None:
        n = len(requests)
        self.requests = requests
        self.instances = instances
        self.keep_steps = keep_steps
        self.tick_ns = tick_ns
        self.release_ns = [-1] * n
        self.first_scheduled_ns = [-1] * n
        self.first_token_ns = [-1] * n
        self.finish_ns = [-1] * n
        self.prefix_hit_tokens = [0] * n
        self.num_preemptions = [0] * n
        self.instance_of = [-1] * n
        self.token_ns: list[list[int]] = [[] for _ in range(n)]
        self.steps: list[tuple] = []
        self.ticks: list[tuple] = []
        self.num_finished = 0
        self.next_tick_ns = tick_ns  # end of the open tick; the loop calls advance() past it
        self._prompt_acc = 0
        self._gen_acc = 0

    # ------------------------------------------------------------ hot path
    def advance(self, now_ns: int) -> None:
        """Close every tick that ends before ``now_ns`` (call before handling an event)."""
        while now_ns > self.next_tick_ns:
            self._close_tick()

    def _close_tick(self) -> None:
        insts = self.instances
        running = sum(len(i.scheduler.running) for i in insts)
        waiting = sum(len(i.scheduler.waiting) for i in insts)
        kv = sum(i.scheduler.kv.usage() for i in insts) / len(insts)
        per_s = NS_PER_S / self.tick_ns
        self.ticks.append((self.next_tick_ns / NS_PER_S, self._prompt_acc * per_s,
                           self._gen_acc * per_s, running, waiting, round(kv * 100.0, 2)))
        self._prompt_acc = 0
        self._gen_acc = 0
        self.next_tick_ns += self.tick_ns

    def on_release(self, index: int, instance_id: int, now_ns: int) -> None:
        """A request reached an instance's waiting queue."""
        self.release_ns[index] = now_ns
        self.instance_of[index] = instance_id

    def on_step(self, rec: StepRecord) -> None:
        """A step finished: record its tokens, finished requests and log line."""
        end = rec.end_ns
        out = rec.output
        token_ns = self.token_ns
        for seq in out.emitted:
            token_ns[seq.index].append(end)
        self._gen_acc += len(out.emitted)
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
        if self.keep_steps:
            plan = rec.plan
            self.steps.append((
                rec.instance_id, rec.step, plan.scheduled_ns, rec.start_ns, end, rec.gpu_ns,
                rec.cpu_ns, len(plan.chunks), plan.num_prefill_tokens, plan.num_decodes,
                len(plan.preempted), len(plan.admitted), len(out.emitted), len(out.finished),
                rec.num_running, rec.num_waiting, rec.kv_usage))

    def finish(self, end_ns: int) -> None:
        """Close the ticks up to and including the one holding ``end_ns``."""
        while self.next_tick_ns < end_ns + self.tick_ns:
            self._close_tick()

    # ------------------------------------------------------------ end of run
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
        }, columns=REQUEST_COLUMNS)
        itls = _gaps_s(self.token_ns)
        timeseries = pd.DataFrame(self.ticks, columns=TIMESERIES_COLUMNS)
        steps = None
        if self.keep_steps:
            steps = _frame(self.steps, STEP_COLUMNS)
            for col in ("scheduled_s", "start_s", "end_s"):
                steps[col] = steps[col] / NS_PER_S
            for col in ("gpu_ms", "cpu_ms"):
                steps[col] = steps[col] / 1e6
            steps["kv_cache_pct"] = (steps["kv_cache_pct"] * 100.0).round(2)
        return requests, itls, timeseries, steps


def _frame(rows: list[tuple], columns: list[str]) -> pd.DataFrame:
    """``pd.DataFrame(rows, columns=columns)`` for rows of ints and floats, built column by
    column (the row-wise constructor costs ~1 s per 10^5 rows)."""
    if not rows:
        return pd.DataFrame(rows, columns=columns)
    return pd.DataFrame({name: np.asarray(col) for name, col in zip(columns, zip(*rows),
                                                                      strict=True)})


def _gaps_s(token_ns: list[list[int]]) -> list[np.ndarray]:
    """Per list of token times (ns), the gaps between consecutive tokens in s (float64),
    computed on one concatenated array; each result is a slice of it."""
    lens = np.fromiter(map(len, token_ns), dtype=np.int64, count=len(token_ns))
    flat = np.fromiter(chain.from_iterable(token_ns), dtype=np.int64, count=int(lens.sum()))
    gaps = np.diff(flat).astype(np.float64) / NS_PER_S
    starts = np.concatenate(([0], np.cumsum(lens)[:-1])).tolist() if len(lens) else []
    return [gaps[s:s + n - 1] if n > 1 else gaps[:0] for s, n in zip(starts, lens.tolist())]
