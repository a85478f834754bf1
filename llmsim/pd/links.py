"""KV transfers between instances over a modelled link, with contention.

A transfer of ``S`` bytes takes ``latency + S / bandwidth`` on an idle link
(``p2p_latency_ns``, ``p2p_bandwidth_bytes_per_s`` of the node's link description in
``llmsim/hardware/data/``, each with its source).

**Contention: serialized, first come first served, per GPU port** (an assumption, stated in
docs/cluster-semantics.md). Every instance has an egress and an ingress port (its GPUs'
links to the PCIe switch or NVSwitch; a TP instance's ranks move their shares in parallel,
so the instance counts as one port each way). A transfer from ``src`` to ``dst`` occupies
``src``'s egress and ``dst``'s ingress from ``max(ready, egress free, ingress free)`` until
it ends. Why serialize and not share bandwidth fairly: both keep each port busy for the same
total time, and the last transfer of a burst ends at the same time; serializing gives every
transfer its end time when it is issued (one event each, never rescheduled), and it is
what a queue of NIXL READs on one port does when each saturates the link. Fair sharing
would end the earlier transfers of a burst later and the later ones earlier.

The alternative, ``link_sharing: fair_share`` (:class:`FairSharePorts`, NIXL pulls only):
every transfer whose bytes are in flight gets ``bandwidth / n`` of the busier of its two
ports (``n`` transfers using it; a simple bottleneck split, not a max-min fair allocation
over the whole topology), re-divided whenever a transfer's bytes start or end; its fixed
``latency`` is added after its bytes are through and holds no bandwidth.

Bytes of a transfer (:func:`kv_transfer_bytes`): the KV of the moved tokens on one rank of
the side with fewer TP ranks (that side's ports carry everything): ``tokens x`` the model's
KV bytes per token at ``min(tp_prefill, tp_decode)``, in whole KV blocks for a pull (NIXL
reads whole blocks).
"""

from __future__ import annotations

from dataclasses import dataclass

from llmsim.errors import ConfigError
from llmsim.hardware.links import LinkSpec

__all__ = ["FairSharePorts", "KVLink", "LinkPorts", "TransferSlot", "kv_transfer_bytes"]

NS_PER_S = 1_000_000_000


