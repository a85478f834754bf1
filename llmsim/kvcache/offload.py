"""KV offload to lower memory tiers: vLLM's native ``OffloadingConnector`` and LMCache.

Mirrors the two backends of vLLM 0.19's ``--kv-offloading-backend`` (facts in
``VLLM_CLUSTER.md`` §6, vLLM paths there):

* **native** (``OffloadingConnector``, ``v1/kv_offload``): offloaded blocks of
  ``block_size x block_size_factor`` tokens (factor 1 by default: 16-token blocks,
  ``cpu/spec.py``). At admission (``get_num_new_matched_tokens``) the scheduler counts the
  consecutive offloaded blocks after the GPU prefix hit; fewer than one block is ignored.
  Loads are **asynchronous**: the request reserves its GPU blocks, waits outside the
  running set (WAITING_FOR_REMOTE_KVS) while the copy runs on a side stream, is promoted by
  the first ``schedule()`` after a step end (or an idle poll) has reported the copy done,
  so it waits at least one step, and other requests keep running. **Stores**: every block
  a scheduled step makes full (prompt and decode), computed at scheduling time
  (``build_connector_meta``), submitted at the start of the **next** step
  (``offloading/worker.py`` ``prepare_store_kv``), copied on a side stream; a block
  already stored is not stored again. Copies in one direction are serialised
  (``SingleDirectionOffloadingHandler``).
* **LMCache** (``LMCacheConnectorV1``): 256-token chunks (``chunk_size``). The lookup
  covers prompt tokens from the start; the load is **synchronous** (``(n, False)``): the
  request is scheduled in the same step and ``start_load_kv`` retrieves before the
  forward, blocking the step. Stores in ``wait_for_save`` at the end of the step, inside
  it: only prompt tokens (``save_decode_cache`` False), only whole chunks
  (``save_unfull_chunk`` False), never twice (``skip_leading_tokens``).

Both: the hit is capped so that at least one token is computed (a full hit recomputes the
last prompt token, vLLM §5.2 and LMCache's ``need_to_allocate -= 1``). Loaded bytes are the
hit tokens beyond the GPU hit times the KV bytes per token over all TP ranks (each rank
copies its own shard over its own link, in parallel, so the time is one rank's bytes over
one link: see :func:`OffloadManager.load_ns`).

Deliberate differences / assumptions (docs/cluster-semantics.md, KV tiers):

* Transfer time = ``latency + bytes / bandwidth`` per tier touched (:mod:`.tiers`); vLLM
  assumes no bandwidth and measures the copies. Concurrent copies of instances sharing a
  pool do not slow each other down.
* A finished request's GPU blocks are freed at once; vLLM's native backend frees them only
  after its pending stores finish (``request_finished`` returns True). On preemption vLLM
  waits for the victim's pending stores; here they continue.
* A block being loaded for one request can be hit by another (vLLM returns "ask again").
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from llmsim.errors import ConfigError
from llmsim.kvcache.tiers import Key, TierPool, transfer_ns

LMCACHE_CHUNK_TOKENS = 256
"""LMCache's default ``chunk_size`` (``lmcache/v1/config.py`` @000620e3, VLLM_CLUSTER.md §6.2)."""

NATIVE_BLOCK_SIZE_FACTOR = 1
"""vLLM's default ``block_size_factor`` of ``CPUOffloadingSpec`` (offloaded block = GPU block)."""


class OffloadBackend(StrEnum):
    """vLLM's ``--kv-offloading-backend``."""

    NATIVE = "native"
    LMCACHE = "lmcache"


@dataclass(frozen=True, slots=True, kw_only=True)
class TierLoad:
    """A prefix hit in the lower tiers for one sequence.

    Attributes:
        num_tokens: tokens credited beyond the GPU hit (capped so one token is computed).
        parts: per pool index (spill order), ``(pool index, credited tokens, bytes)`` read
            from it; bytes are one TP rank's share of the whole blocks copied.
        keys: the offloaded blocks copied, in order (native: a request whose hit includes
            a block being loaded for another waits, vLLM's ``_blocks_being_loaded``).
    """

    num_tokens: int
    parts: tuple[tuple[int, int, int], ...]  # (pool index, tokens, bytes per rank)
    keys: tuple[Key, ...] = ()


@dataclass(slots=True, kw_only=True)
class OffloadStep:
    """The offload work of one scheduled step (``BatchPlan.offload``).

    Attributes:
        loads: native: ``(seq, load)`` whose copies start when the step starts.
        sync_load_ns: LMCache: blocking loads before the forward, ns.
        store_keys: blocks the step makes full that go to the first tier.
    """

    loads: tuple[tuple[Any, TierLoad], ...] = ()
    sync_load_ns: int = 0
    store_keys: tuple[Key, ...] = ()


