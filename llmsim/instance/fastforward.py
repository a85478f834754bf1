"""Decode fast-forward: advance a decode-only instance through many engine steps at once.

Between events that change its batch, a decode-only instance repeats the same batch with
every KV length one longer. :func:`start_decode_run` finds how long that lasts, prices every
step of the stretch (:meth:`llmsim.costmodel.profile_model.ProfileCostModel.decode_run_ns`:
each step priced exactly, vectorized over the KV growth), applies the stretch's scheduler and
KV-cache effects in the order step-by-step simulation would, and hands the recorder the
steps' records. Outputs are identical to step-by-step simulation (``--exact-steps``), which
the tests check byte for byte.

The stretch, in the instance's terms (async scheduling, vLLM 0.19's default; synchronous
scheduling is the same with each ``schedule()`` after the update of the step before):
the step ``L_1`` being launched now is a decode of every running sequence; ``S`` more steps
``L_2 .. L_{S+1}`` are launched, each planned by a *steady* ``schedule()`` (every running
sequence gets one token through the fast path or the block-boundary path, nothing else
runs), and the outputs of ``L_1 .. L_S`` are delivered; the end of ``L_{S+1}`` is a real event
of the loop. ``S`` is the largest value such that

* no sequence reaches its last output token inside the stretch (``S <= num_prompt +
  max_output - 1 - num_computed`` for each: the batch would change), so nothing finishes
  before ``L_{S+1}`` ends;
* every block a steady ``schedule()`` allocates is free (allocation cannot fail, so nothing
  is preempted); blocks are taken and cached in the order step-by-step would take them
  (step, then running order), through the KV manager's own ``append_slot``;
* every intermediate step end (``end(L_1) .. end(L_S)``, where step-by-step simulation
  would deliver outputs and schedule) is at or before ``until_ns``: the loop passes the
  time before the next arrival, the end of the open time-series tick, the next event
  of any other kind and, with session turns, the earliest step end of another instance
  plus the trace's shortest think time (a turn released later arrives no earlier), so no
  arrival, gauge sample or hand-off can see the instance between two of its skipped
  events.

Not fast-forwarded (step by step, each refusal counted in :class:`FastForwardStats` by
reason and reported in ``summary.json``): a phase-2 admission that could run (waiting
requests and free sequence slots and budget: an admission attempt reads the prefix cache
and the free pool, which the stretch changes), a sequence about to deliver its first
token, a full invariant check per step, a cost model without a vectorized decode price, a
CUDA-graph padding not memoized per token count, P/D KV connectors, and (in the loop)
step hooks such as hand-off policies and MoE DP lock-step groups.
"""

from __future__ import annotations

import heapq
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import numpy as np

from llmsim.costmodel.base import StepBatch, StepCost
from llmsim.errors import InvariantError
from llmsim.scheduler.plan import BatchPlan

if TYPE_CHECKING:
    from llmsim.instance.instance import Instance, StepRecord

MAX_RUN_STEPS = 4096
"""Most steps one fast-forward covers (bounds its arrays: ~8 numbers a step). A longer
stretch continues in the next call, at its last step's end."""


@dataclass(frozen=True, slots=True, kw_only=True)
class DecodeRun:
    """Steps of one instance that a fast-forward skipped, as the recorder sees them.

    Every step decodes one token for each sequence of ``seq_indices`` (no prefill chunk,
    no preemption, no admission, nothing finishes), and delivers those tokens at its end.

    Attributes:
        instance_id: the instance.
        first_step: the instance's step index of the first step (0-based).
        seq_indices: trace indices of the sequences, in running (chunk) order.
        scheduled_ns: per step, when ``schedule()`` ran, ns (int64, shape ``(k,)``).
        start_ns: per step, GPU start, ns.
        end_ns: per step, GPU end (tokens delivered), ns.
        gpu_ns: per step, GPU time (kernel time + CUDA-graph padding), ns.
        cpu_ns: modelled CPU time, ns (the same every step).
        kv_usage: per step, KV usage fraction after its outputs (float64).
        num_running: running sequences after each step (constant).
        num_waiting: waiting sequences after each step (constant).
    """

    instance_id: int
    first_step: int
    seq_indices: tuple[int, ...]
    scheduled_ns: np.ndarray
    start_ns: np.ndarray
    end_ns: np.ndarray
    gpu_ns: np.ndarray
    cpu_ns: int
    kv_usage: np.ndarray
    num_running: int
    num_waiting: int

    @property
    def num_steps(self) -> int:
        """Steps in the run."""
        return len(self.end_ns)


