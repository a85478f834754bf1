"""MoE data parallelism: DP ranks that run every forward pass together (vLLM 0.19).

vLLM runs the DP ranks of a MoE model in lock-step (``DPEngineCoreProc``, docs/cluster-semantics.md,
"Data parallelism"), because every MoE layer communicates across them:

* every step, all ranks run a forward together; the step ends when the slowest rank's
  does (here: one GPU time for the whole group, :meth:`LockstepGroup.try_start`);
* DP padding (``coordinate_batch_across_dp``): when every rank's token count fits a
  captured CUDA graph, every rank runs the largest CUDA-graph-padded count of the group;
  when any rank runs un-captured (more tokens than the largest capture size) no rank is
  padded and all run eagerly at their own size;
* a rank with nothing scheduled runs a dummy pass (``execute_dummy_batch``: 1 token,
  uniform decode), padded like the others, while the wave lasts;
* the wave ends at the global-idle check, an all-reduce run only every 32 steps
  (``_has_global_unfinished_reqs``): so ranks keep running dummy passes up to 31 steps
  after the last request finished. A request arriving at any rank starts a new wave on all.

Not modelled: the per-step DP synchronisation all-reduce of an ``int32[4, dp]`` tensor on
the CPU/gloo group (async scheduling's default): no measured or published figure of its
cost was available, so it costs nothing here. The lock-step group waits for the latest CPU
preparation among its ranks (the step's start is the max over ranks).

Each group step produces one ``STEP_END`` event (payload: the group's first instance); the
instances' own records (one per rank with a real step; dummy passes have none) are delivered
to the recorder at that time in rank order. Instances outside every group step as in
:class:`llmsim.sim.loop.Simulation`, unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from llmsim.cluster.moe_dp import EpLayerCost, EpPricer
from llmsim.costmodel.base import StepBatch, StepCost
from llmsim.errors import CostModelUnavailable
from llmsim.instance.instance import Instance
from llmsim.sim.events import EventKind
from llmsim.sim.loop import Simulation

__all__ = ["GLOBAL_IDLE_CHECK_STEPS", "LockstepGroup", "LockstepSimulation", "LockstepStep"]

GLOBAL_IDLE_CHECK_STEPS = 32
"""Steps between two global-unfinished checks of a DP wave (vLLM ``DPEngineCoreProc``
``_has_global_unfinished_reqs``: ``step_counter % 32``; docs/cluster-semantics.md, "Data
parallelism")."""

_DUMMY = StepBatch(prefills=(), decode_context_lens=(1,))
"""A dummy pass's batch at TP 1 (each rank's is :func:`_dummy` of its own layout)."""


def _dummy(inst: Instance) -> StepBatch:
    """The 1-token dummy batch of ``inst``, in its parallel layout (its TP degree)."""
    parallel = inst.scheduler.parallel
    if parallel == _DUMMY.parallel:
        return _DUMMY
    return StepBatch(prefills=(), decode_context_lens=(1,), parallel=parallel)


@dataclass(frozen=True, slots=True, kw_only=True)
class LockstepStep:
    """One group step, as kept in :attr:`LockstepGroup.log`.

    Attributes:
        start_ns: GPU start of every rank.
        end_ns: GPU end of every rank.
        tokens: per rank, real tokens scheduled (0: dummy pass).
        run_tokens: per rank, tokens the forward ran at (DP / CUDA-graph padding, dummy = 1
            before padding).
        rank_ns: per rank, its own step time without the EP MoE layers, ns.
        ep: the EP MoE cost of the step (None without EP).
    """

    start_ns: int
    end_ns: int
    tokens: tuple[int, ...]
    run_tokens: tuple[int, ...]
    rank_ns: tuple[int, ...]
    ep: EpLayerCost | None


class LockstepGroup:
    """The DP ranks of one MoE deployment, stepped together.

    Args:
        members: the ranks' instances (rank order).
        ep: prices the EP MoE layers (None: each rank prices its own MoE).
        keep_log: keep a :class:`LockstepStep` per group step (tests).
    """

    def __init__(self, members: Sequence[Instance], *, ep: EpPricer | None = None,
                 keep_log: bool = False) -> None:
        self.members = tuple(members)
        self.leader = self.members[0].instance_id
        self.ep = ep
        self.wave_active = False
        self.num_steps = 0
        self.num_dummy_passes = 0
        self.ep_comm_ns = 0
        """Cross-rank MoE collectives of every group step, summed, ns."""
        self.ep_expert_ns = 0
        """The slowest rank's experts of every group step, summed, ns."""
        self.end_ns: int | None = None
        self.log: list[LockstepStep] | None = [] if keep_log else None
        self.on_dummy: Callable[[int, int, int, int], None] | None = None
        """Told of each dummy pass: ``(instance_id, start_ns, end_ns, gpu_ns)`` (energy)."""
        self.on_ep_cost: Callable[[int, int, EpLayerCost], None] | None = None
        """Told of each group step's cross-rank MoE cost: ``(start_ns, end_ns, cost)``
        (energy: the collectives' link bytes)."""

    @property
    def busy(self) -> bool:
        """A group step is in flight."""
        return self.end_ns is not None

    def _rank_ns(self, inst: Instance, batch: StepBatch, tokens: int, run_tokens: int
                 ) -> tuple[int, StepCost]:
        st = inst.step_time
        cost = st.cost_model.step_cost(batch)
        ns = st._checked_ns(cost.duration_ns, "the step", batch)
        if run_tokens > tokens:
            ns += st._padding_ns(batch, cost, tokens, run_tokens)
        # the rank's own TP / PP collectives ran at the group's padded count (report)
        st.count_comm_steps(run_tokens, batch.num_sampled)
        if self.ep is not None:  # what the group's MoE pricing replaces (EpPricer)
            ns -= self.ep.rank_adjust_ns(run_tokens)
        return int(ns), cost

    def try_start(self, now_ns: int) -> int | None:
        """Start the group's next step if there is work (or the wave still lasts).

        Returns:
            The step's end time, ns, or None (idle; the wave may have ended).

        Raises:
            CostModelUnavailable: a rank's step could not be priced (names the rank).
        """
        if self.end_ns is not None:
            return None
        preps = [m.prepare_step(now_ns) for m in self.members]
        if all(p is None for p in preps):
            if not self.wave_active:
                return None
            unfinished = any(m.scheduler.has_unfinished() for m in self.members)
            if unfinished or self.num_steps % GLOBAL_IDLE_CHECK_STEPS == 0:
                # no rank can schedule: globally idle at the check, or a rank's requests
                # are stuck (nothing in flight can free them; the loop then reports the
                # unfinished requests instead of running dummy passes forever)
                self.wave_active = False
                return None
        self.wave_active = True
        start_ns = max([now_ns] + [p[2] for p in preps if p is not None])
        tokens = [0 if p is None else p[0].num_prefill_tokens + p[0].num_decodes for p in preps]
        own = [t or 1 for t in tokens]
        st0 = self.members[0].step_time
        graph = st0.pad and all(t < len(st0._pad_to) for t in own)
        if graph:
            target = max(st0.padded_tokens(t) for t in own)
            run = [target] * len(own)
        else:
            run = own
        rank_ns: list[int] = []
        costs: list[StepCost] = []
        for r, (m, p) in enumerate(zip(self.members, preps, strict=True)):
            batch = _dummy(m) if p is None else p[0].batch
            try:
                ns, cost = self._rank_ns(m, batch, own[r], run[r])
            except CostModelUnavailable as exc:
                raise CostModelUnavailable(f"instance {m.instance_id} ({m.name}), DP rank "
                                           f"{r}, group step {self.num_steps}: {exc}") from exc
            rank_ns.append(ns)
            costs.append(cost)
        gpu_ns = max(rank_ns)
        ep_cost = None
        if self.ep is not None:
            ep_cost = self.ep.price(run, cuda_graph=graph, key=self.num_steps)
            gpu_ns += ep_cost.total_ns
            self.ep_expert_ns += max(ep_cost.expert_ns)
            self.ep_comm_ns += ep_cost.total_ns - max(ep_cost.expert_ns)
        end_ns = start_ns + gpu_ns
        if ep_cost is not None and self.on_ep_cost is not None:
            self.on_ep_cost(start_ns, end_ns, ep_cost)
        for m, p, cost in zip(self.members, preps, costs, strict=True):
            if p is None:
                self.num_dummy_passes += 1
                if self.on_dummy is not None:
                    self.on_dummy(m.instance_id, start_ns, end_ns, gpu_ns)
                continue
            m.launch_step(p[0], cpu_ns=p[1], start_ns=start_ns, gpu_ns=gpu_ns, cost=cost)
        self.num_steps += 1
        self.end_ns = end_ns
        if self.log is not None:
            self.log.append(LockstepStep(start_ns=start_ns, end_ns=end_ns, tokens=tuple(tokens),
                                         run_tokens=tuple(run), rank_ns=tuple(rank_ns),
                                         ep=ep_cost))
        return end_ns


class LockstepSimulation(Simulation):
    """:class:`Simulation` with MoE DP groups stepped in lock-step.

    Args:
        groups: the lock-step groups (each member in at most one group); other arguments as
            :class:`Simulation`.
    """

    def __init__(self, *args: Any, groups: Sequence[LockstepGroup], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.groups = tuple(groups)
        self._group_of: list[LockstepGroup | None] = [None] * len(self.instances)
        for g in self.groups:
            for m in g.members:
                self._group_of[m.instance_id] = g

    def _request_start(self, inst_id: int, now_ns: int) -> None:
        g = self._group_of[inst_id]
        if g is None:
            super()._request_start(inst_id, now_ns)
            return
        lead = g.leader
        if not self._start_pending[lead] and not g.busy:
            self._start_pending[lead] = True
            self._push(now_ns, EventKind.STEP_START, lead)

    def _start(self, inst_id: int, now_ns: int) -> None:
        g = self._group_of[inst_id]
        if g is None:
            super()._start(inst_id, now_ns)
            return
        end_ns = g.try_start(now_ns)
        if end_ns is not None:
            self._push(end_ns, EventKind.STEP_END, g.leader)

    def _on_step_end(self, inst: Instance, now_ns: int) -> None:
        g = self._group_of[inst.instance_id]
        if g is None:
            super()._on_step_end(inst, now_ns)
            return
        g.end_ns = None
        for m in g.members:
            if m.busy:
                super()._on_step_end(m, now_ns)
