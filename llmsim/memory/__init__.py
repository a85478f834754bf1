"""KV-cache capacity from a GPU memory model (see :mod:`llmsim.memory.capacity`)."""

from llmsim.memory.capacity import (
    KVCapacity,
    activation_peak_bytes,
    kv_capacity,
    num_gpu_blocks_from_meta,
)

__all__ = ["KVCapacity", "activation_peak_bytes", "kv_capacity", "num_gpu_blocks_from_meta"]
