"""Expert parallelism over the DP ranks of a MoE deployment (vLLM 0.19, DP > 1, TP = 1).

Layout (docs/cluster-semantics.md, "Expert parallelism"; vLLM ``determine_expert_map``,
"linear" placement, the default): ``base = E // ep``, ``rem = E % ep``; rank ``r`` owns the
contiguous experts ``[r * base + min(r, rem), + local_r)`` with ``local_r = base + (1 if r < rem else 0)``.

Per MoE layer (docs/cluster-semantics.md, "Expert parallelism"; ``AgRsAll2AllManager``, the
0.19 default backend):

* dispatch: ``all_gatherv`` over the DP group; every rank then holds all ``T = sum T_r``
  tokens. Unquantized bf16 takes the legacy path (router logits dispatched with the hidden
  states): ``T x (hidden + num_experts) x dtype_bytes`` bytes gathered;
* each rank runs only its local experts on the ``T`` tokens: the profile's ``moe`` table at
  ``(T, expected distinct local experts hit)`` under uniform top-k routing, i.e.
  ``local_r x (1 - (1 - k/E)^T)``, capped at ``T x k`` (the same balanced-routing
  assumption as :func:`llmsim.costmodel.profile_model.expected_active_experts`);
* combine: ``reduce_scatterv`` over the DP group of ``[T, hidden]`` (``T x hidden x
  dtype_bytes`` bytes: vLLM's combine reduces ``[T, H]``, without the router logits).

The slowest rank's experts set each layer (the ranks wait for each other in the combine).
Collectives are priced by :class:`llmsim.costmodel.collectives.CollectivesModel` over the
DP group (measured tables where they cover the collective at that rank count, else the
analytic NCCL model of the hardware's link; the source is reported in
:attr:`EpPricer.sources`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from llmsim.costmodel.collectives import Collective, CollectivesModel
from llmsim.errors import ConfigError
from llmsim.model.config import ModelConfig

__all__ = ["EpLayerCost", "EpPricer", "expert_ranges", "expected_local_active"]


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


def expected_local_active(num_experts: int, experts_per_token: int, local: int,
                          tokens: int) -> float:
    """Expected distinct experts among ``local`` of ``num_experts`` hit by ``tokens`` tokens
    under uniform top-k routing: ``local x (1 - (1 - k/E)^T)``, capped at ``T x k``."""
    if tokens <= 0 or local <= 0:
        return 0.0
    miss = (1.0 - experts_per_token / num_experts) ** tokens
    return min(local * (1.0 - miss), float(tokens * experts_per_token))


@dataclass(frozen=True, slots=True, kw_only=True)
class EpLayerCost:
    """One step's EP MoE cost, all layers together.

    Attributes:
        tokens: tokens after dispatch (sum over ranks), the rows every rank's experts see.
        expert_ns: per rank, its local experts' time over all layers, ns.
        dispatch_ns: all-gatherv time over all layers, ns.
        combine_ns: reduce-scatterv time over all layers, ns.
        dispatch_bytes: bytes gathered by one layer's dispatch.
        combine_bytes: bytes reduced by one layer's combine.
    """

    tokens: int
    expert_ns: tuple[int, ...]
    dispatch_ns: int
    combine_ns: int
    dispatch_bytes: int
    combine_bytes: int

    @property
    def total_ns(self) -> int:
        """Slowest rank's experts plus both collectives, ns."""
        return max(self.expert_ns) + self.dispatch_ns + self.combine_ns


class EpPricer:
    """Prices the EP MoE layers of a step from a profile's ``moe`` table.

    Args:
        moe_grid: the profile's TP1 ``moe`` table, ``(tokens, active experts) -> ns`` per
            layer (``ProfileCostModel.tp_tables(1).moe``).
        model: the served MoE model.
        ep_size: EP ranks (= DP ranks at TP 1).
        comm: collectives of the DP group (``ranks == ep_size``).

    Attributes:
        sources: ``(collective, source)`` -> calls priced so.
        extrapolated: steps whose expert lookup left the measured grid.
    """

    def __init__(self, *, moe_grid: Callable[[float, float], tuple[float, bool]],
                 model: ModelConfig, ep_size: int,
                 comm: CollectivesModel) -> None:
        self.moe_grid = moe_grid
        self.model = model
        self.ep_size = ep_size
        self.comm = comm
        self.ranges = expert_ranges(model.num_experts, ep_size)
        self.layers = model.num_hidden_layers
        self.sources: Counter[tuple[str, str]] = Counter()
        self.extrapolated = 0
        self._memo: dict[tuple[int, bool], EpLayerCost] = {}

    def full_moe_ns(self, tokens: int) -> int:
        """All experts on one rank at ``tokens`` tokens, all layers, ns: what the TP1 cost
        model put in the step's ``moe`` breakdown (same rounding)."""
        from llmsim.costmodel.profile_model import expected_active_experts

        if tokens <= 0:
            return 0
        m = self.model
        t, _ = self.moe_grid(tokens, expected_active_experts(m.num_experts,
                                                              m.num_experts_per_token, tokens))
        return int(t * self.layers + 0.5)

    def price(self, tokens: int, *, cuda_graph: bool) -> EpLayerCost:
        """EP MoE cost of a step whose ranks hold ``tokens`` tokens in all (after padding)."""
        key = (tokens, cuda_graph)
        hit = self._memo.get(key)
        if hit is not None:
            return hit
        m = self.model
        expert_ns = []
        for _first, local in self.ranges:
            active = expected_local_active(m.num_experts, m.num_experts_per_token, local, tokens)
            if active <= 0:
                expert_ns.append(0)
                continue
            t, ex = self.moe_grid(tokens, active)
            if ex:
                self.extrapolated += 1
            expert_ns.append(int(t * self.layers + 0.5))
        b = m.dtype_bytes
        d_bytes = tokens * (m.hidden_size + m.num_experts) * b
        c_bytes = tokens * m.hidden_size * b
        d = self.comm.price(Collective.ALL_GATHER, d_bytes, cuda_graph=cuda_graph)
        c = self.comm.price(Collective.REDUCE_SCATTER, c_bytes, cuda_graph=cuda_graph)
        self.sources[("ep_dispatch all_gather", d.source)] += 1
        self.sources[("ep_combine reduce_scatter", c.source)] += 1
        hit = self._memo[key] = EpLayerCost(
            tokens=tokens, expert_ns=tuple(expert_ns),
            dispatch_ns=int(d.duration_ns * self.layers + 0.5),
            combine_ns=int(c.duration_ns * self.layers + 0.5),
            dispatch_bytes=d_bytes, combine_bytes=c_bytes)
        return hit
