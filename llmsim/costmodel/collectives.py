"""TP communication cost: one collectives model per link group, measured tables first.

Which collectives a step runs, and how many bytes each moves, comes from
:func:`llmsim.costmodel.decompose.step_ops` (docs/cluster-semantics.md, "Tensor parallelism"). This module prices one
collective of ``nbytes`` over ``ranks`` GPUs of one node and says *what* priced it.

**Which implementation vLLM runs** (:func:`vllm_all_reduce_impl`; vLLM v0.19.0
``CudaCommunicator.all_reduce`` and ``CustomAllreduce``, docs/cluster-semantics.md, "Tensor parallelism"): the custom
all-reduce when it is enabled, the world size is 2, 4, 6 or 8, the driver reports P2P, the
GPUs are all NVLink-connected unless the world size is 2, the message is a multiple of 16 B
and ``bytes < custom_all_reduce_max_bytes[ranks]`` (8 MiB by default); else torch symmetric
memory where the GPU supports it and ``bytes < symm_mem_max_bytes[ranks]``; else NCCL
(PyNccl). On 2x RTX PRO 6000 that is custom AR below 8 MiB and NCCL above; on RTX 4090
(no P2P) always NCCL, through host memory (SHM transport). Other collectives
(all-gather, reduce-scatter, send/recv, all-to-all) are always NCCL.

**How it is priced**, in this order, the first that covers the collective winning:

1. **Measured table**: a collectives :class:`~llmsim.v1.profile_pb2.OpTable` named after the
   collective with axes ``bytes`` and ``ranks`` (and optionally ``cuda_graph``, 1/0, and
   ``devices_per_node``), restricted to the group's rank count, to the step's execution mode
   when the table records it, and to one node (``devices_per_node == ranks``) when it records
   that. Repeated measurements of one size are averaged. Interpolated linearly in bytes; above
   the largest size extrapolated linearly through the last two (bandwidth-bound); below the
   smallest the first value is held (latency-bound). A table whose ``selection`` attribute
   says it was measured through vLLM's own all-reduce (AIConfigurator) already embodies the
   implementation choice of its host; any other table (Vidur's NCCL runs) is an NCCL
   measurement and the report says so when vLLM would have picked another implementation.
2. **Analytic NCCL-style model** (:class:`NcclModel`): ``t = latency + S f(n) / busbw`` with
   nccl-tests' bus-bandwidth factors (``doc/PERFORMANCE.md``: ``busbw = algbw f(n)``,
   ``algbw = S / t``): all-reduce ``f = 2 (n-1) / n``; all-gather and reduce-scatter
   ``f = (n-1) / n`` with ``S`` the gathered (total) size; send/recv ``f = 1``; all-to-all
   ``f = (n-1) / n``. nccl-tests defines busbw so that it is the same figure for every
   collective on a given link, which is what lets one measured constant price them all.
   Constants come from the link description (``llmsim/hardware/data/<gpu>.yaml``), each
   with its source.
3. **Ring model** (:class:`LinkModel`): the previous default, ``2 (p-1)`` ring steps of
   ``bytes / p`` each paying a hop latency (Patarasuk & Yuan, JPDC 2009). Its default
   constants (64 GB/s, 5 us) are nominal PCIe 5.0 x16 figures, not measurements: it prices
   collectives only when the caller passes it or no link description matches the hardware,
   and the cost model then logs a warning and reports it.

Every priced collective returns a :class:`PricedCollective` naming its source and the
implementation vLLM's rule picks, so a cost model can log and report it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from llmsim.costmodel.interp import Grid1D
from llmsim.errors import ProfileError
from llmsim.hardware.links import LinkKind, LinkSpec
from llmsim.v1 import profile_pb2 as pb


class Collective(StrEnum):
    """Collective operations of a TP / PP / EP group (names as in the profile tables)."""

    ALL_REDUCE = "all_reduce"
    ALL_GATHER = "all_gather"
    REDUCE_SCATTER = "reduce_scatter"
    SEND_RECV = "send_recv"
    ALL_TO_ALL = "all_to_all"


class AllReduceImpl(StrEnum):
    """The all-reduce implementation vLLM runs (docs/cluster-semantics.md, "Tensor parallelism")."""

    CUSTOM = "custom_ar"
    SYMM_MEM = "symm_mem"
    NCCL = "nccl"


CUSTOM_AR_WORLD_SIZES = frozenset({2, 4, 6, 8})
"""World sizes vLLM's custom all-reduce supports (``CustomAllreduce._SUPPORTED_WORLD_SIZES``)."""

