"""One decoder layer's operators in PyTorch, built from an HF-style model config.

The same functions run in the profiler (timed one at a time) and in the closed-loop engine
(:mod:`profiler.closed_loop.engine`, a real forward pass), so a profile taken here prices
exactly the kernels that engine runs. Operator names and per-rank shapes follow
:func:`llmsim.costmodel.decompose.step_ops` (column-parallel GEMMs split N by ``tp``,
row-parallel GEMMs split K; KV heads replicated when ``tp`` exceeds them).

Activations are 2-D ``[tokens, features]``; weights of GEMMs are stored ``[K, N]`` so a
projection is ``x @ w``. ``layernorm`` is the fused residual-add + RMSNorm that vLLM runs
(the residual add is not a separate operator in the published profiles).

The KV cache is paged: one flat pool per layer of ``[num_slots, kv_heads, head_dim]``
(slot = block x block_size + offset). Attention writes the step's new K/V into their slots,
gathers each sequence's context by slot index and runs PyTorch's
``scaled_dot_product_attention`` (GQA): one call per prefill chunk (causal mask aligned to
the chunk's cached prefix) and one batched call for all decodes (padded to the longest
context, masked).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from llmsim.model.config import ModelConfig

RMS_EPS = 1e-6
ROPE_THETA = 10000.0


@dataclass(frozen=True, slots=True, kw_only=True)
class LayerShapes:
    """Per-rank shapes of one decoder layer (elements).

    Attributes:
        hidden: model width.
        q_heads: query heads on this rank.
        kv_heads: KV heads on this rank (replicated when ``tp`` exceeds them).
        head_dim: elements per head.
        intermediate: dense FFN width on this rank (0 for MoE models).
        vocab: vocabulary entries of this rank's ``lm_head`` shard.
        full_vocab: whole vocabulary (the sampler sees gathered logits).
        num_experts: routed experts (0 for dense).
        top_k: experts per token.
        moe_intermediate: per-expert FFN width on this rank.
        qk_norm: the model normalizes q and k per head (Qwen3).
    """

    hidden: int
    q_heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    full_vocab: int
    num_experts: int = 0
    top_k: int = 0
    moe_intermediate: int = 0
    qk_norm: bool = False

    @property
    def q_size(self) -> int:
        """Query features per token on this rank."""
        return self.q_heads * self.head_dim

    @property
    def kv_size(self) -> int:
        """Key (or value) features per token on this rank."""
        return self.kv_heads * self.head_dim


def layer_shapes(model: ModelConfig, tp: int = 1) -> LayerShapes:
    """Per-rank shapes of ``model`` at TP degree ``tp`` (same rules as ``step_ops``)."""
    return LayerShapes(
        hidden=model.hidden_size,
        q_heads=max(1, model.num_attention_heads // tp),
        kv_heads=max(1, model.num_key_value_heads // tp),
        head_dim=model.head_dim,
        intermediate=0 if model.is_moe else model.intermediate_size // tp,
        vocab=model.vocab_size // tp,
        full_vocab=model.vocab_size,
        num_experts=model.num_experts,
        top_k=model.num_experts_per_token,
        moe_intermediate=model.moe_intermediate_size // tp if model.is_moe else 0,
        qk_norm="qwen3" in model.architecture.lower(),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class LayerWeights:
    """Random weights of one decoder layer (tensors; GEMM weights ``[K, N]``)."""

    input_norm: torch.Tensor
    post_norm: torch.Tensor
    qkv: torch.Tensor
    o: torch.Tensor
    q_norm: torch.Tensor | None = None
    k_norm: torch.Tensor | None = None
    gate_up: torch.Tensor | None = None
    down: torch.Tensor | None = None
    moe_gate: torch.Tensor | None = None
    w13: torch.Tensor | None = None  # [E, hidden, 2 x moe_inter]
    w2: torch.Tensor | None = None   # [E, moe_inter, hidden]


@dataclass(frozen=True, slots=True, kw_only=True)
class StepWeights:
    """Weights used once per step: embedding table, final norm, ``lm_head``, RoPE cache."""

    embed: torch.Tensor      # [vocab, hidden]
    final_norm: torch.Tensor  # [hidden]
    lm_head: torch.Tensor    # [hidden, vocab shard]
    rope_cos: torch.Tensor   # [max_positions, head_dim / 2]
    rope_sin: torch.Tensor


def _rand(gen: torch.Generator, shape: tuple[int, ...], dtype: torch.dtype,
          device: torch.device) -> torch.Tensor:
    t = torch.randn(shape, generator=gen, dtype=torch.float32) * 0.02
    return t.to(device=device, dtype=dtype)


def build_layer(shapes: LayerShapes, *, dtype: torch.dtype, device: torch.device,
                seed: int = 0) -> LayerWeights:
    """Random weights of one decoder layer with ``shapes`` (deterministic in ``seed``)."""
    g = torch.Generator().manual_seed(seed)
    h, d = shapes.hidden, shapes.head_dim
    ones = torch.ones(h, dtype=dtype, device=device)
    kw: dict[str, torch.Tensor] = {}
    if shapes.qk_norm:
        kw["q_norm"] = torch.ones(d, dtype=dtype, device=device)
        kw["k_norm"] = torch.ones(d, dtype=dtype, device=device)
    if shapes.num_experts:
        e, i = shapes.num_experts, shapes.moe_intermediate
        kw["moe_gate"] = _rand(g, (h, e), dtype, device)
        kw["w13"] = _rand(g, (e, h, 2 * i), dtype, device)
        kw["w2"] = _rand(g, (e, i, h), dtype, device)
    else:
        kw["gate_up"] = _rand(g, (h, 2 * shapes.intermediate), dtype, device)
        kw["down"] = _rand(g, (shapes.intermediate, h), dtype, device)
    return LayerWeights(
        input_norm=ones, post_norm=ones.clone(),
        qkv=_rand(g, (h, shapes.q_size + 2 * shapes.kv_size), dtype, device),
        o=_rand(g, (shapes.q_size, h), dtype, device), **kw)


def build_step_weights(shapes: LayerShapes, *, dtype: torch.dtype, device: torch.device,
                       max_positions: int, seed: int = 1) -> StepWeights:
    """Embedding, final norm, ``lm_head`` and the RoPE cos/sin cache up to ``max_positions``."""
    g = torch.Generator().manual_seed(seed)
    half = shapes.head_dim // 2
    inv_freq = 1.0 / (ROPE_THETA ** (torch.arange(half, dtype=torch.float32) / half))
    angles = torch.outer(torch.arange(max_positions, dtype=torch.float32), inv_freq)
    return StepWeights(
        embed=_rand(g, (shapes.full_vocab, shapes.hidden), dtype, device),
        final_norm=torch.ones(shapes.hidden, dtype=dtype, device=device),
        lm_head=_rand(g, (shapes.hidden, shapes.vocab), dtype, device),
        rope_cos=angles.cos().to(device=device, dtype=dtype),
        rope_sin=angles.sin().to(device=device, dtype=dtype))


# ---------------------------------------------------------------- element-wise / GEMM ops

def rms_norm(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """RMSNorm over the last dimension (Zhang & Sennrich 2019), computed in float32."""
    xf = x.float()
    xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + RMS_EPS)
    return xf.to(x.dtype) * weight


def layernorm(x: torch.Tensor, residual: torch.Tensor | None,
              weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Fused residual add + RMSNorm: returns ``(rms_norm(x + residual), x + residual)``."""
    residual = x if residual is None else x + residual
    return rms_norm(residual, weight), residual


