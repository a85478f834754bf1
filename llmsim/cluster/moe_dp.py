"""The MoE layers of a step across ranks: expert parallelism and MoE data parallelism (vLLM 0.19).

Which layout runs which collectives (docs/cluster-semantics.md, "Expert parallelism"; vLLM
``FusedMoEParallelConfig.make``, ``AgRsAll2AllManager`` of the 0.19 default
``all2all_backend = allgather_reducescatter``, ``qwen3_moe.py`` ``Qwen3MoeSparseMoeBlock``):

* :attr:`MoeMode.EP_OVER_DP` (DP > 1, TP = 1, EP): dispatch = ``all_gatherv`` over the DP
  group, every rank then holds all ``T = sum T_r`` tokens; each rank runs only its local
  experts; combine = ``reduce_scatterv`` of ``[T, hidden]`` over the DP group;
* :attr:`MoeMode.EP_SEQUENCE_PARALLEL` (DP > 1, TP > 1, EP; vLLM
  ``use_sequence_parallel_moe``): each TP rank of DP rank ``r`` takes ``ceil(T_r / tp)`` of
  its rank's tokens (``sequence_parallel_chunk`` pads ``T_r`` to a multiple of ``tp``), the
  dispatch / combine run over the EP group of all ``dp x tp`` GPUs (``T = sum_r tp
  ceil(T_r / tp)`` rows), then an all-gather over TP rebuilds ``[tp ceil(T_r / tp),
  hidden]``; this replaces the TP all-reduce after the experts. Read from
  ``qwen3_moe.py`` (l.232-250) only: other architectures are refused with "not supported
  yet" (:func:`check_moe_layout`);
* :attr:`MoeMode.EP_OVER_TP` (DP = 1, TP > 1, EP): no dispatch; every TP rank runs its local
  experts on all tokens, then the one TP all-reduce of ``[T_pad, hidden]`` that TP-sharded
  experts run too (it stays in the instance's own step cost);
* :attr:`MoeMode.TP_SHARDED_OVER_DP` (DP > 1, no EP): dispatch / combine as above over the
  DP group ("Falling back to AllGather+ReduceScatter", ``all2all_utils``), and every expert
  TP-sharded over all ``dp x tp`` ranks: each rank runs all experts at ``moe_intermediate /
  (dp x tp)``, priced from the profile's ``moe`` table at TP ``dp x tp``; the TP all-reduce
  after the experts stays in the instance's step cost.

Dispatch payload: unquantized bf16 takes vLLM's legacy path (``dispatch_router_logits``):
``T x (hidden + num_experts) x dtype_bytes`` bytes gathered; combine ``T x hidden x
dtype_bytes`` (router logits are not combined).

Expert placement (``expert_placement_strategy``, vLLM ``determine_expert_map``):
``linear`` (default), rank ``r`` owns the contiguous ``[r base + min(r, rem), + local_r)``
with ``base = E // ep``, ``rem = E % ep``, ``local_r = base + (1 if r < rem else 0)``; or
``round_robin``, rank ``r`` owns every expert ``e`` with ``e % ep == r``.

Per-rank expert time, from the profile's ``moe`` table ``(tokens, active experts) -> ns`` per
layer (TP1 table under EP: whole experts on a rank), by routing policy
(:mod:`llmsim.cluster.routing`). Each EP rank's kernel sees all ``T`` dispatched tokens but
computes only the (token, expert) assignments routed to its local experts, so which
``tokens`` a rank is looked up at depends on what the table measured (:class:`GridTokens`;
docs/cluster-semantics.md, "Expert time of an EP rank"):

* What vLLM 0.19 computes on an EP rank (unquantized bf16, Triton fused MoE, the default
  unquantized backend, assumed selected: the profile records no backend;
  ``vllm/model_executor/layers/fused_moe/fused_moe.py`` ``TritonExperts.apply``,
  ``moe_align_block_size.py``, the Triton ``fused_moe_kernel``): ``moe_align_block_size``
  sorts all ``T k`` assignments by *global* expert and pads each expert to
  ``BLOCK_SIZE_M`` (``ignore_invalid_experts`` False there), then maps every block's expert
  through ``expert_map`` (non-local experts -> -1); both expert GEMMs launch over all blocks,
  and a block of expert -1 only writes zeros to its output rows and returns (no K loop, no
  weight load). The activation runs over all ``T k`` rows of ``intermediate_cache1`` and
  ``moe_sum`` over ``[T, k, hidden]``. So the GEMM work (FLOPs, expert weights read) is the
  rank's local assignments ``A_r`` over its ``a_r`` distinct local experts; what stays
  proportional to all ``T`` are memory passes (zero rows of the masked blocks, the
  activation and the top-k sum over all ``T k`` rows, the alignment of ``T k`` ids). The
  router GEMM runs on each DP rank's own ``T_r`` tokens before dispatch (its logits are
  all-gathered with the hidden states, ``dispatch_router_logits``).
* :attr:`GridTokens.LOCAL_ASSIGNMENTS` (the profile's ``moe`` table: LLMServingSim's
  profiler times ``Qwen3MoeSparseMoeBlock``, gate + fused experts, at TP 1 with all ``E``
  experts local, no ``expert_map``, ``T`` tokens of ``k`` forced assignments each cycled over
  ``activated_experts`` experts, eager; ``profiler/core/categories.py`` ``ExpertCategory``,
  ``profiler/core/hooks/moe_hook.py`` at LLMServingSim 5daddb2; AIConfigurator's
  ``moe_ep_size = 1`` rows likewise run every assignment): a rank is looked up at
  ``(A_r / k, a_r)``, the table row whose kernel computes exactly ``A_r`` assignments over
  ``a_r`` experts. ``balanced``: ``A_r = T k local_r / E``, so ``(T local_r / E,
  local_r (1 - (1 - k/E)^T))`` (``T / ep`` tokens under an even placement); a drawn policy:
  its ``A_r`` and ``a_r``. **Assumption**: the memory passes over the ``T k (1 - local_r /
  E)`` masked rows are not in that row and are not priced; the table row at all ``T``
  tokens (the rule before this one) bounds the rank's time from above (it also computes the
  masked GEMMs), this rule from below.
* :attr:`GridTokens.DISPATCHED` (a measured per-EP-rank table ``moe_ep<N>``, imported from
  AIConfigurator: its collector runs vLLM's ``FusedMoE`` on one rank with rank 0's
  ``expert_map`` at ``num_tokens`` tokens, ``collector/vllm/collect_moe.py`` at
  aiconfigurator 095f58a5, so the masked passes are in it): ``balanced`` at ``(T, a_r)``; a
  drawn policy at ``(ep A_r / k, a_r)`` (``T`` at an even split, the rank's token rows
  scaled with its share of the assignments; an assumption).

The slowest rank's experts set each layer (the ranks wait for each other in the combine).
Collectives are priced by :class:`llmsim.costmodel.collectives.CollectivesModel` (measured
tables where they cover the collective at that rank count, else the analytic NCCL model of
the hardware's link; the source of each is counted in :attr:`EpPricer.sources`).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np

from llmsim.cluster.parallel import ParallelConfig
from llmsim.cluster.routing import ExpertRouting
from llmsim.costmodel.base import CostModel, StepBatch, StepCost
from llmsim.costmodel.collectives import Collective, CollectivesModel
from llmsim.errors import ConfigError
from llmsim.model.config import ModelConfig

__all__ = ["ALL2ALL_BACKENDS", "EXPERT_LOOKUP_RULES", "MODELLED_ALL2ALL_BACKEND", "All2AllBackend",
           "EpCollective", "EpLayerCost", "EpPricer", "EpStepCostModel", "ExpertPlacement",
           "GridTokens", "MoeMode", "check_moe_layout", "expected_local_active", "expert_owners",
           "expert_ranges", "moe_mode"]

class All2AllBackend(StrEnum):
    """The ``--all2all-backend`` values vLLM 0.19 accepts (``vllm/config/parallel.py``;
    docs/cluster-semantics.md, "Expert parallelism"). ``pplx`` and ``naive`` were removed by
    PR #36294: vLLM 0.19 logs a warning and runs ``allgather_reducescatter`` for them."""

    ALLGATHER_REDUCESCATTER = "allgather_reducescatter"
    DEEPEP_HIGH_THROUGHPUT = "deepep_high_throughput"
    DEEPEP_LOW_LATENCY = "deepep_low_latency"
    MORI = "mori"
    NIXL_EP = "nixl_ep"
    FLASHINFER_NVLINK_TWO_SIDED = "flashinfer_nvlink_two_sided"
    FLASHINFER_NVLINK_ONE_SIDED = "flashinfer_nvlink_one_sided"
    PPLX = "pplx"
    NAIVE = "naive"


