"""Block pool properties (hypothesis), LRU order, and the block-hash mapping."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from serving_helpers import make_request

from llmsim.errors import InvariantError
from llmsim.kvcache import BlockHasher, BlockPool
from llmsim.scheduler.state import sequence_ids
from llmsim.trace.record import Request

ops = st.lists(
    st.one_of(
        st.tuples(st.just("alloc"), st.integers(0, 6)),
        st.tuples(st.just("free"), st.integers(0, 50)),
        st.tuples(st.just("hit"), st.integers(0, 50)),
    ),
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(num_blocks=st.integers(2, 24), script=ops)
def test_pool_conserves_blocks_under_random_ops(num_blocks, script):
    pool = BlockPool(num_blocks)
    holders: list[list[int]] = []  # each holder = one sequence's blocks
    next_hash = 0
    for op, arg in script:
        if op == "alloc":
            n = min(arg, pool.num_free_blocks)
            blocks = pool.allocate(n)
            for b in blocks:
                next_hash += 1
                pool.cache(b, next_hash)
            holders.append(blocks)
        elif op == "free" and holders:
            blocks = holders.pop(arg % len(holders))
            pool.free(list(reversed(blocks)))
        elif op == "hit" and pool.num_cached_blocks:
            h = (arg % next_hash) + 1 if next_hash else 1
            b = pool.lookup(h)
            if b is not None:
                pool.touch([b])
                holders.append([b])
        refs: dict[int, int] = {}
        for blocks in holders:
            for b in blocks:
                refs[b] = refs.get(b, 0) + 1
        pool.check(refs)
        assert pool.num_free_blocks + pool.num_used == num_blocks - 1
        assert not set(pool.free_list()) & set(refs)


@settings(max_examples=100, deadline=None)
@given(num_blocks=st.integers(3, 20), data=st.data())
def test_double_free_raises(num_blocks, data):
    pool = BlockPool(num_blocks)
    n = data.draw(st.integers(1, num_blocks - 1))
    blocks = pool.allocate(n)
    victim = data.draw(st.sampled_from(blocks))
    pool.free(blocks)
    with pytest.raises(InvariantError, match="double free"):
        pool.free([victim])


@settings(max_examples=100, deadline=None)
@given(num_blocks=st.integers(3, 30), data=st.data())
def test_lru_order_new_blocks_come_from_the_least_recently_freed(num_blocks, data):
    pool = BlockPool(num_blocks)
    blocks = pool.allocate(num_blocks - 1)
    order = data.draw(st.permutations(blocks))
    for b in order:  # free one at a time: this is the LRU order
        pool.free([b])
    assert pool.free_list() == list(order)
    k = data.draw(st.integers(0, len(order)))
    assert pool.allocate(k) == list(order[:k])


def test_allocating_a_cached_free_block_evicts_its_hash():
    pool = BlockPool(3)
    a, b = pool.allocate(2)
    pool.cache(a, 111)
    pool.cache(b, 222)
    pool.free([b, a])  # b first: a is the most recently freed
    assert pool.lookup(111) == a and pool.lookup(222) == b
    (c,) = pool.allocate(1)
    assert c == b and pool.lookup(222) is None and pool.lookup(111) == a
    pool.touch([a])  # a hit takes the free cached block off the free list
    assert pool.num_free_blocks == 0 and pool.ref_cnt[a] == 1


def test_allocate_more_than_free_raises():
    pool = BlockPool(4)
    with pytest.raises(InvariantError):
        pool.allocate(4)  # 3 usable: block 0 is the null block


def test_token_hash_chain_shares_equal_prefixes_only():
    ids = tuple(range(40))
    a = BlockHasher(sequence_ids(make_request("a", prompt=40, ids=ids)), 16, salt=0)
    b = BlockHasher(sequence_ids(make_request("b", prompt=40, ids=ids[:20] + (999,) * 20)), 16, salt=1)
    ha, hb = a.ensure(2), b.ensure(2)
    assert ha[0] == hb[0] and ha[1] != hb[1]


def _hash_req(rid: str, hashes: tuple[int, ...], tokens: int, hbs: int = 512) -> Request:
    return Request(request_id=rid, arrival_ns=0, input_tokens=tokens, output_tokens=1,
                   block_hashes=hashes, hash_block_size=hbs)


def test_trace_block_hashes_map_onto_engine_blocks():
    # 512-token hash blocks, 16-token engine blocks: 32 engine blocks per hash block.
    a = BlockHasher(sequence_ids(_hash_req("a", (7, 8, 9), 1536)), 16, salt=0).ensure(96)
    b = BlockHasher(sequence_ids(_hash_req("b", (7, 8, 5), 1536)), 16, salt=1).ensure(96)
    c = BlockHasher(sequence_ids(_hash_req("c", (6, 8, 9), 1536)), 16, salt=2).ensure(96)
    assert a[:64] == b[:64]          # same first two hash ids: 64 engine blocks shared
    assert a[64] != b[64]            # differ from the first block of the third hash block
    assert a[0] != c[0]              # a different first id misses from the start
    assert len(set(a[:32])) == 32    # offsets make the blocks inside one hash block distinct


def test_unaligned_hash_block_size_and_unknown_content_are_handled():
    # hash blocks of 24 tokens over engine blocks of 16: block 1 spans hash blocks 0 and 1.
    a = BlockHasher(sequence_ids(_hash_req("a", (1, 2, 3), 72, hbs=24)), 16, salt=0).ensure(5)
    b = BlockHasher(sequence_ids(_hash_req("b", (1, 4, 3), 72, hbs=24)), 16, salt=1).ensure(5)
    assert a[0] == b[0] and a[1] != b[1]
    # no ids at all: unique per request, stable for the request itself
    u1 = BlockHasher(sequence_ids(Request(request_id="u", arrival_ns=0, input_tokens=64, output_tokens=1)),
                     16, salt=5)
    u2 = BlockHasher(sequence_ids(Request(request_id="v", arrival_ns=0, input_tokens=64, output_tokens=1)),
                     16, salt=6)
    assert set(u1.ensure(4)).isdisjoint(u2.ensure(4))
    assert BlockHasher(sequence_ids(Request(request_id="u", arrival_ns=0, input_tokens=64, output_tokens=1)),
                       16, salt=5).ensure(4) == u1.hashes


class _ReferencePool:
    """The block pool's free-list semantics with an OrderedDict (the obvious O(1) model)."""

    def __init__(self, num_blocks: int) -> None:
        from collections import OrderedDict

        self.free = OrderedDict.fromkeys(range(1, num_blocks))
        self.ref = [0] * num_blocks

    def allocate(self, n: int) -> list[int]:
        out = [self.free.popitem(last=False)[0] for _ in range(n)]
        for b in out:
            self.ref[b] = 1
        return out

    def touch(self, blocks: list[int]) -> None:
        for b in blocks:
            if self.ref[b] == 0:
                del self.free[b]
            self.ref[b] += 1

    def release(self, blocks: list[int]) -> None:
        for b in blocks:
            self.ref[b] -= 1
            if self.ref[b] == 0:
                self.free[b] = None


