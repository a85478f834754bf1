"""One serving instance: scheduler + KV cache + step-time model, on one kind of hardware.

The instance never touches the event queue: the simulation loop (:mod:`llmsim.sim.loop`)
calls :meth:`Instance.try_start` and :meth:`Instance.finish_step` and schedules the events
their return values ask for.

Timing of a step (all ns on the simulation clock):

* synchronous engine: ``schedule()`` runs when the previous step ends (``t``); the GPU
  starts at ``t + cpu`` and ends at ``start + gpu``; outputs are delivered at the end.
* async scheduling (vLLM 0.19 default): right after a step is launched, the next one is
  scheduled from the state at that moment (vLLM's batch queue of depth 2), so arrivals and
  freed blocks reach the scheduler one step later; the GPU starts a pre-scheduled step at
  ``max(previous end, scheduled + cpu)``, hiding the CPU work behind the step in flight.

Deliberate differences from vLLM 0.19's engine core:

* With async scheduling, step ``n+1`` is planned from the state at the moment step ``n``
  is launched in the loop (``try_start``'s ``now_ns``), and stamped ``scheduled_ns =``
  step ``n``'s GPU start. The two differ only when the CPU work of step ``n`` is not
  hidden (the first step after an idle period, or CPU-bound steps): a request arriving in
  between reaches the scheduler one step later than in vLLM, whose busy loop reads new
  requests before scheduling ``n+1``.
* Outputs are delivered at the GPU end of a step; vLLM's output processing (detokenizing,
  streaming to the client) is part of the modelled CPU time, not of the token times.
* There is no API server / front-end: a request reaches the waiting queue at its arrival
  time (no tokenization or queueing delay before the engine core).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from llmsim.costmodel.base import StepCost
from llmsim.errors import CostModelUnavailable, InvariantError
from llmsim.instance.fastforward import FastForwardStats, StepSink, start_decode_run
from llmsim.instance.handoff import HandoffDescriptor
from llmsim.instance.step_time import StepTimeModel
from llmsim.scheduler.plan import BatchPlan, StepOutput
from llmsim.scheduler.scheduler import Scheduler
from llmsim.scheduler.state import SeqState
from llmsim.trace.record import Request


class CheckLevel(StrEnum):
    """How much invariant checking runs every step.

    ``counters``: O(1) block-pool conservation and queue limits (default; ~free).
    ``full``: also every sequence's token/block counters and a recount of every block's
    references, O(running + blocks) per step (tests).
    ``off``: none.
    """

    OFF = "off"
    COUNTERS = "counters"
    FULL = "full"


@dataclass(slots=True, kw_only=True)
class StepRecord:
    """A finished step, as the metrics recorder sees it.

    Not frozen (read-only by convention): one is built per engine step, ~10^5 per long
    replay, and a frozen dataclass's ``__init__`` costs ~3x a plain slotted one's.

    Attributes:
        instance_id: the instance.
        step: the instance's step index (0-based).
        scheduled_ns: when ``schedule()`` ran.
        start_ns: GPU start.
        end_ns: GPU end (tokens are delivered then).
        gpu_ns: GPU time (kernel time + CUDA-graph padding).
        cpu_ns: modelled CPU time of the step.
        plan: what was scheduled.
        output: tokens delivered, finished sequences.
        cost: the cost model's answer for the real batch.
        num_running: running sequences after the step's outputs.
        num_waiting: waiting sequences after the step's outputs.
        kv_usage: KV usage fraction after the step's outputs.
    """

    instance_id: int
    step: int
    scheduled_ns: int
    start_ns: int
    end_ns: int
    gpu_ns: int
    cpu_ns: int
    plan: BatchPlan
    output: StepOutput
    cost: StepCost
    num_running: int
    num_waiting: int
    kv_usage: float


class Instance:
    """A vLLM-like serving instance.

    Args:
        instance_id: index of the instance in the simulation.
        name: label (e.g. hardware name).
        scheduler: the scheduler (owns the KV manager).
        step_time: prices steps.
        async_scheduling: model vLLM's async scheduling (see module doc).
        check: invariant checking per step.
        kv_bytes_per_token: KV bytes of one token on one TP rank (0: unknown; it sizes
            hand-off descriptors and KV transfers).
    """

    def __init__(self, *, instance_id: int, name: str, scheduler: Scheduler,
                 step_time: StepTimeModel, async_scheduling: bool = True,
                 check: CheckLevel = CheckLevel.COUNTERS, kv_bytes_per_token: int = 0) -> None:
        self.instance_id = instance_id
        self.name = name
        self.scheduler = scheduler
        self.step_time = step_time
        self.async_scheduling = async_scheduling
        self.check = check
        self.num_steps = 0
        # decode fast-forward (llmsim.instance.fastforward): the loop calls try_start_run
        # instead of try_start when set; a subclass overriding the step methods leaves it off
        self.fast_forward = False
        self.ff_stats = FastForwardStats()
        self.kv_bytes_per_token = kv_bytes_per_token
        self.max_output_tokens = 0  # > 0: cap on every request's output here (P/D prefill)
        # P/D worker side of the KV connector (llmsim.pd): called as
        # kv_connector_step(plan, start_ns, end_ns) -> end_ns when a step is launched: it
        # starts the step's KV loads at start_ns (start_load_kv) and may extend the step
        # while layer-wise KV sends finish (wait_for_save)
        self.kv_connector_step: Callable[[BatchPlan, int, int], int] | None = None
        self._inflight: tuple[BatchPlan, int, int, int, int, StepCost] | None = None
        self._next: BatchPlan | None = None

    # ------------------------------------------------------------ routing view
    @property
    def num_running(self) -> int:
        """Running sequences."""
        return len(self.scheduler.running)

    @property
    def num_waiting(self) -> int:
        """Waiting sequences (with those whose KV is being pulled, as vLLM counts them)."""
        return len(self.scheduler.waiting) + len(self.scheduler.remote_kv_waiting)

    def kv_usage(self) -> float:
        """KV usage fraction in [0, 1]."""
        return self.scheduler.kv.usage()

    @property
    def busy(self) -> bool:
        """A step is in flight."""
        return self._inflight is not None

    # ---------------------------------------------------------------- requests
    def enqueue(self, request: Request, index: int, now_ns: int) -> SeqState:
        """A request arrives; it waits for the next ``schedule()``.

        Args:
            request: the trace record.
            index: its position in the trace (row of the outputs, prefix-hash salt).
            now_ns: arrival time at this instance, ns.

        Returns:
            The sequence's state, now at the tail of the waiting queue.
        """
        seq = SeqState(request, index, self.scheduler.config.block_size, now_ns)
        if self.max_output_tokens:  # a P/D prefill instance: vLLM's max_tokens = 1
            seq.max_output = min(seq.max_output, self.max_output_tokens)
        self.scheduler.add(seq)
        return seq

    def release(self, seq: SeqState, *, release_ns: int = -1) -> HandoffDescriptor:
        """Give a sequence up (hand-off): drop it from the queues and free its blocks.

        Outputs of its steps still in flight here are discarded (epoch bump).

        Args:
            seq: the sequence, waiting or running here.
            release_ns: when the request was first released to an instance, ns (copied
                into the descriptor).

        Returns:
            The frozen description of the request at this moment (what the destination
            builds its own state from); its ``kv_bytes_per_rank`` is the KV of the
            computed tokens on one of this instance's TP ranks.
        """
        desc = self.describe(seq, release_ns=release_ns)
        self.scheduler.remove(seq)
        return desc

    def describe(self, seq: SeqState, *, release_ns: int = -1) -> HandoffDescriptor:
        """The frozen :class:`HandoffDescriptor` of ``seq`` now (no state changes)."""
        return HandoffDescriptor(
            index=seq.index, request=seq.request, num_computed_tokens=seq.num_computed,
            num_output_tokens=seq.num_output,
            kv_bytes_per_rank=seq.num_computed * self.kv_bytes_per_token,
            src_tp=self.scheduler.tp, release_ns=release_ns,
            first_scheduled_ns=seq.first_scheduled_ns,
            prefix_hit_tokens=seq.prefix_hit_tokens, num_preemptions=seq.num_preemptions)

    def adopt(self, desc: HandoffDescriptor, now_ns: int) -> SeqState:
        """Take over a request released by another instance, from its descriptor.

        Its KV does not move: the prompt and the tokens generated so far are recomputed
        here, reusing this instance's prefix cache (prefill/decode disaggregation with a
        KV transfer is :mod:`llmsim.pd`).

        Returns:
            The new sequence, at the tail of this instance's waiting queue.
        """
        seq = SeqState(desc.request, desc.index, self.scheduler.config.block_size, now_ns)
        seq.num_output = desc.num_output_tokens
        seq.first_scheduled_ns = desc.first_scheduled_ns
        seq.prefix_hit_tokens = desc.prefix_hit_tokens
        seq.num_preemptions = desc.num_preemptions
        self.scheduler.add(seq)
        return seq

    # ------------------------------------------------------------------- steps
    def _schedule(self, now_ns: int) -> BatchPlan | None:
        """The scheduler's next step, ``None`` when there is none.

        A ``schedule()`` that preempted and scheduled nothing is called again at once:
        vLLM's engine loop (``EngineCore.step``) runs the empty step and calls
        ``schedule()`` again while requests remain, and that call's waiting phase admits
        what the preemption made room for (the empty step's CPU time is not modelled,
        0 ns). Otherwise the instance would sit idle with the preempted sequences
        waiting and no event to wake it: with P/D the blocks of the consumers whose KV
        arrived stay held, a deadlock. Each repeat follows a preemption, which takes a
        sequence out of ``running``, so this ends.
        """
        sched = self.scheduler
        while True:
            n_preempted = sched.num_preemptions
            plan = sched.schedule(now_ns)
            if plan is not None or sched.num_preemptions == n_preempted:
                break
        if plan is not None and self.check is CheckLevel.FULL:
            self.scheduler.check_invariants(full=True, step=self.num_steps)
        return plan

    def try_start(self, now_ns: int) -> int | None:
        """Start the next step if the GPU is free and there is work.

        Takes the step planned ahead (async scheduling) or plans one now, prices it, and,
        with async scheduling, plans the following step from the state at this moment.

        Args:
            now_ns: the loop's clock, ns.

        Returns:
            The step's end time (ns) for the loop to schedule, or ``None``.

        Raises:
            CostModelUnavailable: the cost model failed or priced the step outside
                ``[0, MAX_STEP_COST_NS]`` (the message names this instance and the step).
        """
        prepared = self.prepare_step(now_ns)
        if prepared is None:
            return None
        plan, cpu_ns, start_ns = prepared
        gpu_ns, cost = self.price_step(plan, start_ns)
        end_ns = start_ns + gpu_ns
        if self.kv_connector_step is not None:  # P/D: start_load_kv, wait_for_save
            end_ns = self.kv_connector_step(plan, start_ns, end_ns)
            gpu_ns = end_ns - start_ns
        self._inflight = (plan, start_ns, end_ns, gpu_ns, cpu_ns, cost)
        if self.async_scheduling:
            self._next = self._schedule(start_ns)
        return end_ns

    def try_start_run(self, now_ns: int, until_ns: int, sink: StepSink) -> int | None:
        """:meth:`try_start`, fast-forwarding the decode stretch that starts here, if one
        does (:func:`llmsim.instance.fastforward.start_decode_run`): its steps ending at or
        before ``until_ns`` are simulated at once and their records go to ``sink``; the
        returned end is that of the stretch's last step. Same outputs as :meth:`try_start`
        step by step.

        Raises:
            CostModelUnavailable: as :meth:`try_start`.
        """
        prepared = self.prepare_step(now_ns)
        if prepared is None:
            return None
        plan, cpu_ns, start_ns = prepared
        gpu_ns, cost = self.price_step(plan, start_ns)
        end_ns = start_decode_run(self, plan, cpu_ns=cpu_ns, start_ns=start_ns, gpu_ns=gpu_ns,
                                  cost=cost, now_ns=now_ns, until_ns=until_ns, sink=sink)
        if end_ns is not None:
            return end_ns
        return self.launch_step(plan, cpu_ns=cpu_ns, start_ns=start_ns, gpu_ns=gpu_ns,
                                cost=cost)

    def price_step(self, plan: BatchPlan, start_ns: int) -> tuple[int, StepCost]:
        """GPU time (ns) and cost of ``plan`` from the step-time model.

        Raises:
            CostModelUnavailable: the cost model failed or priced the step outside
                ``[0, MAX_STEP_COST_NS]`` (the message names this instance and the step).
        """
        try:
            return self.step_time.gpu_ns(plan)
        except CostModelUnavailable as exc:
            raise CostModelUnavailable(f"instance {self.instance_id} ({self.name}), step "
                                       f"{self.num_steps} at {start_ns} ns: {exc}") from exc

    def prepare_step(self, now_ns: int) -> tuple[BatchPlan, int, int] | None:
        """Lock-step half of :meth:`try_start` (MoE DP, :mod:`llmsim.sim.lockstep`): take or
        plan the next step without pricing or launching it.

        Returns:
            ``(plan, cpu_ns, earliest GPU start ns)``, or ``None`` when busy or idle.
        """
        if self._inflight is not None:
            return None
        plan, self._next = self._next, None
        if plan is None:
            plan = self._schedule(now_ns)
            if plan is None:
                return None
        cpu_ns = self.step_time.overheads.cpu_ns(len(plan.chunks))
        return plan, cpu_ns, max(now_ns, plan.scheduled_ns + cpu_ns)

    def launch_step(self, plan: BatchPlan, *, cpu_ns: int, start_ns: int, gpu_ns: int,
                    cost: StepCost) -> int:
        """Lock-step half of :meth:`try_start`: launch a step prepared by
        :meth:`prepare_step` at ``start_ns`` for ``gpu_ns`` (the group's step time).

        Returns:
            The step's end time, ns.
        """
        end_ns = start_ns + gpu_ns
        self._inflight = (plan, start_ns, end_ns, gpu_ns, cpu_ns, cost)
        if self.async_scheduling:
            self._next = self._schedule(start_ns)
        return end_ns

    def finish_step(self, now_ns: int) -> StepRecord:
        """Deliver the outputs of the step in flight (the loop calls this at its end).

        Args:
            now_ns: the step's end time, ns (the loop's clock; the record carries the
                end time computed at the start).

        Raises:
            InvariantError: no step in flight, or the scheduler broke an invariant
                (checked as ``check`` asks).
        """
        if self._inflight is None:
            raise InvariantError(f"instance {self.instance_id}: finish_step at {now_ns} ns "
                                 "without a step in flight", step=self.num_steps)
        plan, start_ns, end_ns, gpu_ns, cpu_ns, cost = self._inflight
        self._inflight = None
        output = self.scheduler.update(plan)
        step = self.num_steps
        self.num_steps += 1
        if self.check is CheckLevel.COUNTERS:
            self.scheduler.check_counters(step)
        elif self.check is CheckLevel.FULL:
            self.scheduler.check_invariants(full=True, step=step)
        return StepRecord(instance_id=self.instance_id, step=step, scheduled_ns=plan.scheduled_ns,
                          start_ns=start_ns, end_ns=end_ns, gpu_ns=gpu_ns, cpu_ns=cpu_ns,
                          plan=plan, output=output, cost=cost,
                          num_running=len(self.scheduler.running),
                          num_waiting=self.num_waiting,
                          kv_usage=self.scheduler.kv.usage())
