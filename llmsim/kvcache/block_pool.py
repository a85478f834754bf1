"""The GPU KV block pool: reference counts, an LRU free list and the prefix-cache map.

Mirrors vLLM V1's ``BlockPool`` (0.19):

* Block 0 is the *null block*, reserved and never handed out, so a pool of
  ``num_gpu_blocks`` has ``num_gpu_blocks - 1`` usable blocks, and KV usage is
  ``1 - free / (num_gpu_blocks - 1)``.
* Free blocks sit in one LRU list. New blocks are taken from its head (least recently
  freed); taking a block that still carries a prefix-cache hash drops that hash (eviction).
  Freed blocks go to the tail, in the order the caller gives (a request frees its blocks
  last-block-first, so its prefix survives longest).
* A cache hit on a free block (ref count 0) takes it off the free list; a hit on a block in
  use only raises its ref count.

Deliberate difference: vLLM may map one hash to several blocks (two requests computing the
same content concurrently); here the first block cached under a hash keeps it and the later
duplicate stays uncached, so after the first is evicted the content misses once more.

All operations are O(1) per block touched. The free list is a FIFO queue with lazy
deletion: a cache hit on a free block leaves its queue entry in place and counts it as
stale (``_stale[b]``); allocation skips stale entries. Since a block's only live entry is
its newest one, the oldest entry of a block with stale entries is always stale. The queue
is compacted when stale entries make up more than half of it.
"""

from __future__ import annotations

from collections import deque

from llmsim.errors import ConfigError, InvariantError
from llmsim.memory.host import BYTES_PER_KV_BLOCK, check_host_memory

NULL_BLOCK = 0