CUSTOM_AR_ALIGN_BYTES = 16
"""vLLM's custom all-reduce takes only messages that are a multiple of 16 bytes."""


def bus_factor(collective: Collective, ranks: int) -> float:
    """nccl-tests' ``busbw / algbw`` factor of ``collective`` over ``ranks`` ranks.

    Source: NVIDIA nccl-tests ``doc/PERFORMANCE.md`` (all-reduce ``2(n-1)/n``; all-gather,
    reduce-scatter and all-to-all ``(n-1)/n``; point-to-point 1).
    """
    n = ranks
    if collective is Collective.ALL_REDUCE:
        return 2.0 * (n - 1) / n
    if collective is Collective.SEND_RECV:
        return 1.0
    return (n - 1) / n


def vllm_all_reduce_impl(nbytes: int, ranks: int, link: LinkSpec, *,
                         custom_all_reduce: bool = True) -> AllReduceImpl:
    """The implementation vLLM v0.19 runs for one TP all-reduce (module docstring).

    Args:
        nbytes: message size, bytes.
        ranks: TP world size (one node).
        link: the group's link description.
        custom_all_reduce: False for ``--disable-custom-all-reduce``.
    """
    custom_ok = (custom_all_reduce and ranks in CUSTOM_AR_WORLD_SIZES and link.p2p
                 and (ranks == 2 or link.fully_nvlink))
    if custom_ok and nbytes % CUSTOM_AR_ALIGN_BYTES == 0 and (
            nbytes < link.custom_all_reduce_max_bytes.get(ranks, 0)):
        return AllReduceImpl.CUSTOM
    if nbytes < link.symm_mem_max_bytes.get(ranks, 0):
        return AllReduceImpl.SYMM_MEM
    return AllReduceImpl.NCCL


def impl_of(collective: Collective, nbytes: int, ranks: int, link: LinkSpec | None) -> str:
    """Implementation label of one collective: the all-reduce rule, NCCL otherwise."""
    if collective is Collective.ALL_REDUCE and link is not None:
        return vllm_all_reduce_impl(nbytes, ranks, link).value
    if collective is Collective.ALL_REDUCE:
        return "unknown"
    return AllReduceImpl.NCCL.value