REMOVED_ALL2ALL_BACKENDS = frozenset({All2AllBackend.PPLX, All2AllBackend.NAIVE})
"""Backends vLLM 0.19 replaces by ``allgather_reducescatter`` (with a warning)."""


MODELLED_ALL2ALL_BACKEND = All2AllBackend.ALLGATHER_REDUCESCATTER
"""vLLM 0.19's default ``--all2all-backend``, the one modelled."""

ALL2ALL_BACKENDS = frozenset(b.value for b in All2AllBackend)
"""Every value vLLM 0.19 accepts."""

SEQUENCE_PARALLEL_MOE_ARCHITECTURES = frozenset({"Qwen3MoeForCausalLM"})
"""Architectures whose sequence-parallel MoE path (DP > 1 with TP > 1 and EP) was read in
vLLM 0.19's source (``qwen3_moe.py``)."""


class ExpertPlacement(StrEnum):
    """vLLM's ``expert_placement_strategy`` (``determine_expert_map``)."""

    LINEAR = "linear"
    ROUND_ROBIN = "round_robin"


class GridTokens(StrEnum):
    """What the ``tokens`` axis of the table an EP rank is priced from counts (module
    docstring): so which token count a rank is looked up at."""

    LOCAL_ASSIGNMENTS = "local_assignments"
    """Every assignment of the row ran (all experts local): a rank at its local
    assignments / top-k."""
    DISPATCHED = "dispatched"
    """Measured on one EP rank with the other ranks' experts masked: a rank at all tokens
    after dispatch."""


