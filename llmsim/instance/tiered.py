"""An instance with memory tiers: KV offload copies and weights streamed every step.

:class:`TieredInstance` is :class:`~llmsim.instance.instance.Instance` with:

* **weight offload** (``weight_stream_ns``, default 0): a constant added to every step's
  GPU time. Replays price streamed weights in the cost model instead
  (:class:`llmsim.memory.weights.StreamedWeightsCost`, so decode fast-forward applies);
  this parameter serves code that builds instances itself.
* **KV offload** (with an :class:`~llmsim.scheduler.offload.OffloadScheduler`), at the
  step's GPU start: the deferred native stores of the previous step are submitted, the
  step's native loads start (their completion times set on the sequences); LMCache's
  blocking load and store times are added to the step (load before the forward, store
  after it, ``OffloadStep``). Load completions are reported to the scheduler at every step
  end and, when the instance is idle, at the poll the loop schedules at :meth:`wake_ns`
  (vLLM runs connector-only steps while requests wait for KV).

The :class:`StepRecord`'s ``gpu_ns`` includes these times. Used only when the experiment has
``kv_offload`` (:mod:`llmsim.memory.tiers_setup`).
"""

from __future__ import annotations

from typing import Any, cast

from llmsim.instance.instance import Instance, StepRecord
from llmsim.kvcache.offload import OffloadStep
from llmsim.kvcache.tiers import Key
from llmsim.scheduler.offload import OffloadScheduler


class TieredInstance(Instance):
    """An instance with KV offload and/or weight offload (module doc).

    Args:
        weight_stream_ns: GPU time added to every step for streamed weights, ns.
        **kwargs: as for :class:`Instance`.

    Attributes:
        weight_stream_ns: as given.
        kv_transfer_ns: blocking KV copy time added to steps so far (LMCache), ns.
    """

    def __init__(self, *, weight_stream_ns: int = 0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.weight_stream_ns = weight_stream_ns
        self.kv_transfer_ns = 0
        sched = self.scheduler
        self._offload = sched if isinstance(sched, OffloadScheduler) else None
        self._deferred: tuple[Key, ...] = ()

    @property
    def num_waiting(self) -> int:
        """Waiting sequences, with those whose lower-tier load runs (vLLM counts
        WAITING_FOR_REMOTE_KVS requests as waiting)."""
        n = super().num_waiting
        return n + len(self._offload.loading) if self._offload is not None else n

    def wake_ns(self) -> int | None:
        """When an idle instance must poll for a finished load (None: no load pending)."""
        return self._offload.wake_ns() if self._offload is not None else None

    def try_start(self, now_ns: int) -> int | None:
        """:meth:`Instance.try_start` with the offload copies and streamed weights."""
        off = self._offload
        if off is not None and self._inflight is None:
            off.reported_ns = max(off.reported_ns, now_ns)  # idle poll
        prepared = self.prepare_step(now_ns)
        if prepared is None:
            if off is not None and self._deferred:
                off.offload.submit_stores(self._deferred, now_ns, blocking=False)
                self._deferred = ()
            return None
        plan, cpu_ns, start_ns = prepared
        gpu_ns, cost = self.price_step(plan, start_ns)
        gpu_ns += self.weight_stream_ns
        if off is not None and plan.offload is not None:
            gpu_ns += self._start_copies(off, cast(OffloadStep, plan.offload), start_ns, gpu_ns)
        end_ns = start_ns + gpu_ns
        self._inflight = (plan, start_ns, end_ns, gpu_ns, cpu_ns, cost)
        if self.async_scheduling:
            self._next = self._schedule(start_ns)
        return end_ns

    def _start_copies(self, off: OffloadScheduler, work: OffloadStep, start_ns: int,
                      forward_ns: int) -> int:
        """Start the step's copies; returns the blocking time they add to it, ns."""
        mgr = off.offload
        if mgr.is_async:
            if self._deferred:
                mgr.submit_stores(self._deferred, start_ns, blocking=False)
            self._deferred = work.store_keys
            for seq, load in work.loads:
                seq.load_done_ns = mgr.issue_load(load, start_ns)
            return 0
        extra = work.sync_load_ns
        if mgr.log is not None and extra:
            mgr.log.append((start_ns, f"blocking load {extra} ns"))
        extra += mgr.submit_stores(work.store_keys, start_ns + forward_ns + extra,
                                   blocking=True)
        self.kv_transfer_ns += extra
        return extra

    def finish_step(self, now_ns: int) -> StepRecord:
        """:meth:`Instance.finish_step`; then loads completed by ``now_ns`` are reported."""
        rec = super().finish_step(now_ns)
        if self._offload is not None:
            self._offload.reported_ns = max(self._offload.reported_ns, now_ns)
        return rec
