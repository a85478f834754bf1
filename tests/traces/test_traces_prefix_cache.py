"""Mooncake hash-id prefixes in the engine's KV prefix cache (public ``llmsim.kvcache`` API).

Mapping under test (documented in ``llmsim.kvcache.hashing``): a 512-token Mooncake block
covers 32 engine blocks of 16 tokens; two requests whose ``hash_ids`` agree on the first k
ids share the first 32*k engine blocks and miss from the first differing id on.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from llmsim.kvcache import BlockHasher, KVCacheManager
from llmsim.scheduler.state import sequence_ids
from llmsim.trace import Request, load_trace

BLOCK = 16


@dataclass
class Seq:
    """The attributes ``KVCacheManager`` reads from a sequence."""

    hasher: BlockHasher
    num_tokens: int
    blocks: list[int] = field(default_factory=list)
    num_computed: int = 0
    num_cached_blocks: int = 0


def seq_of(req: Request, salt: int) -> Seq:
    return Seq(hasher=BlockHasher(sequence_ids(req), BLOCK, salt), num_tokens=req.input_tokens)


def prefill(kv: KVCacheManager, seq: Seq) -> int:
    """Look up, allocate and 'compute' the prompt; returns the prefix-hit tokens."""
    hits = kv.get_computed_blocks(seq)
    assert kv.allocate_slots(seq, seq.num_tokens - len(hits) * BLOCK, hits)
    seq.num_computed = seq.num_tokens
    return len(hits) * BLOCK


def req(rid: str, hashes: tuple[int, ...], n_in: int) -> Request:
    return Request(request_id=rid, arrival_ns=0, input_tokens=n_in, output_tokens=1,
                   block_hashes=hashes, hash_block_size=512)


def test_identical_hash_prefix_hits_different_misses():
    kv = KVCacheManager(num_gpu_blocks=2000, block_size=BLOCK, enable_prefix_caching=True)
    assert prefill(kv, seq_of(req("a", (1, 2, 3), 1500), 0)) == 0
    # Same first two 512-token blocks, different third: 2 * 512 tokens hit.
    assert prefill(kv, seq_of(req("b", (1, 2, 9), 1400), 1)) == 1024
    # Same ids as a, but different from the first block: nothing hits.
    assert prefill(kv, seq_of(req("c", (7, 2, 3), 1500), 2)) == 0
    # Identical hash list: every full engine block hits except the last token's block.
    assert prefill(kv, seq_of(req("d", (1, 2, 3), 1500), 3)) == (1500 - 1) // BLOCK * BLOCK
    # Id 2 in second position after a different first id is a different prefix.
    assert prefill(kv, seq_of(req("e", (5, 2), 1000), 4)) == 0


@pytest.mark.realdata
def test_mooncake_real_shared_system_prompt_hits(data_path):
    trace = load_trace("mooncake", data_path("mooncake/conversation_trace.jsonl"))
    first, second = trace.requests[0], trace.requests[1]
    shared = next(i for i, (x, y) in enumerate(zip(first.block_hashes, second.block_hashes, strict=False)) if x != y)
    assert shared == 1  # both start with hash id 0, then diverge
    kv = KVCacheManager(num_gpu_blocks=4000, block_size=BLOCK, enable_prefix_caching=True)
    assert prefill(kv, seq_of(first, 0)) == 0
    assert prefill(kv, seq_of(second, 1)) == 512 * shared
    # A multi-turn pair: a later request extending an earlier one's prefix over k > 1 blocks.
    def common(a, b):
        return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))

    by_prefix = {}
    for r in trace.requests:
        earlier = by_prefix.get(r.block_hashes[:2])
        if earlier is not None:
            break
        by_prefix[r.block_hashes[:2]] = r
    k = common(earlier.block_hashes, r.block_hashes)
    assert k >= 2
    kv = KVCacheManager(num_gpu_blocks=8000, block_size=BLOCK, enable_prefix_caching=True)
    assert prefill(kv, seq_of(earlier, 0)) == 0
    assert prefill(kv, seq_of(r, 1)) == min(512 * k, (r.input_tokens - 1) // BLOCK * BLOCK)