EXPERT_LOOKUP_RULES = {
    GridTokens.LOCAL_ASSIGNMENTS: "tokens = local assignments / top_k, active = distinct "
                                  "local experts hit",
    GridTokens.DISPATCHED: "tokens = all tokens after dispatch, active = distinct local "
                           "experts hit",
}
"""How an EP rank is looked up, per :class:`GridTokens` (reported in
``summary["moe_dp"]["ep_expert_lookup"]``)."""


class MoeMode(StrEnum):
    """Which collectives a MoE layer runs across ranks (module docstring)."""

    EP_OVER_DP = "ep_over_dp"
    EP_SEQUENCE_PARALLEL = "ep_sequence_parallel"
    EP_OVER_TP = "ep_over_tp"
    TP_SHARDED_OVER_DP = "tp_sharded_over_dp"


def moe_mode(parallel: ParallelConfig) -> MoeMode | None:
    """The MoE layout of ``parallel`` (for a MoE model), None when the MoE layers need no
    cross-rank pricing (one GPU, or plain TP without EP: the TP cost model prices them)."""
    dp, tp = parallel.data_parallel_size, parallel.tensor_parallel_size
    if parallel.enable_expert_parallel:
        if dp > 1:
            return MoeMode.EP_OVER_DP if tp == 1 else MoeMode.EP_SEQUENCE_PARALLEL
        return MoeMode.EP_OVER_TP if tp > 1 else None
    return MoeMode.TP_SHARDED_OVER_DP if dp > 1 else None