@settings(max_examples=200, deadline=None)
@given(num_blocks=st.integers(2, 12), script=ops)
def test_pool_free_list_matches_an_ordered_dict_model(num_blocks, script):
    """The lazy-deletion queue hands out exactly the blocks an LRU OrderedDict would, also
    when cache hits take blocks off the free list (stale entries, compaction)."""
    pool, ref = BlockPool(num_blocks), _ReferencePool(num_blocks)
    holders: list[list[int]] = []
    for op, arg in script * 3:
        if op == "alloc":
            n = min(arg, pool.num_free_blocks)
            blocks = pool.allocate(n) if n != 1 else [pool.allocate_one()]
            assert blocks == ref.allocate(n)
            holders.append(blocks)
        elif op == "free" and holders:
            blocks = list(reversed(holders.pop(arg % len(holders))))
            pool.free(blocks)
            ref.release(blocks)
        elif op == "hit":
            b = arg % (num_blocks - 1) + 1
            pool.touch([b])
            ref.touch([b])
            holders.append([b])
        assert pool.free_list() == list(ref.free)
        assert pool.num_free_blocks == len(ref.free)
    pool.check()


def test_pool_compacts_stale_entries_and_keeps_lru_order():
    pool, ref = BlockPool(6), _ReferencePool(6)
    for _ in range(200):  # hit a free block and free it again: one stale entry per round
        for p in (pool, ref):
            p.touch([3])
        pool.free([3])
        ref.release([3])
    assert len(pool._queue) <= pool.num_free_blocks + 65  # compacted
    assert pool.free_list() == list(ref.free) == [1, 2, 4, 5, 3]
    assert pool.allocate(5) == ref.allocate(5)
    pool.check()