def linear(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``x @ w`` for ``x [M, K]``, ``w [K, N]`` (qkv_proj, o_proj, gate_up, down, lm_head)."""
    return torch.mm(x, w)


def qk_norm(qkv: torch.Tensor, shapes: LayerShapes, q_w: torch.Tensor,
            k_w: torch.Tensor) -> torch.Tensor:
    """Per-head RMSNorm of q and k inside ``qkv [T, q+2kv]`` (Qwen3); returns a new tensor."""
    t, d = qkv.shape[0], shapes.head_dim
    q, k, v = qkv.split([shapes.q_size, shapes.kv_size, shapes.kv_size], dim=-1)
    q = rms_norm(q.reshape(t, shapes.q_heads, d), q_w).reshape(t, -1)
    k = rms_norm(k.reshape(t, shapes.kv_heads, d), k_w).reshape(t, -1)
    return torch.cat([q, k, v], dim=-1)


def rotary_emb(qkv: torch.Tensor, positions: torch.Tensor, shapes: LayerShapes,
               cos_cache: torch.Tensor, sin_cache: torch.Tensor) -> torch.Tensor:
    """Rotate q and k of ``qkv [T, q+2kv]`` by their positions (NeoX half-split RoPE,
    Su et al. 2021); returns ``qkv`` with rotated q and k (new tensor)."""
    t, d = qkv.shape[0], shapes.head_dim
    half = d // 2
    qk_heads = shapes.q_heads + shapes.kv_heads
    qk, v = qkv.split([qk_heads * d, shapes.kv_size], dim=-1)
    x = qk.reshape(t, qk_heads, d)
    cos = cos_cache.index_select(0, positions).unsqueeze(1)
    sin = sin_cache.index_select(0, positions).unsqueeze(1)
    x1, x2 = x[..., :half], x[..., half:]
    rot = torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)
    return torch.cat([rot.reshape(t, -1), v], dim=-1)


def act_fn(gate_up: torch.Tensor) -> torch.Tensor:
    """SiLU-and-multiply: ``silu(gate) * up`` of ``gate_up [T, 2I]`` -> ``[T, I]``."""
    gate, up = gate_up.chunk(2, dim=-1)
    return F.silu(gate) * up


def embedding(token_ids: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Look up ``token_ids [T]`` in ``table [V, H]`` -> ``[T, H]``."""
    return F.embedding(token_ids, table)


def sampler(logits: torch.Tensor) -> torch.Tensor:
    """Greedy sampling: float32 argmax over the vocabulary, ``[S, V]`` -> ``[S]``."""
    return logits.float().argmax(dim=-1)


def moe(x: torch.Tensor, router_logits: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor,
        top_k: int) -> torch.Tensor:
    """Routed experts: softmax top-k routing (renormalized, as Mixtral/Qwen3-MoE), then one
    SiLU-gated FFN per expert that received tokens, weighted and summed per token.

    Args:
        x: ``[T, H]`` activations. router_logits: ``[T, E]``.
        w13: ``[E, H, 2I]`` gate/up weights. w2: ``[E, I, H]`` down weights.
        top_k: experts per token.
    """
    probs = torch.softmax(router_logits.float(), dim=-1)
    top_w, top_i = probs.topk(top_k, dim=-1)
    top_w = (top_w / top_w.sum(-1, keepdim=True)).to(x.dtype)
    out = torch.zeros_like(x)
    for e in top_i.unique().tolist():
        tok, slot = (top_i == e).nonzero(as_tuple=True)
        h = act_fn(torch.mm(x.index_select(0, tok), w13[e]))
        y = torch.mm(h, w2[e]) * top_w[tok, slot].unsqueeze(-1)
        out.index_add_(0, tok, y)
    return out


def forced_router_logits(tokens: int, experts: int, top_k: int, active: int) -> torch.Tensor:
    """``[tokens, experts]`` float32 router logits whose top-k choices cover exactly
    ``min(active, tokens x top_k)`` experts: token ``i`` prefers experts
    ``(i*k + j) mod active``, ``j < k`` (the MoE grid's ``active_experts`` axis)."""
    logits = torch.full((tokens, experts), -10.0)
    for i in range(tokens):
        for j in range(top_k):
            logits[i, (i * top_k + j) % active] = 10.0 - j * 0.1
    return logits


# ---------------------------------------------------------------------------- attention

@dataclass(frozen=True, slots=True, kw_only=True)
class PrefillMeta:
    """One prefill chunk of a step.

    Attributes:
        token_start: first row of the chunk in the step's token dimension.
        num_tokens: new tokens of the chunk.
        context_slots: ``[cached + new]`` KV slots of the sequence, in position order.
        mask: ``[new, cached + new]`` bool, True where a query may attend (causal).
    """

    token_start: int
    num_tokens: int
    context_slots: torch.Tensor
    mask: torch.Tensor


@dataclass(frozen=True, slots=True, kw_only=True)
class AttentionMeta:
    """Per-step attention metadata (built once per step, shared by all layers).

    Attributes:
        slot_mapping: ``[T]`` KV slot of every new token of the step.
        prefills: prefill chunks (rows first in the step's token order).
        decode_start: first decode row; decodes occupy rows ``decode_start:``.
        decode_slots: ``[n, Lmax]`` KV slots per decode (padded with slot 0), or None.
        decode_mask: ``[n, 1, 1, Lmax]`` bool valid-context mask, or None.
    """

    slot_mapping: torch.Tensor
    prefills: tuple[PrefillMeta, ...]
    decode_start: int
    decode_slots: torch.Tensor | None
    decode_mask: torch.Tensor | None


def causal_mask(num_new: int, num_cached: int, device: torch.device) -> torch.Tensor:
    """``[new, cached + new]`` mask: query ``i`` sees keys ``0 .. cached + i``."""
    cols = torch.arange(num_cached + num_new, device=device)
    rows = torch.arange(num_new, device=device).unsqueeze(1) + num_cached
    return cols.unsqueeze(0) <= rows


def build_attention_meta(prefills: list[tuple[torch.Tensor, int]],
                         decodes: list[torch.Tensor], device: torch.device) -> AttentionMeta:
    """Attention metadata for a step.

    Args:
        prefills: per prefill chunk, ``(context_slots [cached+new], num_new)``; the last
            ``num_new`` slots receive the chunk's new K/V.
        decodes: per decode, its context slots ``[L]`` including the new token's slot (last).
        device: where the index tensors live.
    """
    metas, new_slots, row = [], [], 0
    for slots, num_new in prefills:
        cached = int(slots.numel()) - num_new
        metas.append(PrefillMeta(token_start=row, num_tokens=num_new, context_slots=slots,
                                 mask=causal_mask(num_new, cached, device)))
        new_slots.append(slots[cached:])
        row += num_new
    dslots = dmask = None
    if decodes:
        lmax = max(int(s.numel()) for s in decodes)
        dslots = torch.zeros((len(decodes), lmax), dtype=torch.long, device=device)
        lens = torch.tensor([int(s.numel()) for s in decodes], device=device)
        for i, s in enumerate(decodes):
            dslots[i, : s.numel()] = s
            new_slots.append(s[-1:])
        dmask = (torch.arange(lmax, device=device).unsqueeze(0) < lens.unsqueeze(1))
        dmask = dmask.view(len(decodes), 1, 1, lmax)
    slot_mapping = (torch.cat(new_slots) if new_slots
                    else torch.zeros(0, dtype=torch.long, device=device))
    return AttentionMeta(slot_mapping=slot_mapping, prefills=tuple(metas), decode_start=row,
                         decode_slots=dslots, decode_mask=dmask)


def attention(qkv: torch.Tensor, shapes: LayerShapes, k_cache: torch.Tensor,
              v_cache: torch.Tensor, meta: AttentionMeta) -> torch.Tensor:
    """One attention layer over a step: cache write, gather, SDPA; ``[T, q+2kv]`` -> ``[T, q]``.

    Args:
        qkv: the step's projected (and rotated) q, k, v rows.
        shapes: per-rank shapes.
        k_cache, v_cache: ``[num_slots, kv_heads, head_dim]`` paged pools of this layer
            (updated in place with the step's new K/V).
        meta: the step's :class:`AttentionMeta`.
    """
    t, d = qkv.shape[0], shapes.head_dim
    q, k, v = qkv.split([shapes.q_size, shapes.kv_size, shapes.kv_size], dim=-1)
    q = q.reshape(t, shapes.q_heads, d)
    k_cache.index_copy_(0, meta.slot_mapping, k.reshape(t, shapes.kv_heads, d))
    v_cache.index_copy_(0, meta.slot_mapping, v.reshape(t, shapes.kv_heads, d))
    out = torch.empty_like(q)
    scale = 1.0 / math.sqrt(d)
    for p in meta.prefills:
        rows = slice(p.token_start, p.token_start + p.num_tokens)
        qs = q[rows].transpose(0, 1).unsqueeze(0)
        ks = k_cache.index_select(0, p.context_slots).transpose(0, 1).unsqueeze(0)
        vs = v_cache.index_select(0, p.context_slots).transpose(0, 1).unsqueeze(0)
        o = F.scaled_dot_product_attention(qs, ks, vs, attn_mask=p.mask, scale=scale,
                                           enable_gqa=True)
        out[rows] = o[0].transpose(0, 1)
    if meta.decode_slots is not None:
        n = meta.decode_slots.shape[0]
        qd = q[meta.decode_start:meta.decode_start + n].unsqueeze(2)
        kd = k_cache[meta.decode_slots].permute(0, 2, 1, 3)
        vd = v_cache[meta.decode_slots].permute(0, 2, 1, 3)
        o = F.scaled_dot_product_attention(qd, kd, vd, attn_mask=meta.decode_mask,
                                           scale=scale, enable_gqa=True)
        out[meta.decode_start:meta.decode_start + n] = o.squeeze(2)
    return out.reshape(t, -1)
