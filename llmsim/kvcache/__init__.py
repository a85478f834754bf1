"""Paged KV cache: block pool, chained block hashes and the manager the scheduler uses."""

from llmsim.kvcache.block_pool import NULL_BLOCK, BlockPool
from llmsim.kvcache.hashing import BlockHasher, SequenceIds
from llmsim.kvcache.manager import KVCacheManager

__all__ = ["NULL_BLOCK", "BlockHasher", "BlockPool", "KVCacheManager", "SequenceIds"]