@dataclass(frozen=True, slots=True, kw_only=True)
class PricedCollective:
    """One priced collective.

    Attributes:
        duration_ns: time of one call, ns.
        source: what priced it, e.g. ``"table:aiconfigurator:rtx_pro_6000_server[graph]"``,
            ``"analytic:nccl(RTXPRO6000)"`` or ``"ring:default(unsourced)"``.
        impl: the implementation vLLM runs (``custom_ar``, ``symm_mem``, ``nccl``).
        extrapolated: the lookup left the measured table.
    """

    duration_ns: float
    source: str
    impl: str
    extrapolated: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class NcclModel:
    """Analytic NCCL-style collective: ``latency + bytes x bus_factor / bus bandwidth``.

    Attributes:
        latency_ns: fixed cost of one collective, ns.
        bus_bandwidth_bytes_per_s: nccl-tests bus bandwidth, bytes/s (> 0).
        label: where the constants come from (a link description's name).
    """

    latency_ns: float
    bus_bandwidth_bytes_per_s: float
    label: str = ""

    @classmethod
    def from_link(cls, link: LinkSpec) -> NcclModel:
        """The NCCL constants of a link description (``nccl_latency_ns`` / ``..._per_s``)."""
        return cls(latency_ns=link.nccl_latency_ns,
                   bus_bandwidth_bytes_per_s=link.nccl_bus_bandwidth_bytes_per_s,
                   label=link.name)

    @property
    def source(self) -> str:
        """Source label of every collective this model prices."""
        return f"analytic:nccl({self.label})"

    def time_ns(self, collective: Collective, nbytes: float, ranks: int) -> float:
        """One ``collective`` of ``nbytes`` (total size) over ``ranks`` ranks, ns."""
        if ranks <= 1 or nbytes <= 0:
            return 0.0
        return self.latency_ns + (nbytes * bus_factor(collective, ranks)
                                  / self.bus_bandwidth_bytes_per_s * 1e9)

    def all_reduce_ns(self, nbytes: float, ranks: int) -> float:
        """One all-reduce, ns (the :class:`LinkModel` interface)."""
        return self.time_ns(Collective.ALL_REDUCE, nbytes, ranks)


PCIE5_X16_BYTES_PER_S = 64e9
"""Nominal PCIe 5.0 x16 bandwidth per direction (64 GB/s; PCI-SIG), the ring model default."""

DEFAULT_HOP_LATENCY_NS = 5_000.0
"""Default per-hop latency of the ring model: an order of magnitude, not a measurement."""


@dataclass(frozen=True, slots=True, kw_only=True)
class LinkModel:
    """Analytical ring collectives over identical links (caller-given constants).

    Attributes:
        bandwidth_bytes_per_s: per-direction bandwidth of one link, bytes/s.
        hop_latency_ns: fixed cost of one ring step, ns.
    """

    bandwidth_bytes_per_s: float = PCIE5_X16_BYTES_PER_S
    hop_latency_ns: float = DEFAULT_HOP_LATENCY_NS

    @property
    def source(self) -> str:
        """Source label of every collective this model prices."""
        default = LinkModel()
        tag = "default(unsourced)" if self == default else (
            f"{self.bandwidth_bytes_per_s:.3g}B/s,{self.hop_latency_ns:g}ns")
        return f"ring:{tag}"

    def time_ns(self, collective: Collective, nbytes: float, ranks: int) -> float:
        """Ring ``collective``: ``steps x (latency + chunk / bandwidth)``, ns.

        All-reduce ``2 (p-1)`` steps of ``bytes / p``; all-gather, reduce-scatter and
        all-to-all ``p-1`` steps of ``bytes / p``; send/recv one step of ``bytes``.
        """
        if ranks <= 1 or nbytes <= 0:
            return 0.0
        if collective is Collective.SEND_RECV:
            steps, chunk = 1, nbytes
        else:
            steps = (2 if collective is Collective.ALL_REDUCE else 1) * (ranks - 1)
            chunk = nbytes / ranks
        return steps * (self.hop_latency_ns + chunk / self.bandwidth_bytes_per_s * 1e9)

    def all_reduce_ns(self, nbytes: float, ranks: int) -> float:
        """Time of one all-reduce of ``nbytes`` over ``ranks`` ranks, ns."""
        return self.time_ns(Collective.ALL_REDUCE, nbytes, ranks)


def table_values(table: pb.OpTable) -> list[float]:
    """The latency column a cost model reads: ``mean_ns`` when present, else ``median_ns``.

    The mean is the statistic that adds up correctly over many calls (a step is a sum of
    kernel times), so it is preferred when the source reports it.

    Raises:
        ProfileError: the table has neither column filled for every point.
    """
    n = len(table.axes[0].values) if table.axes else 0
    if n and len(table.mean_ns) == n:
        return list(table.mean_ns)
    if n and len(table.median_ns) == n:
        return list(table.median_ns)
    raise ProfileError(f"table '{table.op}' has no mean_ns/median_ns column for its "
                       f"{n} points", field=f"{table.op}.mean_ns")


