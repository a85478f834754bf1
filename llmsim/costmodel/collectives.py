"""TP communication cost: a measured collectives table, or a link model.

With tensor parallelism every decoder layer all-reduces its hidden states twice
(after ``o_proj`` and after the FFN; ``decompose.step_ops``), ``tokens x hidden x dtype``
bytes each time.

* **Table** (preferred): an ``all_reduce`` :class:`~llmsim.v1.profile_pb2.OpTable` with axes
  ``bytes`` and ``ranks`` (e.g. imported from Vidur's NCCL measurements), restricted to the
  instance's rank count and, when the table records it, to all ranks in one node
  (``devices_per_node == ranks``). Repeated measurements of one size are averaged.
  Interpolated linearly in bytes; above the largest size, extrapolated linearly through the
  last two sizes (bandwidth-bound regime).
* **Link model** (fallback): a ring all-reduce moves ``2 (p-1)`` chunks of ``bytes / p``
  over the slowest link, each hop paying a latency:
  ``t = 2 (p-1) (latency + bytes / (p * bandwidth))`` (Patarasuk & Yuan, "Bandwidth optimal
  all-reduce algorithms", JPDC 2009; the algorithm NCCL's ring uses).
"""

from __future__ import annotations

from dataclasses import dataclass

from llmsim.costmodel.interp import Grid1D
from llmsim.errors import ProfileError
from llmsim.v1 import profile_pb2 as pb

PCIE5_X16_BYTES_PER_S = 64e9
"""Nominal PCIe 5.0 x16 bandwidth per direction (64 GB/s): the default link of the
RTX PRO 6000 Blackwell Server Edition, which has no NVLink."""

DEFAULT_HOP_LATENCY_NS = 5_000.0
"""Default per-hop latency of a ring step over PCIe (order of NCCL's small-message latency)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class LinkModel:
    """Analytical ring all-reduce over identical links.

    Attributes:
        bandwidth_bytes_per_s: per-direction bandwidth of one link, bytes/s.
        hop_latency_ns: fixed cost of one ring step, ns.
    """

    bandwidth_bytes_per_s: float = PCIE5_X16_BYTES_PER_S
    hop_latency_ns: float = DEFAULT_HOP_LATENCY_NS

    def all_reduce_ns(self, nbytes: float, ranks: int) -> float:
        """Time of one all-reduce of ``nbytes`` over ``ranks`` ranks, ns."""
        if ranks <= 1 or nbytes <= 0:
            return 0.0
        steps = 2 * (ranks - 1)
        return steps * (self.hop_latency_ns + nbytes / ranks / self.bandwidth_bytes_per_s * 1e9)


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


def collective_grid(tables, op: str, ranks: int) -> Grid1D | None:
    """A ``bytes -> ns`` grid of collective ``op`` at ``ranks`` ranks, or None if absent."""
    for table in tables:
        if table.op != op:
            continue
        axes = {a.name: list(a.values) for a in table.axes}
        if "bytes" not in axes or "ranks" not in axes:
            continue
        values = table_values(table)
        idx = [i for i, r in enumerate(axes["ranks"]) if r == ranks]
        if "devices_per_node" in axes:
            local = [i for i in idx if axes["devices_per_node"][i] == ranks]
            idx = local or idx
        if not idx:
            continue
        sums: dict[int, list[float]] = {}
        for i in idx:
            sums.setdefault(axes["bytes"][i], []).append(values[i])
        xs = sorted(sums)
        return Grid1D(xs, [sum(sums[x]) / len(sums[x]) for x in xs])
    return None