class OffloadManager:
    """One instance's view of its lower tiers: lookups, copies, stores, statistics.

    Args:
        backend: native or LMCache.
        pools: the pools in spill order (``kv_offload.tiers``).
        gpu_block_size: engine block size, tokens.
        block_tokens: offloaded block (native) or chunk (LMCache) size, tokens; a multiple
            of ``gpu_block_size``.
        kv_bytes_per_token: KV bytes per token on one TP rank.
        tp: TP ranks (pool entries hold every rank's share).
        host_link_bandwidth_bytes_per_s: cap of every copy (the GPU's PCIe link), or None.
        model_tag: keeps models apart in a shared pool.

    Raises:
        ConfigError: ``block_tokens`` is not a positive multiple of ``gpu_block_size``.
    """

    def __init__(self, *, backend: OffloadBackend, pools: tuple[TierPool, ...],
                 gpu_block_size: int, block_tokens: int, kv_bytes_per_token: int, tp: int = 1,
                 host_link_bandwidth_bytes_per_s: int | None = None, model_tag: int = 0) -> None:
        if block_tokens <= 0 or block_tokens % gpu_block_size:
            raise ConfigError(f"offloaded block of {block_tokens} tokens is not a multiple of "
                              f"the engine block ({gpu_block_size} tokens)",
                              field="kv_offload.block_size")
        self.backend = backend
        self.is_async = backend is OffloadBackend.NATIVE
        self.pools = pools
        self.gpu_block_size = gpu_block_size
        self.block_tokens = block_tokens
        self._per_gpu = block_tokens // gpu_block_size
        self.kv_bytes_per_token = kv_bytes_per_token
        self.tp = tp
        self.link_bw = host_link_bandwidth_bytes_per_s
        self.model_tag = model_tag
        self.entry_bytes = block_tokens * kv_bytes_per_token * tp
        self._load_free_ns = 0
        self._store_free_ns = 0
        n = len(pools)
        self.hit_tokens = [0] * n
        self.load_bytes = [0] * n
        self.num_loads = 0
        self.load_ns_total = 0
        self.store_bytes = 0
        self.num_stores = 0
        self.request_hits: dict[int, tuple[int, ...]] = {}  # trace index -> tokens per pool
        self.request_gpu_hits: dict[int, int] = {}
        self.log: list[tuple[int, str]] | None = None  # (ns, event) when a test sets a list
        # (is_store, pool index, bytes of all ranks, start ns, end ns) of every timed copy
        # (async loads, stores) when the energy accumulator sets a list (power/build.py)
        self.copies: list[tuple[bool, int, int, int, int]] | None = None

    # ------------------------------------------------------------------ timing
    def bandwidth(self, pool: TierPool) -> int:
        """Copy bandwidth between this GPU and ``pool``, bytes/s (module doc of .tiers)."""
        bw = pool.spec.bandwidth_bytes_per_s * pool.spec.num_devices
        return bw if self.link_bw is None else min(bw, self.link_bw)

    def load_ns(self, load: TierLoad) -> int:
        """Copy time of ``load``, ns: the sum over the tiers it reads of ``latency +
        bytes / bandwidth`` (one TP rank's bytes; ranks copy in parallel)."""
        total = 0
        for p, _tokens, nbytes in load.parts:
            pool = self.pools[p]
            total += transfer_ns(nbytes, bandwidth_bytes_per_s=self.bandwidth(pool),
                                 latency_ns=pool.spec.latency_ns)
        return total

    def store_ns(self, num_blocks: int) -> int:
        """Copy time of ``num_blocks`` offloaded blocks into the first tier, ns."""
        pool = self.pools[0]
        return transfer_ns(num_blocks * self.block_tokens * self.kv_bytes_per_token,
                           bandwidth_bytes_per_s=self.bandwidth(pool),
                           latency_ns=pool.spec.latency_ns)

    # ------------------------------------------------------------------ lookup
    def advance(self, now_ns: int) -> None:
        """Apply completed stores of every pool up to ``now_ns``."""
        for pool in self.pools:
            pool.advance(now_ns)

    def _key(self, hashes: list[int], k: int) -> Key:
        return (self.model_tag, hashes[(k + 1) * self._per_gpu - 1])

    def lookup(self, seq: Any, gpu_hit_tokens: int) -> TierLoad | None:
        """The lower-tier hit of waiting ``seq`` after its GPU hit (module doc), or None.

        Refreshes the hit entries (LRU). Does not count statistics (:meth:`record`).
        """
        obs = self.block_tokens
        num_tokens = seq.num_tokens if self.is_async else seq.num_prompt
        max_blocks = num_tokens // obs
        start = gpu_hit_tokens // obs if self.is_async else 0
        if max_blocks <= start:
            return None
        hashes = seq.hasher.ensure(max_blocks * self._per_gpu)
        pools = self.pools
        found: list[int] = []
        keys: list[Key] = []
        for k in range(start, max_blocks):
            key = self._key(hashes, k)
            for p, pool in enumerate(pools):
                if pool.contains(key):
                    found.append(p)
                    keys.append(key)
                    break
            else:
                break
        if not found:
            return None
        end = (start + len(found)) * obs
        credited = min(end, num_tokens - 1) - gpu_hit_tokens
        if credited <= 0:
            return None
        cap = num_tokens - 1
        bpt = self.kv_bytes_per_token
        per_pool: dict[int, list[int]] = {}  # pool -> [credited tokens, bytes per rank]
        for i, p in enumerate(found):
            lo = max((start + i) * obs, gpu_hit_tokens)
            hi = (start + i + 1) * obs
            if hi <= lo:
                continue
            acc = per_pool.setdefault(p, [0, 0])
            acc[0] += max(0, min(hi, cap) - lo)
            acc[1] += (hi - lo) * bpt
        for key, p in zip(keys, found, strict=True):
            pools[p].touch(key)
        parts = tuple((p, acc[0], acc[1]) for p, acc in sorted(per_pool.items()))
        return TierLoad(num_tokens=credited, parts=parts, keys=tuple(keys))

    def record(self, index: int, gpu_hit_tokens: int, load: TierLoad | None, *,
               first: bool) -> None:
        """Count a lookup's hits (per tier, and per request on its first admission)."""
        hits = [0] * len(self.pools)
        if load is not None:
            for p, tokens, nbytes in load.parts:
                hits[p] += tokens
                self.hit_tokens[p] += tokens
                self.load_bytes[p] += nbytes * self.tp
            self.num_loads += 1
        if first:
            self.request_hits[index] = tuple(hits)
            self.request_gpu_hits[index] = gpu_hit_tokens

    # ------------------------------------------------------------------ copies
    def issue_load(self, load: TierLoad, at_ns: int) -> int:
        """Start an asynchronous load at ``at_ns`` (after the loads before it); returns
        its completion time, ns."""
        start = max(at_ns, self._load_free_ns)
        ns = self.load_ns(load)
        self.load_ns_total += ns
        self._load_free_ns = start + ns
        if self.copies is not None:
            for p, _tokens, nbytes in load.parts:
                self.copies.append((False, p, nbytes * self.tp, start, start + ns))
        if self.log is not None:
            self.log.append((start, f"load start {load.num_tokens} tokens"))
            self.log.append((start + ns, f"load done {load.num_tokens} tokens"))
        return self._load_free_ns

    def store_keys(self, chunks: tuple[Any, ...]) -> tuple[Key, ...]:
        """Blocks the scheduled ``chunks`` make full that no tier holds yet (native: every
        block; LMCache: prompt chunks only). Advances each sequence's stored count."""
        obs = self.block_tokens
        per = self._per_gpu
        tag = self.model_tag
        out: list[Key] = []
        held = [(pool.entries, pool.pending_keys) for pool in self.pools]
        native = self.is_async
        for seq, n_new, cached, _emits, _epoch in chunks:
            limit = cached + n_new
            if not native and limit > seq.num_prompt:
                limit = seq.num_prompt
            n_full = limit // obs
            lo = seq.num_offloaded_blocks
            if n_full <= lo:
                continue
            hashes = seq.hasher.ensure(n_full * per)
            for k in range(lo, n_full):
                key = (tag, hashes[(k + 1) * per - 1])
                for entries, pending in held:
                    if key in entries or key in pending:
                        break
                else:
                    out.append(key)
            seq.num_offloaded_blocks = n_full
        return tuple(out)

    def submit_stores(self, keys: tuple[Key, ...], at_ns: int, *, blocking: bool) -> int:
        """Copy ``keys`` into the first tier.

        Args:
            keys: blocks to store.
            at_ns: when the copy may start (native: the next step's start; LMCache: the
                step's end, the copy then runs inside the step).
            blocking: LMCache (the step waits) or native (a side stream, serialised).

        Returns:
            The copy time, ns (what a blocking store adds to the step).
        """
        if not keys:
            return 0
        pool = self.pools[0]
        ns = self.store_ns(len(keys))
        if blocking:
            done = at_ns + ns
        else:
            start = max(at_ns, self._store_free_ns)
            done = self._store_free_ns = start + ns
        nbytes = self.entry_bytes
        for key in keys:
            pool.put_later(key, nbytes, done)
        if self.copies is not None:
            self.copies.append((True, 0, len(keys) * nbytes, done - ns, done))
        if self.log is not None:
            self.log.append((done - ns, f"store start {len(keys)} blocks"))
            self.log.append((done, f"store done {len(keys)} blocks"))
        self.num_stores += len(keys)
        self.store_bytes += len(keys) * nbytes
        return ns

    def summary(self) -> dict[str, Any]:
        """Counters for the replay summary."""
        return {"backend": self.backend.value, "block_tokens": self.block_tokens,
                "tiers": [p.label for p in self.pools], "hit_tokens": list(self.hit_tokens),
                "load_bytes": list(self.load_bytes), "num_loads": self.num_loads,
                "store_bytes": self.store_bytes, "num_stored_blocks": self.num_stores}