def check_moe_layout(parallel: ParallelConfig, model: ModelConfig, *, all2all_backend: str,
                     where: str = "engine") -> tuple[str, str] | None:
    """The first MoE layout feature llmsim does not model, as ``(field, message)``.

    Args:
        parallel: the layout.
        model: the served MoE model.
        all2all_backend: the engine's ``all2all_backend``.
        where: dotted section of the engine keys.
    """
    mode = moe_mode(parallel)
    backend = str(all2all_backend)
    if mode in (MoeMode.EP_OVER_DP, MoeMode.EP_SEQUENCE_PARALLEL, MoeMode.TP_SHARDED_OVER_DP) and (
            backend != MODELLED_ALL2ALL_BACKEND.value
            and backend not in {b.value for b in REMOVED_ALL2ALL_BACKENDS}):
        return (f"{where}.all2all_backend",
                f"not supported yet: all2all_backend '{backend}' (only vLLM 0.19's default "
                f"'{MODELLED_ALL2ALL_BACKEND.value}' is modelled)")
    if mode is MoeMode.EP_SEQUENCE_PARALLEL and (
            model.architecture not in SEQUENCE_PARALLEL_MOE_ARCHITECTURES):
        return (f"{where}.tensor_parallel_size",
                f"not supported yet: expert parallelism with data_parallel_size > 1 and "
                f"tensor_parallel_size > 1 for {model.architecture} (the sequence-parallel "
                f"MoE path was read for {', '.join(sorted(SEQUENCE_PARALLEL_MOE_ARCHITECTURES))}"
                " only)")
    if parallel.enable_expert_parallel and model.num_experts < parallel.expert_parallel_size:
        return (f"{where}.enable_expert_parallel",
                f"cannot place {model.num_experts} experts on "
                f"{parallel.expert_parallel_size} EP ranks")
    return None


def expert_ranges(num_experts: int, ep_size: int) -> tuple[tuple[int, int], ...]:
    """``(first expert, local count)`` per EP rank, vLLM's linear placement.

    Raises:
        ConfigError: ``ep_size`` < 1 or more ranks than experts.
    """
    if ep_size < 1 or num_experts < ep_size:
        raise ConfigError(f"cannot place {num_experts} experts on {ep_size} EP ranks",
                          field="engine.enable_expert_parallel")
    base, rem = divmod(num_experts, ep_size)
    return tuple((r * base + min(r, rem), base + (1 if r < rem else 0)) for r in range(ep_size))


def expert_owners(num_experts: int, ep_size: int,
                  placement: ExpertPlacement = ExpertPlacement.LINEAR) -> tuple[int, ...]:
    """The EP rank owning each expert, ``(E,)``.

    Raises:
        ConfigError: ``ep_size`` < 1 or more ranks than experts.
    """
    ranges = expert_ranges(num_experts, ep_size)
    if placement is ExpertPlacement.ROUND_ROBIN:
        return tuple(e % ep_size for e in range(num_experts))
    return tuple(r for r, (_first, n) in enumerate(ranges) for _ in range(n))


def expected_local_active(num_experts: int, experts_per_token: int, local: int,
                          tokens: int) -> float:
    """Expected distinct experts among ``local`` of ``num_experts`` hit by ``tokens`` tokens
    under uniform top-k routing: ``local x (1 - (1 - k/E)^T)``, capped at ``T x k``."""
    if tokens <= 0 or local <= 0:
        return 0.0
    miss = (1.0 - experts_per_token / num_experts) ** tokens
    return min(local * (1.0 - miss), float(tokens * experts_per_token))