def table_label(table: pb.OpTable) -> str:
    """A table's source label: its ``source`` attribute, else ``source_file``, else ``op``."""
    return (table.attributes.get("source") or table.attributes.get("source_file")
            or f"profile:{table.op}")


def collective_grid(tables: Iterable[pb.OpTable], op: str, ranks: int, *,
                    cuda_graph: bool | None = None) -> Grid1D | None:
    """A ``bytes -> ns`` grid of collective ``op`` at ``ranks`` ranks, or None if absent."""
    found = collective_lookup(tables, op, ranks, cuda_graph=cuda_graph)
    return None if found is None else found[0]


def collective_lookup(tables: Iterable[pb.OpTable], op: str, ranks: int, *,
                      cuda_graph: bool | None = None) -> tuple[Grid1D, pb.OpTable] | None:
    """The first table of ``op`` covering ``ranks`` (and the mode, when it records one).

    Args:
        tables: candidate tables, in priority order.
        op: collective name.
        ranks: group size.
        cuda_graph: execution mode of the step; a table with a ``cuda_graph`` axis is
            restricted to it (and skipped when it lacks that mode). ``None`` takes the graph
            rows of such a table.

    Returns:
        ``(bytes -> ns grid, the table)`` or None.
    """
    for table in tables:
        if table.op != op:
            continue
        axes = {a.name: list(a.values) for a in table.axes}
        if "bytes" not in axes or "ranks" not in axes:
            continue
        values = table_values(table)
        idx = [i for i, r in enumerate(axes["ranks"]) if r == ranks]
        if "cuda_graph" in axes:
            want = 0 if cuda_graph is False else 1
            idx = [i for i in idx if axes["cuda_graph"][i] == want]
        if "devices_per_node" in axes:
            local = [i for i in idx if axes["devices_per_node"][i] == ranks]
            idx = local or idx
        if not idx:
            continue
        sums: dict[int, list[float]] = {}
        for i in idx:
            sums.setdefault(axes["bytes"][i], []).append(values[i])
        xs = sorted(sums)
        return Grid1D(xs, [sum(sums[x]) / len(sums[x]) for x in xs]), table
    return None


def measured_through_vllm(table: pb.OpTable) -> bool:
    """True when the table was measured through vLLM's own all-reduce dispatch."""
    return "vllm" in table.attributes.get("selection", "").lower()


