"""The scheduler with KV offloading to lower tiers (vLLM 0.19 with a KV connector).

:class:`OffloadScheduler` is :class:`~llmsim.scheduler.scheduler.Scheduler` plus the
scheduler side of vLLM's offloading connectors (:mod:`llmsim.kvcache.offload` states the
backends' behaviour and its sources). Used only when the experiment has ``kv_offload``; the
base scheduler, and so every replay without offloading, is untouched.

Admission of a waiting sequence without computed tokens (phase 2, FCFS as in the base):

* GPU prefix hit first, then the lower tiers after it (``OffloadManager.lookup``).
* **native** (asynchronous load): the sequence gets GPU blocks for its GPU hit and the
  loaded tokens (``delay_cache_blocks``: not findable until loaded), leaves the waiting
  queue for :attr:`OffloadScheduler.loading` (vLLM's WAITING_FOR_REMOTE_KVS: not running,
  not counted in ``max_num_seqs``, no budget used) and admission continues with the next
  sequence (vLLM ``continue``s past it). The copy starts with the step this ``schedule()``
  plans (at once when it plans none). When a step end (or an idle poll) after the copy's
  completion has reported it (:attr:`reported_ns`), the next ``schedule()`` registers the
  loaded blocks in the prefix cache and puts the sequence back at the front of the waiting
  queue with its computed tokens; it is then admitted like a sequence with computed KV.
  A sequence whose hit includes a block being loaded for another waits in the queue and is
  retried at the next ``schedule()`` (vLLM's ``OffloadingConnectorScheduler`` returns None
  from ``get_num_new_matched_tokens`` while a hit block is in ``_blocks_being_loaded``, and
  the scheduler skips the request); admission continues past it. Once promoted, the loaded
  blocks are a GPU prefix hit for it.
* **LMCache** (synchronous load): admitted in this step with the loaded tokens counted as
  computed; the step's ``OffloadStep.sync_load_ns`` sums the blocking copies.

Every planned step carries an :class:`~llmsim.kvcache.offload.OffloadStep`: the loads to
start, the blocking load time and the blocks to store (``OffloadManager.store_keys``).

Loaded sequences stay ahead of preempted ones: vLLM keeps a WAITING_FOR_REMOTE_KVS request
in ``skipped_waiting``, which FCFS admission serves before ``waiting``, where a preempted
request is prepended (``Scheduler._select_waiting_queue_for_scheduling``,
``_preempt_request``, vLLM 0.19 ``v1/core/sched/scheduler.py``); a preemption victim is
therefore queued behind the loaded sequences at the waiting front. Otherwise the victim, first
in line, could wait for the GPU blocks a loaded sequence behind it holds, forever.

Deliberate differences: vLLM promotes a loaded request when its waiting loop reaches it;
here promotion happens before phase 2 of the first ``schedule()`` after the report. (A
sequence in :attr:`loading` counts as waiting in the instance's gauges, as in vLLM.) When a
``schedule()`` preempts and then schedules nothing (the blocks it needs are held by loading
or loaded sequences), vLLM runs an empty engine step and schedules again, now admitting
waiting requests; here ``schedule()`` retries at once, at the same time (the empty step's CPU
time is not charged), and the retried step's plan lists the preemptions and loads of both
calls. (:meth:`llmsim.instance.Instance._schedule` repeats such a call for every scheduler;
for this one the repeat inside ``schedule()`` has already run, so one plan carries both.)
"""

from __future__ import annotations

import itertools
from typing import Any

from llmsim.errors import InvariantError
from llmsim.kvcache.manager import KVCacheManager
from llmsim.kvcache.offload import OffloadManager, OffloadStep, TierLoad
from llmsim.kvcache.tiers import Key
from llmsim.scheduler.config import SchedulerConfig
from llmsim.scheduler.plan import BatchPlan
from llmsim.scheduler.scheduler import Scheduler, _StepBuilder
from llmsim.scheduler.state import SeqState, SeqStatus