@dataclass(frozen=True, slots=True, kw_only=True)
class EpCollective:
    """One kind of collective a step's MoE layers run.

    Attributes:
        name: role (``ep_dispatch``, ``ep_combine``, ``ep_tp_gather``).
        collective: which collective.
        ranks: ranks of its group.
        calls: calls per step (one per MoE layer).
        nbytes: bytes of one call (the full gathered / reduced tensor).
        duration_ns: all calls of the step together, ns (the slowest group's, when several
            groups run it concurrently).
        source: what priced it.
    """

    name: str
    collective: Collective
    ranks: int
    calls: int
    nbytes: int
    duration_ns: int
    source: str


@dataclass(frozen=True, slots=True, kw_only=True)
class EpLayerCost:
    """One step's cross-rank MoE cost, all layers together.

    Attributes:
        tokens: tokens after dispatch (sum over ranks), the rows every rank's experts see.
        expert_ns: per EP rank (every rank under TP-sharded experts), its experts' time over
            all layers, ns.
        dispatch_ns: all-gather(v) time over all layers, ns (0 without dispatch).
        combine_ns: reduce-scatter(v) time over all layers, ns (0 without combine).
        dispatch_bytes: bytes gathered by one layer's dispatch.
        combine_bytes: bytes reduced by one layer's combine.
        tp_gather_ns: sequence-parallel MoE's TP all-gather over all layers, ns.
        rank_tokens: per EP rank, the token rows its experts were looked up at.
        rank_active: per EP rank, the distinct local experts its lookup used.
        collectives: every collective of the step (:class:`EpCollective`).
    """

    tokens: int
    expert_ns: tuple[int, ...]
    dispatch_ns: int
    combine_ns: int
    dispatch_bytes: int
    combine_bytes: int
    tp_gather_ns: int = 0
    rank_tokens: tuple[float, ...] = ()
    rank_active: tuple[float, ...] = ()
    collectives: tuple[EpCollective, ...] = ()

    @property
    def total_ns(self) -> int:
        """Slowest rank's experts plus every collective, ns."""
        return max(self.expert_ns) + self.dispatch_ns + self.combine_ns + self.tp_gather_ns


MoeGrid = Callable[[float, float], tuple[float, bool]]
"""``(tokens, active experts) -> (ns per layer, extrapolated)`` (a profile's ``moe`` table)."""