class CollectivesModel:
    """The collectives of one link group (one TP group of ``ranks`` GPUs in one node).

    Args:
        ranks: group size.
        tables: measured collective tables, in priority order.
        link: the group's link description (selection rule); None when unknown.
        analytic: the model used where no table covers a collective (:class:`NcclModel` from
            the link description, or a :class:`LinkModel`).
    """

    def __init__(self, *, ranks: int, tables: Iterable[pb.OpTable] = (),
                 link: LinkSpec | None, analytic: NcclModel | LinkModel) -> None:
        self.ranks = ranks
        self.tables = list(tables)
        self.link = link
        self.analytic = analytic
        self._grids: dict[tuple[str, bool], tuple[Grid1D, pb.OpTable] | None] = {}

    def _grid(self, op: str, cuda_graph: bool) -> tuple[Grid1D, pb.OpTable] | None:
        key = (op, cuda_graph)
        if key not in self._grids:
            # send/recv is point-to-point: a pair of ranks whatever the group size
            ranks = 2 if op == Collective.SEND_RECV.value else self.ranks
            self._grids[key] = collective_lookup(self.tables, op, ranks,
                                                 cuda_graph=cuda_graph)
        return self._grids[key]

    def price(self, collective: Collective, nbytes: int, *,
              cuda_graph: bool = True) -> PricedCollective:
        """One ``collective`` of ``nbytes`` bytes (total message size) in this group.

        Args:
            collective: which collective.
            nbytes: bytes of the full tensor (all-reduce: the reduced tensor; all-gather:
                the gathered result; send/recv: the message between one pair of ranks).
            cuda_graph: the step runs inside a captured CUDA graph (selects table rows).
        """
        impl = impl_of(collective, nbytes, self.ranks, self.link)
        if self.ranks <= 1 or nbytes <= 0:
            return PricedCollective(duration_ns=0.0, source="none", impl=impl)
        ranks = 2 if collective is Collective.SEND_RECV else self.ranks
        found = self._grid(collective.value, cuda_graph)
        if found is not None:
            grid, table = found
            t, ex = grid(nbytes)
            mode = ""
            if any(a.name == "cuda_graph" for a in table.axes):
                mode = "[graph]" if cuda_graph else "[eager]"
            source = f"table:{table_label(table)}{mode}"
            if not measured_through_vllm(table) and impl != AllReduceImpl.NCCL.value:
                source += f"(nccl measurement; vLLM runs {impl})"
            return PricedCollective(duration_ns=t, source=source, impl=impl, extrapolated=ex)
        return PricedCollective(duration_ns=self.analytic.time_ns(collective, nbytes, ranks),
                                source=self.analytic.source, impl=impl)

    def coverage(self, collective: Collective, cuda_graph: bool = True) -> str:
        """Human-readable summary of what prices ``collective`` (for logs and reports)."""
        found = self._grid(collective.value, cuda_graph)
        if found is None:
            return f"{self.analytic.source} (no measured table)"
        grid, table = found
        return (f"table:{table_label(table)} ({len(grid.xs)} sizes "
                f"{int(grid.x_min)}-{int(grid.x_max)} B)")

    def rule_summary(self) -> str:
        """The all-reduce implementation rule for this group, in words."""
        link = self.link
        if link is None:
            return "no link description: implementation unknown"
        cap = link.custom_all_reduce_max_bytes.get(self.ranks, 0)
        sym = link.symm_mem_max_bytes.get(self.ranks, 0)
        if not link.p2p:
            return f"{link.name}: no P2P -> NCCL at every size"
        if self.ranks > 2 and not link.fully_nvlink:
            return f"{link.name}: >2 PCIe-only GPUs -> NCCL at every size"
        if self.ranks not in CUSTOM_AR_WORLD_SIZES:
            return f"{link.name}: world size {self.ranks} -> NCCL"
        text = f"{link.name} ({LinkKind(link.link_kind).value}): custom_ar < {cap} B"
        if sym > cap:
            text += f", symm_mem < {sym} B"
        return text + ", nccl above"


