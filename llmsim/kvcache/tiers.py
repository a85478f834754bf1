"""Memory tiers below the GPU: CPU DRAM, CXL memory, disk, each a pool of offloaded KV blocks.

A tier (:class:`TierSpec`) has a capacity, a bandwidth and a latency, from the experiment's
``memory_tiers`` section (LLMServingSim's ``cpu_mem`` / ``cxl_mem``: ``mem_size``,
``mem_bw``, ``mem_latency``). A :class:`TierPool` is one such memory holding offloaded KV
blocks, keyed by the chained block hash of the last GPU block the offloaded block covers
(every tier and the GPU therefore share one key space, as in vLLM's ``OffloadingConnector``
and LLMServingSim's ``TieredKVCacheManager``). A pool may be shared: per node (CPU memory),
across nodes (a CXL pool), or private to one instance; the experiment's ``shared`` field
says which, and :mod:`llmsim.replay` builds one pool per scope.

Pool semantics (stated assumptions where vLLM has no counterpart):

* LRU over entries, capacity in bytes (an entry costs the offloaded block's KV bytes over
  all TP ranks: vLLM sizes its CPU pool as ``cpu_bytes // (page_size x kv tensors x
  world_size x block factor)``, ``v1/kv_offload/cpu/spec.py``). A lookup hit refreshes the
  entry (vLLM's ``lru`` policy ``touch``).
* Writes are write-through into the first tier of the spill order; an entry evicted from
  tier ``k`` moves to tier ``k + 1`` (LLMServingSim's victim tiers, CPU then CXL); an entry
  evicted from the last tier is dropped. Moves between tiers do not touch the GPU and are
  not charged to any step (assumption: they run on the host, off the critical path).
* A store becomes visible when its copy ends (``pending`` entries, applied in completion
  order by :meth:`TierPool.advance`). A shared pool keeps one clock, the latest time any
  engine advanced it to: with async scheduling an engine plans (and looks up) at its next
  step's start, which may be ahead of the loop, so another engine may see a store up to
  one step early.
* Bytes placed there by weight offload are reserved (``reserved_bytes``) and never evicted.

Transfer time of ``n`` bytes between the GPU and a tier (:func:`transfer_ns`):
``latency_ns + ceil(n x 10^9 / bandwidth)``, bandwidth = ``min(tier bandwidth x devices,
host link bandwidth)`` (the copy crosses the GPU's PCIe link, whose one-direction figure is
AIConfigurator's ``node.pcie_bw``, e.g. ``systems/rtx_pro_6000_server.yaml`` 64 GB/s for PCIe
Gen5 x16). KV blocks are striped over a tier's devices (assumption: LLMServingSim's CXL
page says four devices "approximate 4 x 60 GB/s aggregate").
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from dataclasses import dataclass
from enum import StrEnum

from llmsim.errors import ConfigError, InvariantError

NS_PER_S = 1_000_000_000


class TierKind(StrEnum):
    """What a tier is made of (reports only; timing comes from its figures)."""

    DRAM = "dram"
    CXL = "cxl"
    DISK = "disk"


class PoolScope(StrEnum):
    """Who shares one pool of a tier."""

    INSTANCE = "instance"  # one pool per engine
    NODE = "node"          # one per cluster node (all engines without a cluster)
    CLUSTER = "cluster"    # one for every engine


@dataclass(frozen=True, slots=True, kw_only=True)
class TierSpec:
    """One memory tier.

    Attributes:
        name: label used by ``kv_offload.tiers`` and weight placements (``cpu``, ``cxl``).
        kind: DRAM, CXL or disk.
        capacity_bytes: bytes of one device.
        bandwidth_bytes_per_s: copy bandwidth of one device, bytes/s (> 0).
        latency_ns: fixed cost of one transfer, ns.
        num_devices: devices of this tier (``cxl:0`` .. ``cxl:N-1``).
        shared: who shares one pool.
    """

    name: str
    kind: TierKind
    capacity_bytes: int
    bandwidth_bytes_per_s: int
    latency_ns: int
    num_devices: int = 1
    shared: PoolScope = PoolScope.NODE

    def __post_init__(self) -> None:
        if self.bandwidth_bytes_per_s <= 0 or self.capacity_bytes < 0 or self.latency_ns < 0:
            raise ConfigError("a tier needs capacity >= 0, bandwidth > 0 and latency >= 0",
                              field=f"memory_tiers.{self.name}")


def transfer_ns(nbytes: int, *, bandwidth_bytes_per_s: int, latency_ns: int) -> int:
    """Time of one copy of ``nbytes`` bytes, ns: ``latency + ceil(nbytes x 1e9 / bw)``
    (0 for 0 bytes)."""
    if nbytes <= 0:
        return 0
    return latency_ns + -(-nbytes * NS_PER_S // bandwidth_bytes_per_s)


Key = tuple[int, int]
"""A pool entry: ``(model tag, chained block hash)``; the tag keeps models apart in a
shared pool."""


class TierPool:
    """One memory of a tier holding offloaded KV blocks (see the module doc).

    Args:
        spec: the tier.
        label: pool name for reports (``cpu@n0``).
        lower: the pool evictions move to (next tier of the spill order), or None.

    Attributes:
        used_bytes: bytes of KV entries.
        reserved_bytes: bytes taken by offloaded weights.
        entries: key -> bytes of the held entries, least recently used first.
        pending_keys: keys whose store is in flight.
        peak_used_bytes: largest ``used_bytes`` seen.
        num_stored, num_evicted, num_demoted, num_replaced: entries written, dropped,
            moved down, dropped for a newer copy in a higher tier.
    """

    __slots__ = ("spec", "label", "lower", "used_bytes", "reserved_bytes", "peak_used_bytes",
                 "entries", "_pending", "pending_keys", "_seq", "_now_ns", "num_stored",
                 "num_evicted", "num_demoted", "num_replaced")

    def __init__(self, spec: TierSpec, label: str, lower: TierPool | None = None) -> None:
        self.spec = spec
        self.label = label
        self.lower = lower
        self.used_bytes = 0
        self.reserved_bytes = 0
        self.peak_used_bytes = 0
        self.entries: OrderedDict[Key, int] = OrderedDict()  # LRU first
        self._pending: list[tuple[int, int, Key, int]] = []  # (done_ns, seq, key, bytes)
        self.pending_keys: set[Key] = set()
        self._seq = 0
        self._now_ns = 0
        self.num_stored = 0
        self.num_evicted = 0
        self.num_demoted = 0
        self.num_replaced = 0

    @property
    def capacity_bytes(self) -> int:
        """Bytes all devices of the pool hold."""
        return self.spec.capacity_bytes * self.spec.num_devices

    @property
    def num_entries(self) -> int:
        """KV entries held."""
        return len(self.entries)

    def reserve(self, nbytes: int, *, what: str) -> None:
        """Set ``nbytes`` aside for offloaded weights.

        Raises:
            ConfigError: the pool cannot hold them (names the pool and ``what``).
        """
        if self.reserved_bytes + nbytes > self.capacity_bytes:
            raise ConfigError(f"{what}: {nbytes} bytes do not fit in tier {self.label} "
                              f"({self.capacity_bytes - self.reserved_bytes} bytes free)",
                              field="weight_offload")
        self.reserved_bytes += nbytes

    def advance(self, now_ns: int) -> None:
        """Apply the stores that completed by ``now_ns`` (in completion order)."""
        if now_ns > self._now_ns:
            self._now_ns = now_ns
        pending = self._pending
        if not pending or pending[0][0] > now_ns:
            return
        while pending and pending[0][0] <= now_ns:
            _done, _s, key, nbytes = heapq.heappop(pending)
            self.pending_keys.discard(key)
            self.put(key, nbytes)

    def contains(self, key: Key) -> bool:
        """True when ``key`` is held (completed stores only)."""
        return key in self.entries

    def knows(self, key: Key) -> bool:
        """True when ``key`` is held or a store of it is in flight (no second store)."""
        return key in self.entries or key in self.pending_keys

    def touch(self, key: Key) -> None:
        """Mark ``key`` most recently used."""
        self.entries.move_to_end(key)

    def put_later(self, key: Key, nbytes: int, done_ns: int) -> None:
        """Store ``key`` when its copy completes at ``done_ns``."""
        if self.knows(key):
            return
        if done_ns <= self._now_ns:
            self.put(key, nbytes)
            return
        self._seq += 1
        heapq.heappush(self._pending, (done_ns, self._seq, key, nbytes))
        self.pending_keys.add(key)

    def put(self, key: Key, nbytes: int) -> None:
        """Store ``key`` now (most recently used), evicting LRU entries to the lower tier;
        a copy of ``key`` in a lower tier is dropped (a key lives in one tier).

        An entry larger than the free capacity is not stored (nor moved down).

        Raises:
            InvariantError: negative sizes.
        """
        if nbytes < 0:
            raise InvariantError(f"tier {self.label}: entry of {nbytes} bytes")
        entries = self.entries
        if key in entries:
            entries.move_to_end(key)
            return
        room = self.capacity_bytes - self.reserved_bytes
        if nbytes > room:
            return
        lower = self.lower
        while lower is not None:  # a key lives in one tier: a newer copy replaces a lower one
            lower.remove(key)
            lower = lower.lower
        while self.used_bytes + nbytes > room:
            old, old_bytes = entries.popitem(last=False)
            self.used_bytes -= old_bytes
            if self.lower is not None:
                self.num_demoted += 1
                self.lower.put(old, old_bytes)
            else:
                self.num_evicted += 1
        entries[key] = nbytes
        self.used_bytes += nbytes
        self.num_stored += 1
        if self.used_bytes > self.peak_used_bytes:
            self.peak_used_bytes = self.used_bytes

    def remove(self, key: Key) -> None:
        """Drop ``key`` if held (a newer copy went to a higher tier)."""
        nbytes = self.entries.pop(key, None)
        if nbytes is not None:
            self.used_bytes -= nbytes
            self.num_replaced += 1