class EpPricer:
    """Prices the MoE layers of a step across the ranks of one deployment.

    Args:
        moe_grid: the profile's ``moe`` table: at TP 1 under EP (``ProfileCostModel.
            tp_tables(1).moe``), at TP ``dp x tp`` for TP-sharded experts over DP.
        model: the served MoE model.
        ep_size: EP ranks (TP1 over DP: the DP size); ignored when ``parallel`` is given.
        comm: collectives of the dispatch / combine group (DP group, or the EP group of
            ``dp x tp`` GPUs under sequence-parallel MoE); None where there is none.
        parallel: the deployment's layout (default: DP ``ep_size`` x TP 1 with EP).
        placement: expert placement over the EP ranks.
        routing: routing policy (None: ``balanced``).
        tp_comm: collectives of one DP rank's TP group (sequence-parallel MoE's all-gather).
        tp_graph_max_tokens: the instance cost model's CUDA-graph limit (steps above it
            run eagerly; :class:`EpStepCostModel`), None: unknown (graph rows).
        full_grid: the profile's TP1 ``moe`` table (all experts on one GPU) when
            ``moe_grid`` is another (a measured per-EP-rank table, ``moe_ep<N>``): what
            :meth:`full_moe_ns` reads; None: ``moe_grid``.
        expert_table: name of the table ``moe_grid`` is (for reports).
        grid_tokens: what ``moe_grid``'s tokens axis counts (:class:`GridTokens`); None:
            :attr:`GridTokens.DISPATCHED` when ``full_grid`` is given and is not
            ``moe_grid`` (a measured ``moe_ep<N>`` table), else
            :attr:`GridTokens.LOCAL_ASSIGNMENTS`. Unused under TP-sharded experts.

    Attributes:
        mode: the MoE layout (:class:`MoeMode`).
        grid_tokens: the resolved ``grid_tokens``.
        expert_lookup: how an EP rank is looked up (:data:`EXPERT_LOOKUP_RULES`; under
            TP-sharded experts: every rank at all tokens).
        sources: ``(collective role, source)`` -> calls priced so.
        extrapolated: steps whose expert lookup left the measured grid.

    Raises:
        ConfigError: more EP ranks than experts.
    """

    def __init__(self, *, moe_grid: MoeGrid, model: ModelConfig, ep_size: int = 0,
                 comm: CollectivesModel | None, parallel: ParallelConfig | None = None,
                 placement: ExpertPlacement = ExpertPlacement.LINEAR,
                 routing: ExpertRouting | None = None,
                 tp_comm: CollectivesModel | None = None,
                 tp_graph_max_tokens: int | None = None, full_grid: MoeGrid | None = None,
                 expert_table: str = "moe", grid_tokens: GridTokens | None = None) -> None:
        if parallel is None:
            parallel = ParallelConfig(data_parallel_size=ep_size, enable_expert_parallel=True)
        mode = moe_mode(parallel)
        if mode is None:
            raise ConfigError("the layout needs no cross-rank MoE pricing",
                              field="engine.enable_expert_parallel")
        self.mode = mode
        self.parallel = parallel
        self.moe_grid = moe_grid
        self.full_grid = full_grid or moe_grid
        self.expert_table = expert_table
        if grid_tokens is None:
            grid_tokens = (GridTokens.DISPATCHED if full_grid is not None
                           and full_grid is not moe_grid else GridTokens.LOCAL_ASSIGNMENTS)
        self.grid_tokens = grid_tokens
        self.expert_lookup = (
            "tp-sharded experts: every rank at all tokens, all active experts"
            if mode is MoeMode.TP_SHARDED_OVER_DP else EXPERT_LOOKUP_RULES[grid_tokens])
        self.model = model
        self.comm = comm
        self.tp_comm = tp_comm
        self.tp_graph_max_tokens = tp_graph_max_tokens
        self.routing = routing
        self.placement = placement
        self.layers = model.num_hidden_layers
        self.dp = parallel.data_parallel_size
        self.tp = parallel.tensor_parallel_size
        self.ep_size = parallel.expert_parallel_size
        self.ranges: tuple[tuple[int, int], ...] = ()
        self.owners = np.zeros(0, dtype=np.int64)
        self.local: tuple[int, ...] = ()
        if parallel.enable_expert_parallel:
            self.ranges = expert_ranges(model.num_experts, self.ep_size)
            self.owners = np.asarray(expert_owners(model.num_experts, self.ep_size, placement))
            self.local = tuple(int(n) for n in np.bincount(self.owners,
                                                            minlength=self.ep_size))
        self.sources: Counter[tuple[str, str]] = Counter()
        self.extrapolated = 0
        self._memo: dict[tuple[tuple[int, ...], bool], EpLayerCost] = {}

    # ------------------------------------------------------------------ the TP1 rank
    def full_moe_ns(self, tokens: int) -> int:
        """All experts on one rank at ``tokens`` tokens, all layers, ns: what the TP1 cost
        model put in the step's ``moe`` breakdown (same rounding)."""
        from llmsim.costmodel.profile_model import expected_active_experts

        if tokens <= 0:
            return 0
        m = self.model
        t, _ = self.full_grid(tokens, expected_active_experts(m.num_experts,
                                                               m.num_experts_per_token, tokens))
        return int(t * self.layers + 0.5)

    def rank_adjust_ns(self, run_tokens: int) -> int:
        """What to take off a DP rank's own step time (its cost model's answer at
        ``run_tokens`` tokens) because this pricer prices it instead, ns.

        :attr:`MoeMode.EP_OVER_DP`: the TP1 cost model's ``moe`` (:meth:`full_moe_ns`);
        otherwise 0: the rank's cost model was built without the experts (and, under
        sequence-parallel MoE, without the TP all-reduce after them;
        :func:`llmsim.costmodel.decompose.step_ops`).
        """
        if self.mode is MoeMode.EP_OVER_DP:
            return self.full_moe_ns(run_tokens)
        return 0

    # ------------------------------------------------------------------ the step
    def price(self, tokens: int | Sequence[int], *, cuda_graph: bool,
              key: int | None = None) -> EpLayerCost:
        """Cross-rank MoE cost of a step.

        Args:
            tokens: per DP rank, the tokens its forward runs at (after DP / CUDA-graph
                padding); an int: their sum (TP1 over DP, DP = 1).
            cuda_graph: the step runs captured graphs (selects measured table rows).
            key: the step's routing key (a drawn policy; None: the token count).
        """
        run = (tokens,) if isinstance(tokens, int) else tuple(tokens)
        drawn = self.routing is not None and self.routing.sampled
        memo_key = (run if self.mode is MoeMode.EP_SEQUENCE_PARALLEL else (sum(run),),
                    cuda_graph)
        if not drawn or key is None:
            hit = self._memo.get(memo_key)
            if hit is not None:
                return hit
        total = self._dispatched_tokens(run)
        rank_tokens, rank_active = self._rank_loads(total, key)
        expert_ns = []
        for t_r, a_r in zip(rank_tokens, rank_active, strict=True):
            if a_r <= 0 or t_r <= 0:
                expert_ns.append(0)
                continue
            t, ex = self.moe_grid(t_r, a_r)
            if ex:
                self.extrapolated += 1
            expert_ns.append(int(t * self.layers + 0.5))
        colls = self._collectives(run, total, cuda_graph)
        by_name = {c.name: c for c in colls}
        d, c = by_name.get("ep_dispatch"), by_name.get("ep_combine")
        g = by_name.get("ep_tp_gather")
        cost = EpLayerCost(
            tokens=total, expert_ns=tuple(expert_ns),
            dispatch_ns=d.duration_ns if d else 0, combine_ns=c.duration_ns if c else 0,
            dispatch_bytes=d.nbytes if d else 0, combine_bytes=c.nbytes if c else 0,
            tp_gather_ns=g.duration_ns if g else 0, rank_tokens=tuple(rank_tokens),
            rank_active=tuple(rank_active), collectives=colls)
        if not drawn or key is None:
            self._memo[memo_key] = cost
        return cost

    def _dispatched_tokens(self, run: tuple[int, ...]) -> int:
        if self.mode is MoeMode.EP_SEQUENCE_PARALLEL:
            tp = self.tp
            return sum(tp * math.ceil(t / tp) for t in run)
        return sum(run)

    def _rank_loads(self, total: int, key: int | None
                    ) -> tuple[list[float], list[float]]:
        """Per EP rank (or per rank of TP-sharded experts) ``(tokens, active experts)`` of
        the expert lookup (module docstring)."""
        from llmsim.costmodel.profile_model import expected_active_experts

        m = self.model
        e, k = m.num_experts, m.num_experts_per_token
        routing = self.routing
        counts = None
        if routing is not None and routing.sampled and total > 0:
            counts = routing.draw(total, e, k, total if key is None else key)
        if self.mode is MoeMode.TP_SHARDED_OVER_DP:
            ranks = self.parallel.world_size
            if counts is None:
                active = expected_active_experts(e, k, total) if total > 0 else 0.0
            else:
                active = float(np.count_nonzero(counts))
            return [float(total)] * ranks, [active] * ranks
        local_rows = self.grid_tokens is GridTokens.LOCAL_ASSIGNMENTS
        if counts is None:
            local_active = [expected_local_active(e, k, n, total) for n in self.local]
            if local_rows:  # expected local assignments T k local_r / E, over k
                return [total * n / e for n in self.local], local_active
            return [float(total)] * self.ep_size, local_active
        assignments = np.bincount(self.owners, weights=counts, minlength=self.ep_size)
        hit = np.bincount(self.owners, weights=counts > 0, minlength=self.ep_size)
        ep = self.ep_size
        rows = ([float(a) / k for a in assignments] if local_rows
                else [float(a) * ep / k for a in assignments])
        return rows, [float(h) for h in hit]

    def _collectives(self, run: tuple[int, ...], total: int, graph: bool
                     ) -> tuple[EpCollective, ...]:
        m = self.model
        b, h, layers = m.dtype_bytes, m.hidden_size, self.layers
        out: list[EpCollective] = []

        def add(name: str, comm: CollectivesModel, coll: Collective, nbytes: int) -> None:
            priced = comm.price(coll, nbytes, cuda_graph=graph)
            role = f"{name} {coll.value}"
            self.sources[(role, priced.source)] += 1
            out.append(EpCollective(name=name, collective=coll, ranks=comm.ranks, calls=layers,
                                    nbytes=nbytes,
                                    duration_ns=int(priced.duration_ns * layers + 0.5),
                                    source=priced.source))

        if self.mode is not MoeMode.EP_OVER_TP and self.comm is not None:
            add("ep_dispatch", self.comm, Collective.ALL_GATHER, total * (h + m.num_experts) * b)
            add("ep_combine", self.comm, Collective.REDUCE_SCATTER, total * h * b)
        if self.mode is MoeMode.EP_SEQUENCE_PARALLEL and self.tp_comm is not None:
            # every DP rank's TP group gathers its own chunks at once: the largest sets it
            biggest = max(self.tp * math.ceil(t / self.tp) for t in run)
            add("ep_tp_gather", self.tp_comm, Collective.ALL_GATHER, biggest * h * b)
        return tuple(out)