class HierarchicalCollectives(CollectivesModel):
    """The collectives of a group spread over several nodes: ``nodes`` nodes of
    ``ranks_per_node`` GPUs each, the node-local part on the node's link, the part between
    nodes on the inter-node network.

    **Model** (hierarchical, two dimensions): ASTRA-Sim's multi-dimensional collectives
    (Rashidi et al., "ASTRA-SIM: Enabling SW/HW Co-Design Exploration for Distributed DL
    Training Platforms", ISPASS 2020, hierarchical all-reduce: reduce-scatter on the
    first dimension, all-reduce on the next, all-gather back), which LLMServingSim runs on
    its per-dimension ``link_bw`` / ``link_latency``. With ``S`` the full tensor, ``g``
    ranks per node and ``N`` nodes:

    * all-gather: inter-node all-gather of ``S / g`` over ``N`` (the ``g`` GPUs of a node
      at once, each on its own share of the network), then intra-node all-gather of
      ``S`` over ``g``;
    * reduce-scatter: intra-node reduce-scatter of ``S`` over ``g``, then inter-node
      reduce-scatter of ``S / g`` over ``N``;
    * all-reduce: intra reduce-scatter (``S``, ``g``) + inter all-reduce (``S / g``,
      ``N``) + intra all-gather (``S``, ``g``);
    * send/recv (one pair on two nodes) and all-to-all: the bottleneck link, i.e. the
      inter-node model at the whole size (all-to-all over ``N x g`` ranks).

    The intra-node stages are priced by the node's :class:`CollectivesModel` (measured
    tables first); the inter-node stages by an :class:`NcclModel` whose bus bandwidth is
    the network bandwidth of one GPU and whose latency is the network's (nccl-tests'
    bus factors). The stages run one after the other (no overlap: an assumption; NCCL's
    multi-node rings pipeline chunks, which this bounds from above).

    Args:
        intra: collectives of one node's ``ranks_per_node`` GPUs.
        inter: the inter-node model (its ``source`` names the network and its source).
        nodes: nodes the group spans (>= 2).
        ranks_per_node: group ranks on each node (>= 1).
    """

    def __init__(self, *, intra: CollectivesModel, inter: NcclModel, nodes: int,
                 ranks_per_node: int) -> None:
        super().__init__(ranks=nodes * ranks_per_node, link=intra.link, analytic=inter)
        self.intra = intra
        self.inter = inter
        self.nodes = nodes
        self.ranks_per_node = ranks_per_node

    def price(self, collective: Collective, nbytes: int, *,
              cuda_graph: bool = True) -> PricedCollective:
        """One ``collective`` of ``nbytes`` bytes (full tensor) over the whole group."""
        g, n = self.ranks_per_node, self.nodes
        impl = AllReduceImpl.NCCL.value  # vLLM's custom all-reduce is single-node only
        if nbytes <= 0:
            return PricedCollective(duration_ns=0.0, source="none", impl=impl)
        share = nbytes / g
        parts: list[PricedCollective] = []
        if collective is Collective.ALL_GATHER:
            inter_ns = self.inter.time_ns(Collective.ALL_GATHER, share, n)
            parts.append(self.intra.price(Collective.ALL_GATHER, nbytes, cuda_graph=cuda_graph))
        elif collective is Collective.REDUCE_SCATTER:
            inter_ns = self.inter.time_ns(Collective.REDUCE_SCATTER, share, n)
            parts.append(self.intra.price(Collective.REDUCE_SCATTER, nbytes,
                                          cuda_graph=cuda_graph))
        elif collective is Collective.ALL_REDUCE:
            inter_ns = self.inter.time_ns(Collective.ALL_REDUCE, share, n)
            parts.append(self.intra.price(Collective.REDUCE_SCATTER, nbytes,
                                          cuda_graph=cuda_graph))
            parts.append(self.intra.price(Collective.ALL_GATHER, nbytes,
                                          cuda_graph=cuda_graph))
        else:  # send/recv, all-to-all: the slower path sets it
            ranks = 2 if collective is Collective.SEND_RECV else self.ranks
            inter_ns = self.inter.time_ns(collective, nbytes, ranks)
        intra = "+".join(dict.fromkeys(p.source for p in parts if p.source != "none"))
        source = f"hierarchical[{self.nodes}x{g}](inter:{self.inter.source}" + (
            f", intra:{intra})" if intra else ")")
        return PricedCollective(duration_ns=inter_ns + sum(p.duration_ns for p in parts),
                                source=source, impl=impl,
                                extrapolated=any(p.extrapolated for p in parts))

    def coverage(self, collective: Collective, cuda_graph: bool = True) -> str:
        """What prices ``collective`` (for logs and reports)."""
        return (f"hierarchical over {self.nodes} nodes x {self.ranks_per_node}: inter "
                f"{self.inter.source}, intra {self.intra.coverage(collective, cuda_graph)}")

    def rule_summary(self) -> str:
        """The implementation rule, in words."""
        return (f"{self.nodes} nodes x {self.ranks_per_node} GPUs: NCCL across nodes "
                f"({self.inter.source})")


def link_groups(specs: Mapping[int, CollectivesModel]) -> str:
    """One line per group size: its rule (for logs)."""
    return "; ".join(f"tp{n}: {m.rule_summary()}" for n, m in sorted(specs.items()))