class OffloadScheduler(Scheduler):
    """The scheduler with a lower-tier KV offload (module doc).

    Args:
        config, kv: as for :class:`Scheduler` (other keyword arguments are passed on).
        offload: the instance's offload manager.

    Attributes:
        offload: the offload manager.
        loading: sequences whose asynchronous load runs or is not reported yet.
        reported_ns: loads completed by this time are reported (set by the instance at
            every step end and idle poll).
    """

    def __init__(self, config: SchedulerConfig, kv: KVCacheManager, *,
                 offload: OffloadManager, **kwargs: Any) -> None:
        super().__init__(config, kv, **kwargs)
        if not config.enable_prefix_caching:
            raise InvariantError("KV offloading needs prefix caching (block hashes)")
        self.offload = offload
        self.loading: list[SeqState] = []
        self.reported_ns = -1
        self._loads: list[tuple[SeqState, TierLoad]] = []
        self._sync_load_ns = 0
        self._victims: list[SeqState] = []
        self._being_loaded: dict[int, tuple[Key, ...]] = {}  # seq index -> keys it loads

    def has_unfinished(self) -> bool:
        """True while any sequence waits, loads or runs."""
        return bool(self.waiting) or bool(self.running) or bool(self.loading)

    def wake_ns(self) -> int | None:
        """Earliest completion of a load not reported yet (an idle instance polls then)."""
        times = [s.load_done_ns for s in self.loading if s.load_done_ns > self.reported_ns]
        return min(times) if times else None

    # -------------------------------------------------------------- schedule
    def schedule(self, now_ns: int) -> BatchPlan | None:
        """:meth:`Scheduler.schedule` with promotion of reported loads first and the
        step's offload work attached (module doc)."""
        self.offload.advance(now_ns)
        if self.loading:
            self._promote()
        self._loads = []
        self._sync_load_ns = 0
        self._victims = []
        plan = super().schedule(now_ns)
        while plan is None and self._victims and self.waiting:
            # a preemption that left nothing to run skipped phase 2; vLLM's engine runs an
            # empty step and its next schedule() admits from the waiting queues (module doc)
            victims = len(self._victims)
            plan = super().schedule(now_ns)
            if len(self._victims) == victims:
                break
        if plan is not None and len(self._victims) > len(plan.preempted):
            plan.preempted = tuple(self._victims)
        loads = tuple(self._loads)
        if plan is None:
            for seq, load in loads:  # a step without tokens still starts the copies
                seq.load_done_ns = self.offload.issue_load(load, now_ns)
            return None
        plan.offload = OffloadStep(loads=loads, sync_load_ns=self._sync_load_ns,
                                   store_keys=self.offload.store_keys(plan.chunks))
        return plan

    def _promote(self) -> None:
        """Loaded sequences whose completion is reported go back to the waiting front."""
        done = [s for s in self.loading
                if 0 <= s.load_done_ns <= self.reported_ns]
        if not done:
            return
        self.loading = [s for s in self.loading if s not in done]
        kv = self.kv
        for seq in reversed(done):
            self._being_loaded.pop(seq.index, None)
            kv.cache_blocks(seq, seq.num_computed)
            seq.load_done_ns = -1
            self.waiting.appendleft(seq)

    def _schedule_waiting(self, budget: int, step: _StepBuilder, admitted: list[SeqState],
                          now_ns: int) -> None:
        """Phase 2 with lower-tier lookups (module doc); otherwise as the base's."""
        cfg = self.config
        kv = self.kv
        off = self.offload
        bs = cfg.block_size
        waiting, running = self.waiting, self.running
        cap = cfg.long_prefill_token_threshold
        skipped: list[SeqState] = []
        loading_keys = (set().union(*self._being_loaded.values())
                        if self._being_loaded else None)
        while waiting and budget > 0 and len(running) < cfg.max_num_seqs:
            seq = waiting[0]
            n_tokens = seq.num_prompt + seq.num_output
            first = seq.first_scheduled_ns < 0
            load: TierLoad | None = None
            if seq.blocks:  # promoted after a load: its KV is computed up to num_computed
                hits: list[int] = []
                num_hit = 0
                base = seq.num_computed
            else:
                hits = kv.get_computed_blocks(seq)
                num_hit = len(hits) * bs
                load = off.lookup(seq, num_hit)
                base = num_hit
                if load is not None and off.is_async:
                    if loading_keys and not loading_keys.isdisjoint(load.keys):
                        skipped.append(waiting.popleft())  # retried at the next schedule()
                        continue
                    if not self._start_load(seq, hits, num_hit, load, n_tokens, first):
                        break
                    loading_keys = (loading_keys or set()) | set(load.keys)
                    continue
            ext = load.num_tokens if load is not None else 0
            num_new = n_tokens - base - ext
            if cap and num_new > cap:
                num_new = cap
            if num_new > budget:
                num_new = budget
            if cfg.reserve_full_isl and (
                    kv.blocks_needed(seq, n_tokens, hits) > kv.pool.num_free_blocks):
                break
            if not kv.allocate_slots(seq, ext + num_new, hits):
                break
            waiting.popleft()
            running.append(seq)
            seq.status = SeqStatus.RUNNING
            if not seq.num_computed:
                kv.record_lookup(n_tokens, num_hit)
                off.record(seq.index, num_hit, load, first=first)
            if load is not None:
                self._sync_load_ns += off.load_ns(load)
            if first:
                seq.first_scheduled_ns = now_ns
                seq.prefix_hit_tokens = off.request_gpu_hits.get(seq.index, num_hit)
            cached = base + ext
            seq.num_offloaded_blocks = max(seq.num_offloaded_blocks, cached // off.block_tokens)
            emits = cached + num_new == n_tokens
            step.add(seq, num_new, cached, emits)
            seq.num_computed = cached + num_new
            self._after_chunk(seq, emits)
            admitted.append(seq)
            budget -= num_new
        if skipped:
            waiting.extendleft(reversed(skipped))

    def _start_load(self, seq: SeqState, hits: list[int], num_hit: int, load: TierLoad,
                    n_tokens: int, first: bool) -> bool:
        """Reserve blocks for an asynchronous load and park ``seq`` in :attr:`loading`;
        False (nothing changed) when its blocks do not fit."""
        kv = self.kv
        if self.config.reserve_full_isl and (
                kv.blocks_needed(seq, n_tokens, hits) > kv.pool.num_free_blocks):
            return False
        if not kv.allocate_slots(seq, load.num_tokens, hits, delay_cache_blocks=True):
            return False
        self.waiting.popleft()
        kv.record_lookup(n_tokens, num_hit)
        self.offload.record(seq.index, num_hit, load, first=first)
        seq.num_computed = num_hit + load.num_tokens
        seq.num_offloaded_blocks = max(seq.num_offloaded_blocks,
                                       seq.num_computed // self.offload.block_tokens)
        seq.load_done_ns = 0  # set when the copy is issued
        self.loading.append(seq)
        self._being_loaded[seq.index] = load.keys
        self._loads.append((seq, load))
        return True

    def _preempt(self, seq: SeqState) -> None:
        """:meth:`Scheduler._preempt`, but behind the loaded sequences at the waiting front.

        A loaded sequence is vLLM's WAITING_FOR_REMOTE_KVS request promoted in
        ``skipped_waiting``, which FCFS admission serves before ``waiting``
        (``Scheduler._select_waiting_queue_for_scheduling``: ``self.skipped_waiting or
        self.waiting``), while a preempted request is prepended to ``waiting``
        (``_preempt_request``). Putting the victim in front of a loaded sequence would let
        it wait, first in line, for the GPU blocks that sequence holds: a deadlock.
        """
        super()._preempt(seq)
        self._victims.append(seq)
        waiting = self.waiting
        num_loaded = 0
        for s in itertools.islice(waiting, 1, None):
            if not s.blocks:
                break
            num_loaded += 1
        if num_loaded:
            waiting.popleft()
            waiting.insert(num_loaded, seq)

    # ------------------------------------------------------------ hand-offs
    def remove(self, seq: SeqState) -> None:
        """:meth:`Scheduler.remove`, also from :attr:`loading`."""
        if seq in self.loading:
            self.loading.remove(seq)
            seq.load_done_ns = -1
            self._being_loaded.pop(seq.index, None)
        super().remove(seq)

    # ------------------------------------------------------------ invariants
    def check_invariants(self, *, full: bool, step: int | None = None) -> None:
        """:meth:`Scheduler.check_invariants`, counting the blocks of loading sequences and
        of loaded sequences back in the waiting queue."""
        if not full:
            super().check_invariants(full=False, step=step)
            return
        holders = [s for s in self.waiting if s.blocks] + self.loading
        if not holders:
            super().check_invariants(full=True, step=step)
            return
        pool = self.kv.pool
        bs = self.config.block_size
        refs: dict[int, int] = {}
        for seq in self.running:
            self._check_seq(seq, bs, step)
        for seq in [*self.running, *holders]:
            for b in seq.blocks:
                refs[b] = refs.get(b, 0) + 1
        for seq in holders:
            if len(seq.blocks) != (seq.num_computed + bs - 1) // bs:
                raise InvariantError(f"{len(seq.blocks)} blocks for {seq.num_computed} loaded "
                                     f"tokens", step=step, request_id=seq.request_id)
        super().check_invariants(full=False, step=step)
        pool.check(refs, step=step)
