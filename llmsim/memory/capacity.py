"""KV-cache capacity: how many GPU blocks an instance gets.

Mirrors how vLLM 0.19 sizes the KV cache at start-up (``Worker.determine_available_memory``
after a profiling forward pass): per TP rank,

``kv_bytes = total_gpu_bytes x gpu_memory_utilization - weight_bytes - activation_peak_bytes
- non_torch_bytes - cudagraph_bytes``

and ``num_gpu_blocks = kv_bytes // (block_size x kv_bytes_per_token)``.

Terms and their sources:

* ``total_gpu_bytes``: device memory as CUDA reports it (``torch.cuda.mem_get_info`` total,
  recorded as ``device_total_memory_bytes`` in a measured run's ``meta.json``).
* ``weight_bytes``: parameters x dtype bytes / TP (:meth:`ModelConfig.weight_bytes`).
* ``activation_peak_bytes``: the peak of vLLM's profiling run, a forward pass of
  ``max_num_batched_tokens`` tokens plus a dummy sampler run over ``max_num_seqs`` rows.
  Estimated as the largest live tensors of one decoder layer at that many tokens (residual
  + hidden + QKV + gate_up output + activation output, dtype bytes) plus float32 logits for
  ``max_num_seqs`` rows kept twice (logits and their softmax in the sampler).
* ``non_torch_bytes``: CUDA context, cuBLAS/NCCL workspaces and allocator fragmentation
  outside PyTorch's accounting. Default 512 MiB: vLLM's start-up log ("non-torch memory")
  reports a few hundred MiB for single-GPU runs; this is an order-of-magnitude default, not
  a measurement of a specific run.
* ``cudagraph_bytes``: memory of captured CUDA graphs, which vLLM 0.19 estimates before
  sizing the cache. Default 256 MiB; again an order-of-magnitude default.

**Pipeline parallelism**: every stage sizes its own cache from its own terms (its layers'
weights, the embedding on the first stage, final norm, ``lm_head`` and the sampler's logits on
the last; KV bytes per token of its layers only), and the engine takes the smallest block
count over the stages (vLLM 0.19 ``get_kv_cache_configs`` gives every worker the minimum
``num_blocks``; docs/cluster-semantics.md, "Pipeline parallelism"). :class:`KVCapacity` then
holds that stage's terms.

Where a measured run records ``num_gpu_blocks`` (``meta.json`` ``kv_cache.num_gpu_blocks``)
that value is the truth and should be passed as ``num_gpu_blocks_override``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from llmsim.cluster.parallel import SINGLE_GPU, ParallelConfig
from llmsim.errors import ConfigError, MeasuredRunError
from llmsim.model.config import ModelConfig

MIB = 1 << 20
DEFAULT_NON_TORCH_BYTES = 512 * MIB
DEFAULT_CUDAGRAPH_BYTES = 256 * MIB


@dataclass(frozen=True, slots=True, kw_only=True)
class KVCapacity:
    """The resolved KV capacity and the terms it came from (bytes are per TP rank).

    Attributes:
        num_gpu_blocks: KV blocks (including vLLM's reserved null block).
        block_size: tokens per block.
        bytes_per_block: KV bytes of one block on one rank.
        source: ``"override"`` or ``"memory_model"``.
        total_gpu_bytes, budget_bytes, weight_bytes, activation_peak_bytes,
        non_torch_bytes, cudagraph_bytes, kv_bytes: the memory model's terms
            (0 when overridden).
    """

    num_gpu_blocks: int
    block_size: int
    bytes_per_block: int
    source: str
    total_gpu_bytes: int = 0
    budget_bytes: int = 0
    weight_bytes: int = 0
    activation_peak_bytes: int = 0
    non_torch_bytes: int = 0
    cudagraph_bytes: int = 0
    kv_bytes: int = 0

    @property
    def num_kv_tokens(self) -> int:
        """Tokens the cache holds."""
        return self.num_gpu_blocks * self.block_size


def activation_peak_bytes(model: ModelConfig, *, max_num_batched_tokens: int,
                          max_num_seqs: int, parallel: ParallelConfig = SINGLE_GPU,
                          sampler: bool = True) -> int:
    """Estimated peak activation memory of vLLM's profiling run on one rank, bytes.

    ``T x (2h + qkv + 2 x inter + inter) x dtype`` for the largest live tensors of one layer
    at ``T = max_num_batched_tokens`` tokens, plus ``2 x max_num_seqs x vocab x 4`` for the
    float32 logits and probabilities of the dummy sampler run (``sampler``: the rank
    samples; with PP only the last stage does).
    """
    t = max_num_batched_tokens
    tp = parallel.tensor_parallel_size
    h, d = model.hidden_size, model.head_dim
    q_heads = max(1, model.num_attention_heads // tp)
    qkv = (q_heads + 2 * max(1, model.num_key_value_heads // tp)) * d
    inter = (model.moe_intermediate_size * max(1, model.num_experts_per_token) if model.is_moe
             else model.intermediate_size) // tp
    layer = t * (2 * h + qkv + 3 * inter) * model.dtype_bytes
    logits = 2 * max_num_seqs * model.vocab_size * 4 if sampler else 0
    return layer + logits


def kv_capacity(model: ModelConfig, *, total_gpu_bytes: int, gpu_memory_utilization: float,
                block_size: int, max_num_batched_tokens: int, max_num_seqs: int,
                parallel: ParallelConfig = SINGLE_GPU,
                num_gpu_blocks_override: int | None = None,
                non_torch_bytes: int = DEFAULT_NON_TORCH_BYTES,
                cudagraph_bytes: int = DEFAULT_CUDAGRAPH_BYTES) -> KVCapacity:
    """Resolve the number of KV blocks of one instance (formula: module doc).

    Args:
        model: the served model (weights, KV bytes per token, activation sizes).
        total_gpu_bytes: device memory of one GPU, bytes.
        gpu_memory_utilization: fraction of it vLLM may use, in (0, 1].
        block_size: tokens per KV block.
        max_num_batched_tokens: token budget per step (sizes the activation peak).
        max_num_seqs: most running sequences (sizes the sampler's logits).
        parallel: the instance's layout (weights and KV are split over its
            ``tensor_parallel_size`` ranks).
        num_gpu_blocks_override: use this block count instead of the memory model.
        non_torch_bytes: CUDA context and workspaces per rank, bytes.
        cudagraph_bytes: captured CUDA graphs per rank, bytes.

    Returns:
        The block count with the terms it came from (per TP rank).

    Raises:
        ConfigError: the override is not an integer >= 2, ``total_gpu_bytes`` is not an
            integer >= 0, or the model leaves no room for even one block (names the terms).
            A huge block count is returned as is; :mod:`llmsim.memory.host` refuses it
            before anything is allocated.
    """
    pp = parallel.pipeline_parallel_size
    stages: tuple[int | None, ...] = (None,) if pp == 1 else tuple(range(pp))
    # the largest block of any stage: the one whose KV an override must fit
    per_block = max(block_size * model.kv_bytes_per_token(parallel, s) for s in stages)
    if num_gpu_blocks_override is not None:
        if (isinstance(num_gpu_blocks_override, bool) or not isinstance(num_gpu_blocks_override, int)
                or num_gpu_blocks_override < 2):
            raise ConfigError(f"must be an integer >= 2, got {num_gpu_blocks_override!r}",
                              field="engine.num_gpu_blocks_override")
        return KVCapacity(num_gpu_blocks=num_gpu_blocks_override, block_size=block_size,
                          bytes_per_block=per_block, source="override")
    if (isinstance(total_gpu_bytes, bool) or not isinstance(total_gpu_bytes, int)
            or total_gpu_bytes < 0):
        raise ConfigError(f"must be an integer >= 0, got {total_gpu_bytes!r}",
                          field="hardware.gpu_memory_bytes")
    if not 0.0 < gpu_memory_utilization <= 1.0:
        raise ConfigError(f"must be in (0, 1], got {gpu_memory_utilization}",
                          field="engine.gpu_memory_utilization")
    budget = int(total_gpu_bytes * gpu_memory_utilization)
    best: tuple[int, int, int, int, int] | None = None  # blocks, weights, act, kv, per_block
    for s in stages:
        weights = model.weight_bytes(parallel, s)
        act = activation_peak_bytes(model, max_num_batched_tokens=max_num_batched_tokens,
                                    max_num_seqs=max_num_seqs, parallel=parallel,
                                    sampler=s is None or s == pp - 1)
        kv_bytes = budget - weights - act - non_torch_bytes - cudagraph_bytes
        stage_block = block_size * model.kv_bytes_per_token(parallel, s)
        blocks = kv_bytes // stage_block if kv_bytes > 0 else 0
        if blocks < 2:
            where = "" if s is None else f"pipeline stage {s}: "
            raise ConfigError(
                f"no room for the KV cache: {where}{budget} budget bytes - {weights} weights - "
                f"{act} activations - {non_torch_bytes} non-torch - {cudagraph_bytes} CUDA "
                f"graphs = {kv_bytes} bytes", field="hardware.gpu_memory_bytes")
        if best is None or blocks < best[0]:
            best = (blocks, weights, act, kv_bytes, stage_block)
    assert best is not None
    blocks, weights, act, kv_bytes, per_block = best
    return KVCapacity(num_gpu_blocks=int(blocks), block_size=block_size, bytes_per_block=per_block,
                      source="memory_model", total_gpu_bytes=total_gpu_bytes, budget_bytes=budget,
                      weight_bytes=weights, activation_peak_bytes=act,
                      non_torch_bytes=non_torch_bytes, cudagraph_bytes=cudagraph_bytes,
                      kv_bytes=int(kv_bytes))


def num_gpu_blocks_from_meta(path: str | Path) -> int | None:
    """The KV block count a measured vLLM run resolved (``meta.json``), or ``None``.

    Reads ``kv_cache.num_gpu_blocks`` (else ``resolved_config.cache_config.num_gpu_blocks``).

    Raises:
        MeasuredRunError: unreadable or invalid JSON, or a non-integer count.
    """
    path = Path(path)
    try:
        meta = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise MeasuredRunError(f"cannot read meta.json: {exc}", path=path) from exc
    value = (meta.get("kv_cache") or {}).get("num_gpu_blocks")
    if value is None:
        cache = (meta.get("resolved_config") or {}).get("cache_config") or {}
        value = cache.get("num_gpu_blocks")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 2:
        raise MeasuredRunError(f"invalid block count {value!r}", path=path,
                               field="kv_cache.num_gpu_blocks")
    return value