@dataclass(frozen=True, slots=True, kw_only=True)
class KVLink:
    """Point-to-point KV transfer cost between two instances of one node.

    Attributes:
        bandwidth_bytes_per_s: per direction, bytes/s (> 0).
        latency_ns: fixed cost of one transfer, ns (>= 0).
        source: where the figures come from (link file and its cited sources).
    """

    bandwidth_bytes_per_s: float
    latency_ns: float
    source: str

    @classmethod
    def from_spec(cls, spec: LinkSpec) -> KVLink:
        """The P2P figures of a link description.

        Raises:
            ConfigError: the description has no sourced P2P figures ("not supported
                yet", naming the file).
        """
        if spec.p2p_bandwidth_bytes_per_s <= 0:
            raise ConfigError(f"not supported yet: a KV transfer over link {spec.name!r}: "
                              f"{spec.path} gives no sourced p2p_bandwidth_bytes_per_s / "
                              "p2p_latency_ns", field="kv_transfer_config.link")
        src = (f"{spec.name} ({spec.path}): p2p_bandwidth_bytes_per_s "
               f"{spec.p2p_bandwidth_bytes_per_s:.4g} from "
               f"{spec.sources.get('p2p_bandwidth_bytes_per_s', '?')}; p2p_latency_ns "
               f"{spec.p2p_latency_ns:.4g} from {spec.sources.get('p2p_latency_ns', '?')}")
        return cls(bandwidth_bytes_per_s=spec.p2p_bandwidth_bytes_per_s,
                   latency_ns=spec.p2p_latency_ns, source=src)

    def duration_ns(self, nbytes: int, *, messages: int = 1) -> int:
        """Time of ``nbytes`` sent as ``messages`` transfers on an idle link, ns
        (``messages x latency + bytes / bandwidth``, rounded up)."""
        t = messages * self.latency_ns + nbytes * NS_PER_S / self.bandwidth_bytes_per_s
        return int(-(-t // 1))


def kv_transfer_bytes(num_tokens: int, kv_bytes_per_token_min_tp: int, *,
                      block_size: int = 0) -> int:
    """Bytes one port moves for ``num_tokens`` tokens of KV (module doc).

    Args:
        num_tokens: tokens whose KV moves.
        kv_bytes_per_token_min_tp: KV bytes per token on one rank at ``min(tp_P, tp_D)``.
        block_size: > 0: round up to whole blocks of this many tokens (a NIXL pull).
    """
    if block_size > 0:
        num_tokens = -(-num_tokens // block_size) * block_size
    return num_tokens * kv_bytes_per_token_min_tp


@dataclass(frozen=True, slots=True, kw_only=True)
class TransferSlot:
    """When one transfer occupies its ports.

    Attributes:
        ready_ns: when it could have started (data ready, ports free or not), ns.
        start_ns: when it starts (ports free), ns.
        end_ns: when it ends, ns.
    """

    ready_ns: int
    start_ns: int
    end_ns: int


class LinkPorts:
    """The egress and ingress port of every instance: when each is free (module doc).

    Args:
        num_instances: instances of the simulation.
    """

    __slots__ = ("egress_free_ns", "ingress_free_ns", "busy_ns", "num_transfers",
                 "num_queued")

    def __init__(self, num_instances: int) -> None:
        self.egress_free_ns = [0] * num_instances
        self.ingress_free_ns = [0] * num_instances
        self.busy_ns = 0
        self.num_transfers = 0
        self.num_queued = 0  # transfers that waited for a busy port

    def reserve(self, src: int, dst: int, ready_ns: int, duration_ns: int) -> TransferSlot:
        """Book ``src -> dst`` for ``duration_ns`` from the first moment both ports are
        free at or after ``ready_ns``."""
        start = max(ready_ns, self.egress_free_ns[src], self.ingress_free_ns[dst])
        end = start + duration_ns
        self.egress_free_ns[src] = end
        self.ingress_free_ns[dst] = end
        self.busy_ns += duration_ns
        self.num_transfers += 1
        if start > ready_ns:
            self.num_queued += 1
        return TransferSlot(ready_ns=ready_ns, start_ns=start, end_ns=end)

    def reserve_pipelined(self, src: int, dst: int, *, start_ns: int, compute_ns: int,
                          layers: int, send_ns: int) -> TransferSlot:
        """Book a layer-wise push that overlaps a forward pass (P2pNccl ``save_kv_layer``).

        Layer ``l``'s KV is ready at ``start + (l + 1) x compute / layers``; its sends take
        ``send_ns`` and go one after another on the ports, so the last one ends at
        ``max(free + L x send, start + compute / L + L x send, start + compute + send)``
        with ``free`` the later of the two ports' free times (the maximum of a linear
        recurrence ``t_l = max(t_{l-1}, ready_l) + send`` over its end points).
        """
        free = max(self.egress_free_ns[src], self.ingress_free_ns[dst])
        n = layers
        end = max(free + n * send_ns, start_ns + compute_ns // n + n * send_ns,
                  start_ns + compute_ns + send_ns)
        first = max(free, start_ns + compute_ns // n)
        self.egress_free_ns[src] = end
        self.ingress_free_ns[dst] = end
        self.busy_ns += n * send_ns
        self.num_transfers += 1
        if free > start_ns + compute_ns // n:
            self.num_queued += 1
        return TransferSlot(ready_ns=start_ns + compute_ns // n, start_ns=first, end_ns=end)


class FairSharePorts:
    """Transfers sharing the ports' bandwidth (module doc, ``fair_share``).

    The owner calls :meth:`add` when a transfer starts and :meth:`next_event_ns` for when
    the next one's bytes are through, then :meth:`advance` at that time, which returns the
    transfers whose bytes are through (they end ``link.latency_ns`` later). Every change
    bumps :attr:`version`, so an event scheduled for an older state can be told stale.

    Args:
        num_instances: instances of the simulation.
        link: bandwidth and latency.
    """

    __slots__ = ("link", "version", "_active", "_last_ns", "_egress", "_ingress",
                 "busy_ns", "num_transfers", "num_queued")

    def __init__(self, num_instances: int, link: KVLink) -> None:
        self.link = link
        self.version = 0
        self._active: dict[int, list[float]] = {}  # key -> [src, dst, remaining bytes]
        self._last_ns = 0
        self._egress = [0] * num_instances
        self._ingress = [0] * num_instances
        self.busy_ns = 0  # not tracked per port under sharing (reported as 0)
        self.num_transfers = 0
        self.num_queued = 0  # transfers that started while their ports were in use

    def _rate(self, src: int, dst: int) -> float:
        """Bytes per ns of one transfer ``src -> dst`` now."""
        n = max(self._egress[src], self._ingress[dst])
        return self.link.bandwidth_bytes_per_s / NS_PER_S / n

    def _progress(self, now_ns: int) -> None:
        dt = now_ns - self._last_ns
        if dt > 0:
            for entry in self._active.values():
                entry[2] -= self._rate(int(entry[0]), int(entry[1])) * dt
        self._last_ns = now_ns

    def add(self, key: int, src: int, dst: int, nbytes: int, now_ns: int) -> None:
        """A transfer's bytes start flowing at ``now_ns``."""
        self._progress(now_ns)
        if self._egress[src] or self._ingress[dst]:
            self.num_queued += 1
        self._active[key] = [float(src), float(dst), float(nbytes)]
        self._egress[src] += 1
        self._ingress[dst] += 1
        self.num_transfers += 1
        self.version += 1

    def next_event_ns(self) -> int | None:
        """When the next transfer's bytes are through at the current rates (ns, rounded
        up), or None when none is in flight."""
        best: float | None = None
        for src, dst, rem in self._active.values():
            t = self._last_ns + max(0.0, rem) / self._rate(int(src), int(dst))
            if best is None or t < best:
                best = t
        return None if best is None else int(-(-best // 1))

    def advance(self, now_ns: int) -> list[int]:
        """Progress every transfer to ``now_ns``; those whose bytes are through (within
        a ns of their rate) leave the ports and are returned (keys, insertion order)."""
        self._progress(now_ns)
        done = [k for k, (src, dst, rem) in self._active.items()
                if rem <= self._rate(int(src), int(dst))]
        for k in done:
            src, dst, _rem = self._active.pop(k)
            self._egress[int(src)] -= 1
            self._ingress[int(dst)] -= 1
        if done:
            self.version += 1
        return done