@dataclass(slots=True)
class FastForwardStats:
    """Counters of one instance's fast-forwards.

    Attributes:
        runs: fast-forwards made.
        steps: steps they covered without step-by-step simulation.
        fallbacks: reason -> decode steps that a feature kept step by step.
    """

    runs: int = 0
    steps: int = 0
    fallbacks: Counter[str] = field(default_factory=Counter)


class StepSink(Protocol):
    """Where a fast-forward delivers its records (the metrics recorder)."""

    def on_step(self, rec: StepRecord) -> None: ...

    def on_decode_run(self, run: DecodeRun) -> None: ...


def _refusal(inst: Instance, plan: BatchPlan) -> str | None:
    """Why the stretch starting with ``plan`` cannot be fast-forwarded ("" when it is not
    a decode stretch at all, None when it can)."""
    from llmsim.instance.instance import CheckLevel

    sched = inst.scheduler
    running = sched.running
    n = len(running)
    chunks = plan.chunks
    if plan.num_prefill_tokens or not n or len(chunks) != n:
        return ""
    for (seq, num_new, _c, emits, epoch), run_seq in zip(chunks, running, strict=True):
        if seq is not run_seq or num_new != 1 or not emits or epoch != seq.epoch:
            return ""
    cfg = sched.config
    if n > cfg.max_num_batched_tokens:
        return ""
    if sched.waiting and n < cfg.max_num_seqs and n < cfg.max_num_batched_tokens:
        return "admission possible"
    if inst.check is CheckLevel.FULL:
        return "full invariant checks"
    if getattr(sched, "connector", None) is not None:
        return "kv connector"
    if (getattr(sched, "loading", None) or getattr(sched, "offload", None) is not None
            or getattr(plan, "offload", None) is not None):
        return "kv offload"
    for seq in running:
        c = seq.num_computed
        if seq.num_output < 1:
            return "first token in flight"
        if (seq.num_placeholders != 1 or c != seq.num_prompt + seq.num_output
                or seq.fast_limit < c):
            return ""
    return None


