"""KV-cache manager: the scheduler's only interface to KV blocks.

Mirrors vLLM V1's ``KVCacheManager`` (0.19): ``get_computed_blocks`` looks up the longest run
of cached full blocks from the start of a sequence (capped so that at least one token is
still computed), ``allocate_slots`` adds the blocks a step needs (or refuses, leaving state
unchanged) and marks newly full blocks cached, ``free`` releases a sequence's blocks
last-block-first.

Deliberate differences from vLLM 0.19:

* One KV-cache group (full attention in every layer): no sliding-window or hybrid
  (Mamba, local attention) managers, no per-group block tables.
* Prefix-cache lookups happen only for waiting sequences with no computed tokens (as in
  vLLM) and are counted once per admission in :attr:`query_tokens` / :attr:`hit_tokens`.
* Blocks are cached when a step makes them full, including the block completed by the
  token sampled in the previous step; vLLM with async scheduling caches at most up to the
  tokens whose ids are known, so the block completed by a placeholder token is cached one
  step later there.
* No KV-cache events, no ``num_lookahead_tokens`` (no speculative
  decoding). Offloading to lower tiers is :mod:`llmsim.kvcache.offload`.

A *sequence* here is any object with the attributes ``blocks`` (list of block ids),
``num_computed`` (tokens whose KV is computed or scheduled), ``num_cached_blocks`` (leading
blocks already registered in the prefix cache), ``hasher`` (a
:class:`~llmsim.kvcache.hashing.BlockHasher`) and ``num_tokens`` (tokens known so far:
prompt + generated, including tokens being generated). The scheduler's ``SeqState`` is one.
"""

from __future__ import annotations

from typing import Any

from llmsim.kvcache.block_pool import BlockPool


