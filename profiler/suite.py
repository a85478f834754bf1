"""Which operators a profile holds, at which points, and how to set up one timed call.

The operator list comes from :func:`llmsim.costmodel.decompose.step_ops` (the all-reduce is
left out: a single device cannot measure a collective). Each op lands in one table kind:

* dense (``OpKind.DENSE``, axis ``tokens``): every per-token op (layernorm, qkv_proj,
  qk_norm, rotary_emb, o_proj, gate_up_proj, act_fn, down_proj, moe_gate, embedding,
  final_layernorm);
* per-sequence (axis ``sequences``): ``lm_head``, ``sampler``;
* attention (axes ``prefill_chunk, kv_prefill, n_decode, kv_decode``);
* MoE (axes ``tokens, active_experts``).

:meth:`OpSuite.prepare` allocates a point's inputs (untimed) and returns the zero-argument
call to time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from llmsim.cluster.parallel import ParallelConfig
from llmsim.costmodel.decompose import OpClass, Rows, step_ops
from llmsim.errors import ConfigError
from llmsim.model.config import ModelConfig
from llmsim.v1 import profile_pb2 as pb
from profiler import ops
from profiler.grid import GridSpec

DENSE_AXES = ("tokens",)
SEQ_AXES = ("sequences",)
ATTN_AXES = ("prefill_chunk", "kv_prefill", "n_decode", "kv_decode")
MOE_AXES = ("tokens", "active_experts")
BLOCK_SIZE = 16


@dataclass(frozen=True, slots=True, kw_only=True)
class OpTarget:
    """One table of the profile: an operator, its kind and axis names."""

    op: str
    kind: int  # llmsim.v1.OpKind value
    axes: tuple[str, ...]


def op_targets(model: ModelConfig, tp: int) -> tuple[OpTarget, ...]:
    """The tables to measure for ``model`` at ``tp``, in ``step_ops`` order."""
    out: list[OpTarget] = []
    for spec in step_ops(model, ParallelConfig(tensor_parallel_size=tp)):
        if spec.op_class == OpClass.COLLECTIVE:
            continue
        if spec.op_class == OpClass.ATTENTION:
            out.append(OpTarget(op=spec.name, kind=pb.OP_KIND_ATTENTION, axes=ATTN_AXES))
        elif spec.op_class == OpClass.MOE:
            out.append(OpTarget(op=spec.name, kind=pb.OP_KIND_MOE, axes=MOE_AXES))
        elif spec.rows == Rows.SEQUENCES:
            out.append(OpTarget(op=spec.name, kind=pb.OP_KIND_PER_SEQUENCE, axes=SEQ_AXES))
        else:
            out.append(OpTarget(op=spec.name, kind=pb.OP_KIND_DENSE, axes=DENSE_AXES))
    return tuple(out)


def target_points(target: OpTarget, grid: GridSpec, model: ModelConfig) -> Iterator[tuple[int, ...]]:
    """Axis values of every point of ``target`` on ``grid``."""
    if target.kind == pb.OP_KIND_DENSE:
        yield from ((t,) for t in grid.tokens)
    elif target.kind == pb.OP_KIND_PER_SEQUENCE:
        yield from ((s,) for s in grid.sequences)
    elif target.kind == pb.OP_KIND_ATTENTION:
        yield from grid.attention_points()
    elif target.kind == pb.OP_KIND_MOE:
        k, e = model.num_experts_per_token, model.num_experts
        for t in grid.moe_tokens:
            for a in grid.active_experts:
                if k <= a <= min(e, t * k):
                    yield t, a


def _paged_slots(lengths: list[int], gen: torch.Generator) -> tuple[list[torch.Tensor], int]:
    """Context slots per sequence over randomly placed blocks of ``BLOCK_SIZE`` slots, and
    the pool size in slots."""
    blocks_per = [-(-n // BLOCK_SIZE) for n in lengths]
    num_blocks = max(1, sum(blocks_per))
    perm = torch.randperm(num_blocks, generator=gen)
    out, at = [], 0
    for n, nb in zip(lengths, blocks_per, strict=True):
        blocks = perm[at:at + nb]
        at += nb
        slots = (blocks.unsqueeze(1) * BLOCK_SIZE + torch.arange(BLOCK_SIZE)).reshape(-1)
        out.append(slots[:n])
    return out, num_blocks * BLOCK_SIZE


class OpSuite:
    """One rank's random-weight layer plus per-step weights, and per-point call builders.

    Args:
        model: architecture.
        tp: TP degree (shapes are one rank's share).
        dtype: torch dtype of weights and activations.
        device: torch device.
        max_positions: RoPE cache length (>= the largest context on the grid).
        seed: weight / input seed.
    """

    def __init__(self, model: ModelConfig, tp: int, *, dtype: torch.dtype,
                 device: torch.device, max_positions: int, seed: int = 0) -> None:
        self.model = model
        self.shapes = ops.layer_shapes(model, tp)
        self.dtype, self.device = dtype, device
        self.layer = ops.build_layer(self.shapes, dtype=dtype, device=device, seed=seed)
        self.step = ops.build_step_weights(self.shapes, dtype=dtype, device=device,
                                           max_positions=max_positions, seed=seed + 1)
        self._gen = torch.Generator().manual_seed(seed + 2)

    def _x(self, rows: int, cols: int) -> torch.Tensor:
        return (torch.randn((rows, cols), generator=self._gen) * 0.5).to(self.device, self.dtype)

    def prepare(self, op: str, point: tuple[int, ...]) -> Callable[[], Any]:
        """Allocate inputs for ``op`` at ``point`` and return the call to time.

        Raises:
            ConfigError: unknown operator.
        """
        if op == "attention":
            return self._attention(*point)
        if op == "moe":
            return self._moe(*point)
        builder = getattr(self, f"_op_{op}", None)
        if builder is None:
            raise ConfigError(f"profiler has no builder for operator {op!r}", field="op")
        return builder(point[0])

    # dense ops (rows = tokens) ------------------------------------------------------
    def _op_layernorm(self, t: int) -> Callable[[], Any]:
        x, r = self._x(t, self.shapes.hidden), self._x(t, self.shapes.hidden)
        return lambda: ops.layernorm(x, r, self.layer.input_norm)

    def _op_final_layernorm(self, t: int) -> Callable[[], Any]:
        x, r = self._x(t, self.shapes.hidden), self._x(t, self.shapes.hidden)
        return lambda: ops.layernorm(x, r, self.step.final_norm)

    def _op_qkv_proj(self, t: int) -> Callable[[], Any]:
        x = self._x(t, self.shapes.hidden)
        return lambda: ops.linear(x, self.layer.qkv)

    def _op_qk_norm(self, t: int) -> Callable[[], Any]:
        s = self.shapes
        qkv = self._x(t, s.q_size + 2 * s.kv_size)
        return lambda: ops.qk_norm(qkv, s, self.layer.q_norm, self.layer.k_norm)

    def _op_rotary_emb(self, t: int) -> Callable[[], Any]:
        s = self.shapes
        qkv = self._x(t, s.q_size + 2 * s.kv_size)
        pos = torch.arange(t, device=self.device)
        return lambda: ops.rotary_emb(qkv, pos, s, self.step.rope_cos, self.step.rope_sin)

    def _op_o_proj(self, t: int) -> Callable[[], Any]:
        x = self._x(t, self.shapes.q_size)
        return lambda: ops.linear(x, self.layer.o)

    def _op_gate_up_proj(self, t: int) -> Callable[[], Any]:
        x = self._x(t, self.shapes.hidden)
        return lambda: ops.linear(x, self.layer.gate_up)

    def _op_act_fn(self, t: int) -> Callable[[], Any]:
        x = self._x(t, 2 * self.shapes.intermediate)
        return lambda: ops.act_fn(x)

    def _op_down_proj(self, t: int) -> Callable[[], Any]:
        x = self._x(t, self.shapes.intermediate)
        return lambda: ops.linear(x, self.layer.down)

    def _op_moe_gate(self, t: int) -> Callable[[], Any]:
        x = self._x(t, self.shapes.hidden)
        return lambda: ops.linear(x, self.layer.moe_gate)

    def _op_embedding(self, t: int) -> Callable[[], Any]:
        ids = torch.randint(0, self.shapes.full_vocab, (t,), generator=self._gen).to(self.device)
        return lambda: ops.embedding(ids, self.step.embed)

    # per-sequence ops -----------------------------------------------------------------
    def _op_lm_head(self, s: int) -> Callable[[], Any]:
        x = self._x(s, self.shapes.hidden)
        return lambda: ops.linear(x, self.step.lm_head)

    def _op_sampler(self, s: int) -> Callable[[], Any]:
        logits = self._x(s, self.shapes.full_vocab)
        return lambda: ops.sampler(logits)

    # attention and experts ---------------------------------------------------------
    def attention_call(self, prefills: list[tuple[int, int]],
                       decode_lens: list[int]) -> Callable[[], Any]:
        """The attention call of a step with ``prefills`` ``(new, cached)`` chunks and
        decodes of context ``decode_lens`` (each including its new token)."""
        s = self.shapes
        lengths = [n + c for n, c in prefills] + list(decode_lens)
        slots, num_slots = _paged_slots(lengths, self._gen)
        k_cache = self._x(num_slots, s.kv_size).view(num_slots, s.kv_heads, s.head_dim)
        v_cache = self._x(num_slots, s.kv_size).view(num_slots, s.kv_heads, s.head_dim)
        np_ = len(prefills)
        meta = ops.build_attention_meta(
            [(slots[i].to(self.device), prefills[i][0]) for i in range(np_)],
            [sl.to(self.device) for sl in slots[np_:]], self.device)
        rows = sum(n for n, _ in prefills) + len(decode_lens)
        qkv = self._x(rows, s.q_size + 2 * s.kv_size)
        return lambda: ops.attention(qkv, s, k_cache, v_cache, meta)

    def _attention(self, pc: int, kvp: int, nd: int, kvd: int) -> Callable[[], Any]:
        return self.attention_call([(pc, kvp)] if pc else [], [kvd] * nd)

    def _moe(self, t: int, active: int) -> Callable[[], Any]:
        """Experts for ``t`` tokens whose top-k choices cover exactly ``active`` experts
        (token ``i`` prefers experts ``(i*k + j) mod active``)."""
        s = self.shapes
        x = self._x(t, s.hidden)
        logits = ops.forced_router_logits(t, s.num_experts, s.top_k, active)
        logits = logits.to(self.device, self.dtype)
        return lambda: ops.moe(x, logits, self.layer.w13, self.layer.w2, s.top_k)