def start_decode_run(inst: Instance, plan: BatchPlan, *, cpu_ns: int, start_ns: int,
                     gpu_ns: int, cost: StepCost, now_ns: int, until_ns: int,
                     sink: StepSink) -> int | None:
    """Launch ``plan`` (priced: ``gpu_ns``, ``cost``; prepared by
    :meth:`Instance.prepare_step` at ``now_ns``) and fast-forward the stretch it starts.

    Returns:
        The end time of the stretch's last step (a real event for the loop), or ``None``
        when nothing was fast-forwarded; then no state changed and the caller launches
        ``plan`` itself.

    Raises:
        InvariantError: the replayed stretch disagrees with the scheduler's rules (a bug).
    """
    stats = inst.ff_stats
    why = _refusal(inst, plan)
    if why is not None:
        if why:
            stats.fallbacks[why] += 1
        return None
    sched, st = inst.scheduler, inst.step_time
    running = sched.running
    c0 = [seq.num_computed for seq in running]
    s_max = min(min(seq.num_prompt + seq.max_output - 1 - c for seq, c in
                    zip(running, c0, strict=True)), MAX_RUN_STEPS)
    end1 = start_ns + gpu_ns
    if s_max < 1 or end1 > until_ns:
        return None
    # steps that can end by until_ns if none is shorter than L_1 (decode steps grow with
    # their KV): price only those; a longer stretch continues at the next call
    spacing = max(gpu_ns, cpu_ns) if inst.async_scheduling else gpu_ns + cpu_ns
    if spacing > 0:
        s_max = min(s_max, (until_ns - end1) // spacing + 2)
    # ---- price L_2 .. L_{s_max+1} (KV lengths c0 + 1 ...) and time the stretch
    batch2 = StepBatch(decode_context_lens=tuple(c + 1 for c in c0), parallel=plan.batch.parallel)
    priced = st.decode_run_gpu_ns(batch2, s_max)
    if priced is None:
        stats.fallbacks["cost model"] += 1
        return None
    gpu = np.concatenate(([gpu_ns], priced))  # L_1 .. L_{s_max+1}
    if inst.async_scheduling:  # start_j = max(end_{j-1}, start_{j-1} + cpu)
        starts = start_ns + np.concatenate(([0], np.cumsum(np.maximum(gpu[:-1], cpu_ns))))
        sched_ns = np.concatenate(([plan.scheduled_ns], starts[:-1]))
    else:  # scheduled at the previous end, started after the CPU work
        starts = start_ns + np.concatenate(([0], np.cumsum(gpu[:-1] + cpu_ns)))
        sched_ns = np.concatenate(([plan.scheduled_ns], starts[:-1] + gpu[:-1]))
    ends = starts + gpu
    # intermediate ends L_1 .. L_S must be <= until_ns
    s_time = int(np.searchsorted(ends[:s_max], until_ns, side="right"))
    if s_time < 1:
        return None
    # ---- replay the steady schedules' block work, in step-by-step order
    s_done, free_after = _replay_blocks(inst, c0, s_time)
    if s_done < 1:
        return None
    return _commit(inst, plan, cost=cost, cpu_ns=cpu_ns, c0=c0, s=s_done, gpu=gpu,
                   starts=starts, ends=ends, sched_ns=sched_ns, free_after=free_after,
                   sink=sink)


def _replay_blocks(inst: Instance, c0: list[int], s_max: int) -> tuple[int, list[int]]:
    """Apply the block work of steady schedules ``1 .. s`` (``s <= s_max``, as many as the
    free pool allows) exactly as step-by-step scheduling would: at schedule ``s`` a running
    sequence whose ``num_computed`` (``c0 + s - 1`` before it) reaches its ``fast_limit``
    takes the block-boundary path (``append_slot``: a new block, or caching the block it
    fills; then a new ``fast_limit``), in running order.

    Returns:
        ``(s, free)``: the steady schedules applied and the free blocks after each of
        schedules ``0 .. s`` (``free[0]``: now).
    """
    sched = inst.scheduler
    kv, running = sched.kv, sched.running
    pool = kv.pool
    bs = sched.config.block_size
    events = [(seq.fast_limit - c + 1, pos) for pos, (seq, c) in
              enumerate(zip(running, c0, strict=True)) if seq.fast_limit - c + 1 <= s_max]
    heapq.heapify(events)
    free = [pool.num_free_blocks]
    done = 0
    set_limit = sched._set_fast_limit
    while events and events[0][0] <= s_max:
        s = events[0][0]
        group = []
        while events and events[0][0] == s:
            group.append(heapq.heappop(events)[1])
        need = sum(1 for pos in group if c0[pos] + s > len(running[pos].blocks) * bs)
        if need > pool.num_free_blocks:
            s_max = s - 1  # step-by-step scheduling would preempt at schedule s
            break
        free += [free[-1]] * (s - 1 - done)
        for pos in group:
            seq = running[pos]
            total = c0[pos] + s
            if not kv.append_slot(seq, total):
                raise InvariantError("fast-forward: a block counted free was not",
                                     request_id=seq.request_id)
            set_limit(seq)
            nxt = seq.fast_limit - c0[pos] + 1
            if nxt <= s:
                raise InvariantError(f"fast-forward: fast_limit {seq.fast_limit} behind "
                                     f"{total} computed tokens", request_id=seq.request_id)
            if nxt <= s_max:
                heapq.heappush(events, (nxt, pos))
        free.append(pool.num_free_blocks)
        done = s
    free += [free[-1]] * (s_max - done)
    return s_max, free


def _commit(inst: Instance, plan: BatchPlan, *, cost: StepCost, cpu_ns: int, c0: list[int],
            s: int, gpu: np.ndarray, starts: np.ndarray, ends: np.ndarray,
            sched_ns: np.ndarray, free_after: list[int], sink: StepSink) -> int:
    """Apply a stretch of ``s`` steady schedules (blocks already replayed): deliver
    ``L_1 .. L_s``, launch ``L_{s+1}`` and, with async scheduling, plan the step after it."""
    from llmsim.instance.instance import CheckLevel, StepRecord

    sched, st = inst.scheduler, inst.step_time
    running = sched.running
    n = len(running)
    pool = sched.kv.pool
    # outputs of L_1 (a real record), then of L_2 .. L_s (one run)
    out1 = sched.update(plan)
    if out1.finished or out1.first_tokens or len(out1.emitted) != n:
        raise InvariantError("fast-forward: the first step of a stretch changed its batch")
    usable = pool.num_gpu_blocks - 1
    # a record's KV usage: after the schedules that ran before its end (async: up to its
    # own index; synchronous: the one after it runs later, at its end)
    lag = 0 if inst.async_scheduling else 1
    usage = 1.0 - np.asarray(free_after[1 - lag:s + 1 - lag], dtype=np.int64) / usable
    step0 = inst.num_steps
    num_waiting = len(sched.waiting)
    rec1 = StepRecord(instance_id=inst.instance_id, step=step0, scheduled_ns=plan.scheduled_ns,
                      start_ns=int(starts[0]), end_ns=int(ends[0]), gpu_ns=int(gpu[0]),
                      cpu_ns=cpu_ns, plan=plan, output=out1, cost=cost, num_running=n,
                      num_waiting=num_waiting, kv_usage=float(usage[0]))
    # net of the s steady schedules (+s placeholders) and the outputs of L_2 .. L_s
    for seq, c in zip(running, c0, strict=True):
        seq.num_computed = c + s
        seq.num_output += s - 1
        seq.num_placeholders += 1
    sched.num_steps += s
    inst.num_steps += s
    inst.ff_stats.runs += 1
    inst.ff_stats.steps += s - 1
    cost_last = st.decode_run_cost(s - 1)  # L_{s+1}: index s - 1 of the priced L_2 ..
    st.commit_decode_run(s)
    if inst.check is CheckLevel.COUNTERS:
        sched.check_counters(step0 + s - 1)
    sink.on_step(rec1)
    if s > 1:
        sink.on_decode_run(DecodeRun(
            instance_id=inst.instance_id, first_step=step0 + 1,
            seq_indices=tuple(seq.index for seq in running), scheduled_ns=sched_ns[1:s],
            start_ns=starts[1:s], end_ns=ends[1:s], gpu_ns=gpu[1:s], cpu_ns=cpu_ns,
            kv_usage=usage[1:s], num_running=n, num_waiting=num_waiting))
    # launch L_{s+1} (its record comes from finish_step at its end)
    last = BatchPlan(chunks=tuple((seq, 1, c + s - 1, True, seq.epoch)
                                  for seq, c in zip(running, c0, strict=True)),
                     batch=StepBatch(decode_context_lens=tuple(c + s for c in c0),
                                     parallel=plan.batch.parallel),
                     num_prefill_tokens=0, num_decodes=n, preempted=(), admitted=(),
                     scheduled_ns=int(sched_ns[s]))
    return inst.launch_step(last, cpu_ns=cpu_ns, start_ns=int(starts[s]), gpu_ns=int(gpu[s]),
                            cost=cost_last)