class KVCacheManager:
    """Paged KV cache with optional prefix caching.

    Args:
        num_gpu_blocks: pool size including vLLM's reserved null block.
        block_size: tokens per block.
        enable_prefix_caching: reuse cached full blocks across sequences.

    Attributes:
        pool: the block pool.
        query_tokens: tokens looked up in the prefix cache (vLLM's "queries").
        hit_tokens: tokens found there ("hits").
    """

    __slots__ = ("pool", "block_size", "enable_prefix_caching", "query_tokens", "hit_tokens")

    def __init__(self, num_gpu_blocks: int, block_size: int, enable_prefix_caching: bool) -> None:
        self.pool = BlockPool(num_gpu_blocks)
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self.query_tokens = 0
        self.hit_tokens = 0

    def get_computed_blocks(self, seq: Any) -> list[int]:
        """Cached blocks covering the longest cached prefix of ``seq``.

        The hit is capped at ``num_tokens - 1`` tokens (one token must be computed to
        produce logits). Does not change state; the caller passes the result to
        :meth:`allocate_slots` and then calls :meth:`record_lookup`.
        """
        if not self.enable_prefix_caching:
            return []
        max_blocks = (seq.num_tokens - 1) // self.block_size
        if max_blocks <= 0:
            return []
        hashes = seq.hasher.ensure(max_blocks)
        lookup = self.pool.lookup
        hits: list[int] = []
        for i in range(max_blocks):
            b = lookup(hashes[i])
            if b is None:
                break
            hits.append(b)
        return hits

    def record_lookup(self, num_tokens: int, num_hit_tokens: int) -> None:
        """Count a prefix-cache lookup for the hit-rate statistics."""
        if self.enable_prefix_caching:
            self.query_tokens += num_tokens
            self.hit_tokens += num_hit_tokens

    def blocks_needed(self, seq: Any, num_tokens: int, computed: list[int]) -> int:
        """Free blocks an allocation covering ``num_tokens`` tokens of ``seq`` would take.

        Counts new blocks plus cache hits that currently sit on the free list (taking
        them removes them from it), as vLLM's ``get_num_blocks_to_allocate`` does.
        """
        bs = self.block_size
        n = (num_tokens + bs - 1) // bs - len(seq.blocks) - len(computed)
        if computed:
            ref = self.pool.ref_cnt
            n += sum(1 for b in computed if ref[b] == 0)
        return n

    def allocate_slots(self, seq: Any, num_new_tokens: int,
                       computed: list[int] | None = None, *,
                       delay_cache_blocks: bool = False) -> bool:
        """Give ``seq`` blocks for ``num_new_tokens`` more tokens after its computed ones.

        Args:
            seq: the sequence; ``seq.num_computed`` excludes the hits in ``computed``.
            num_new_tokens: tokens to compute in this step.
            computed: prefix-cache hits from :meth:`get_computed_blocks` (waiting
                sequences only).
            delay_cache_blocks: do not register the newly full blocks in the prefix cache
                (vLLM's ``delay_cache_blocks``: their KV arrives later, by an asynchronous
                load; :meth:`cache_blocks` registers them when it has).

        Returns:
            False (state untouched) when the pool has too few free blocks.
        """
        bs = self.block_size
        pool = self.pool
        blocks = seq.blocks
        if computed:
            n_hit = len(computed)
            total = seq.num_computed + n_hit * bs + num_new_tokens
            n_new = (total + bs - 1) // bs - len(blocks) - n_hit
            ref = pool.ref_cnt
            need = n_new + sum(1 for b in computed if ref[b] == 0)
            if need > pool.num_free_blocks:
                return False
            pool.touch(computed)
            blocks.extend(computed)
            seq.num_cached_blocks = len(blocks)
        else:
            total = seq.num_computed + num_new_tokens
            n_new = (total + bs - 1) // bs - len(blocks)
            if n_new > pool.num_free_blocks:
                return False
        if n_new == 1:
            blocks.append(pool.allocate_one())
        elif n_new > 0:
            blocks.extend(pool.allocate(n_new))
        if self.enable_prefix_caching and not delay_cache_blocks:
            n_full = total // bs
            if n_full > seq.num_cached_blocks:
                self._cache_full_blocks(seq, n_full)
        return True

    def cache_blocks(self, seq: Any, num_tokens: int) -> None:
        """Register ``seq``'s full blocks among its first ``num_tokens`` tokens in the prefix
        cache (after an asynchronous load, see ``delay_cache_blocks``)."""
        if self.enable_prefix_caching:
            n_full = num_tokens // self.block_size
            if n_full > seq.num_cached_blocks:
                self._cache_full_blocks(seq, n_full)

    def append_slot(self, seq: Any, total: int) -> bool:
        """:meth:`allocate_slots` of one token (``seq.num_computed == total - 1``), no hits:
        the decode path. Same result, fewer steps.

        Returns:
            False (state untouched) when a new block is needed and none is free.
        """
        bs = self.block_size
        blocks = seq.blocks
        if total > len(blocks) * bs:
            pool = self.pool
            if not pool.num_free_blocks:
                return False
            blocks.append(pool.allocate_one())
        if self.enable_prefix_caching:
            n_full = total // bs
            if n_full > seq.num_cached_blocks:
                self._cache_full_blocks(seq, n_full)
        return True

    def _cache_full_blocks(self, seq: Any, n_full: int) -> None:
        """Register ``seq``'s blocks ``num_cached_blocks .. n_full - 1`` in the prefix cache
        (:meth:`BlockPool.cache`, inlined on the pool's ``block_hash`` /
        ``block_of_hash``: a block already carrying a hash, or a hash already held by
        another block, is left alone)."""
        lo = seq.num_cached_blocks
        hashes = seq.hasher.ensure(n_full)
        pool = self.pool
        block_hash, cached = pool.block_hash, pool.block_of_hash
        if n_full - lo == 1:
            pairs: Any = ((seq.blocks[lo], hashes[lo]),)
        else:
            pairs = zip(seq.blocks[lo:n_full], hashes[lo:n_full], strict=True)
        for b, h in pairs:
            if block_hash[b] is None and h not in cached:
                block_hash[b] = h
                cached[h] = b
        seq.num_cached_blocks = n_full

    def free(self, seq: Any) -> None:
        """Release all of ``seq``'s blocks, last block first (its prefix stays longest)."""
        blocks = seq.blocks
        if blocks:
            blocks.reverse()
            self.pool.free(blocks)
        seq.blocks = []
        seq.num_cached_blocks = 0

    def usage(self) -> float:
        """KV usage fraction in [0, 1]."""
        return self.pool.usage()