class EpStepCostModel:
    """A DP = 1 instance whose experts are spread over its TP ranks (:attr:`MoeMode.
    EP_OVER_TP`): the instance's TP cost model (built without the ``moe`` op) plus the
    slowest TP rank's local experts, in the breakdown as ``moe``.

    Args:
        inner: the instance's cost model (its step cost has no ``moe`` part).
        pricer: the EP pricer (``mode == EP_OVER_TP``).

    Attributes other than :meth:`step_cost` are the inner model's, except those that price
    steps by themselves (:data:`_NOT_DELEGATED`).
    """

    def __init__(self, inner: CostModel, pricer: EpPricer) -> None:
        self.inner = inner
        self.pricer = pricer
        self._memo: dict[StepBatch, StepCost] = {}

    def step_cost(self, batch: StepBatch) -> StepCost:
        """The inner cost plus the EP experts at the batch's tokens (see the class)."""
        hit = self._memo.get(batch)
        if hit is not None:
            return hit
        cost = self.inner.step_cost(batch)
        tokens = batch.num_tokens
        if tokens <= 0:
            return cost
        cap = self.pricer.tp_graph_max_tokens
        ep = self.pricer.price(tokens, cuda_graph=cap is None or tokens <= cap)
        moe_ns = max(ep.expert_ns)
        bd = dict(cost.breakdown_ns)
        bd["moe"] = bd.get("moe", 0) + moe_ns
        hit = StepCost(duration_ns=cost.duration_ns + moe_ns, breakdown_ns=bd,
                       energy_j=cost.energy_j)
        if len(self._memo) >= 1 << 17:
            self._memo.clear()
        self._memo[batch] = hit
        return hit

    def __getattr__(self, name: str) -> Any:
        if name in ("inner", "pricer", "_memo"):  # not set yet (copy, unpickling)
            raise AttributeError(name)
        if name in _NOT_DELEGATED:  # they would price steps without the experts
            raise AttributeError(f"{type(self).__name__} has no {name!r}")
        return getattr(self.inner, name)


_NOT_DELEGATED = frozenset({"decode_run", "decode_run_ns", "tp_tables", "clear_cache"})
"""Inner cost-model methods :class:`EpStepCostModel` does not pass through: they price (or
forget) steps on their own, without the EP experts (decode fast-forward then steps one by
one)."""