class BlockPool:
    """A fixed set of KV blocks.

    Args:
        num_gpu_blocks: blocks in the pool including the null block (>= 2).

    Raises:
        ConfigError: ``num_gpu_blocks`` is not an integer, or its tables
            (:data:`~llmsim.memory.host.BYTES_PER_KV_BLOCK` bytes a block) would not fit in
            the host's available memory (checked before allocating).
        InvariantError: fewer than 2 blocks.

    Attributes:
        ref_cnt: per block, how many sequences hold it.
        block_hash: per block, its prefix-cache hash or ``None``.
        block_of_hash: prefix-cache map, hash -> the block holding that content (the
            inverse of ``block_hash``; change both together, as :meth:`cache` does and
            the KV manager's inlined copy of it).
        num_used: usable blocks with ref count > 0.
    """

    __slots__ = ("num_gpu_blocks", "ref_cnt", "block_hash", "_queue", "_stale", "_num_stale",
                 "_num_free", "block_of_hash", "num_used")

    def __init__(self, num_gpu_blocks: int) -> None:
        if isinstance(num_gpu_blocks, bool) or not isinstance(num_gpu_blocks, int):
            raise ConfigError(f"must be an integer, got {num_gpu_blocks!r}", field="num_gpu_blocks")
        if num_gpu_blocks < 2:
            raise InvariantError(f"a block pool needs >= 2 blocks, got {num_gpu_blocks}")
        check_host_memory(num_gpu_blocks * BYTES_PER_KV_BLOCK,
                          what=f"a KV block pool of {num_gpu_blocks} blocks", field="num_gpu_blocks")
        self.num_gpu_blocks = num_gpu_blocks
        self.ref_cnt = [0] * num_gpu_blocks
        self.ref_cnt[NULL_BLOCK] = 1
        self.block_hash: list[int | None] = [None] * num_gpu_blocks
        self._queue: deque[int] = deque(range(1, num_gpu_blocks))  # LRU head on the left
        self._stale = [0] * num_gpu_blocks  # per block: stale entries in the queue
        self._num_stale = 0  # sum of _stale
        self._num_free = num_gpu_blocks - 1
        self.block_of_hash: dict[int, int] = {}
        self.num_used = 0  # usable blocks with ref_cnt > 0

    @property
    def num_usable_blocks(self) -> int:
        """Blocks that can hold KV (all but the null block)."""
        return self.num_gpu_blocks - 1

    @property
    def num_free_blocks(self) -> int:
        """Blocks with ref count 0 (cached or not): what an allocation can take."""
        return self._num_free

    @property
    def num_cached_blocks(self) -> int:
        """Blocks carrying a prefix-cache hash (in use or free)."""
        return len(self.block_of_hash)

    def usage(self) -> float:
        """KV usage fraction in [0, 1] as vLLM reports it."""
        return 1.0 - self._num_free / (self.num_gpu_blocks - 1)

    def lookup(self, block_hash: int) -> int | None:
        """The block cached under ``block_hash``, or ``None``."""
        return self.block_of_hash.get(block_hash)

    def is_free(self, block_id: int) -> bool:
        """True when ``block_id`` is on the free list."""
        return block_id != NULL_BLOCK and self.ref_cnt[block_id] == 0

    def allocate(self, n: int) -> list[int]:
        """Take ``n`` blocks from the LRU head, evicting their cached hashes.

        Raises:
            InvariantError: fewer than ``n`` free blocks (callers check first).
        """
        if n > self._num_free:
            raise InvariantError(f"allocating {n} blocks with only {self._num_free} free")
        popleft = self._queue.popleft
        stale, ref, bh, cached = self._stale, self.ref_cnt, self.block_hash, self.block_of_hash
        if self._num_stale:
            out = []
            for _ in range(n):
                b = popleft()
                while stale[b]:  # skip dead queue entries (cache hits on free blocks)
                    stale[b] -= 1
                    self._num_stale -= 1
                    b = popleft()
                out.append(b)
        else:
            out = [popleft() for _ in range(n)]
        for b in out:
            h = bh[b]
            if h is not None:
                if cached.get(h) == b:
                    del cached[h]
                bh[b] = None
            ref[b] = 1
        self._num_free -= n
        self.num_used += n
        return out

    def allocate_one(self) -> int:
        """:meth:`allocate` of a single block, without the list (the decode hot path).

        Raises:
            InvariantError: no free block (callers check first).
        """
        if not self._num_free:
            raise InvariantError("allocating 1 block with none free")
        popleft, stale = self._queue.popleft, self._stale
        b = popleft()
        while stale[b]:
            stale[b] -= 1
            self._num_stale -= 1
            b = popleft()
        h = self.block_hash[b]
        if h is not None:
            cached = self.block_of_hash
            if cached.get(h) == b:
                del cached[h]
            self.block_hash[b] = None
        self.ref_cnt[b] = 1
        self._num_free -= 1
        self.num_used += 1
        return b

    def touch(self, blocks: list[int]) -> None:
        """Add a reference to each of ``blocks`` (prefix-cache hits)."""
        ref, stale = self.ref_cnt, self._stale
        for b in blocks:
            if ref[b] == 0:
                stale[b] += 1  # its queue entry is dead
                self._num_stale += 1
                self._num_free -= 1
                self.num_used += 1
            ref[b] += 1
        if self._num_stale > self._num_free + 64:
            self._compact()

    def free(self, blocks: list[int]) -> None:
        """Drop one reference from each of ``blocks``, in the given order.

        Blocks reaching ref count 0 go to the free list's tail (keeping their hash).

        Raises:
            InvariantError: a block is freed more often than it was referenced.
        """
        ref, append = self.ref_cnt, self._queue.append
        n_freed = 0
        for b in blocks:
            r = ref[b] - 1
            if r < 0 or b == NULL_BLOCK:
                self._num_free += n_freed
                self.num_used -= n_freed
                raise InvariantError(f"double free of KV block {b}")
            ref[b] = r
            if r == 0:
                append(b)
                n_freed += 1
        self._num_free += n_freed
        self.num_used -= n_freed

    def cache(self, block_id: int, block_hash: int) -> None:
        """Record that ``block_id`` holds the full block with hash ``block_hash``."""
        if self.block_hash[block_id] is not None:
            return
        if block_hash in self.block_of_hash:
            return  # duplicate content: first holder keeps the hash (see module doc)
        self.block_hash[block_id] = block_hash
        self.block_of_hash[block_hash] = block_id

    def free_list(self) -> list[int]:
        """Free blocks from LRU head to tail (for tests and checks; O(queue))."""
        skip = {b: n for b, n in enumerate(self._stale) if n}
        out = []
        for b in self._queue:
            n = skip.get(b, 0)
            if n:
                skip[b] = n - 1
            else:
                out.append(b)
        return out

    def _compact(self) -> None:
        """Drop the stale entries from the queue, O(queue)."""
        live = self.free_list()
        self._queue = deque(live)
        self._stale = [0] * self.num_gpu_blocks
        self._num_stale = 0

    def check(self, expected_refs: dict[int, int] | None = None, *,
              step: int | None = None) -> None:
        """Full consistency check, O(blocks).

        Args:
            expected_refs: block -> references held by live sequences; when given, each
                block's ref count must equal it (0 for absent blocks).
            step: engine step for the error message.

        Raises:
            InvariantError: a block both free and referenced, a negative count, a count
                differing from ``expected_refs``, a stale hash map or a broken used count.
        """
        free_list = self.free_list()
        free_set = set(free_list)
        if len(free_set) != len(free_list) or len(free_list) != self._num_free:
            raise InvariantError(f"free list of {len(free_list)} entries ({len(free_set)} "
                                 f"distinct) for {self._num_free} free blocks", step=step)
        used = 0
        for b in range(1, self.num_gpu_blocks):
            r = self.ref_cnt[b]
            in_free = b in free_set
            if r < 0:
                raise InvariantError(f"KV block {b} has ref count {r}", step=step)
            if r > 0 and in_free:
                raise InvariantError(f"KV block {b} is both free and referenced", step=step)
            if r == 0 and not in_free:
                raise InvariantError(f"KV block {b} is unreferenced but not free (leak)", step=step)
            if r > 0:
                used += 1
            if expected_refs is not None and r != expected_refs.get(b, 0):
                raise InvariantError(
                    f"KV block {b} has ref count {r}, sequences hold {expected_refs.get(b, 0)}",
                    step=step)
        if used != self.num_used or used + self._num_free != self.num_gpu_blocks - 1:
            raise InvariantError(
                f"blocks not conserved: used {used} (counter {self.num_used}) + free "
                f"{self._num_free} != {self.num_gpu_blocks - 1}", step=step)
        for h, b in self.block_of_hash.items():
            if self.block_hash[b] != h:
                raise InvariantError(f"prefix-cache map points hash to block {b} "
                                     f"which holds another hash", step=step)
