"""Turn an engine step into bridge queries, using the shared operator decomposition.

:func:`llmsim.costmodel.decompose.step_ops` says which operators a step runs; this module
gives each one a hashable *query key* (the client's memo key) and builds the protobuf
``OpQuery`` for the keys the server has not answered yet.

Query keys (kind, operator name, repetitions, shape...)::

    ("gemm", name, reps, m, n, k)
    ("elementwise", name, reps, rows, row_elements)   # norms, act_fn, rotary, embedding, sampler
    ("collective", name, reps, collective, bytes, ranks)
    ("moe", name, reps, tokens, experts, experts_per_token, hidden, intermediate)
    ("attention", name, reps, prefills, num_decodes, kv_sum, kv_max, kv_min, kv_lens)

``reps`` is how often the operator runs per step (``count x num_hidden_layers`` for
per-layer ops): the server prices the repetitions together, as the profile cost model
weights its tables before interpolating, so the profile server's answers are bit-identical.
It is constant per operator, so it never costs a cache hit.

Attention is one query per step describing the whole batch: ``prefills`` is the tuple of
``(new_tokens, cached_tokens)`` chunks in scheduling order, and decodes are summarized by
count, sum, max and min of their KV lengths. ``kv_lens`` (sorted ascending) is filled only
for servers that ask for ``ATTENTION_DETAIL_PER_DECODE`` (their answer depends on the KV
distribution), else ``()``. Why this shape: GEMM / element-wise keys depend only on the
step's token and sequence counts and recur across layers and steps (the memo reuses them);
the attention key is the least information that prices a batch exactly, and a summarized
key recurs whenever the batch totals recur (decode-only steps of equal batch and KV sum).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from llmsim.cluster.parallel import ParallelConfig
from llmsim.costmodel.base import StepBatch
from llmsim.costmodel.decompose import OpClass, OpSpec, Rows, Scope, collective_bytes, step_ops
from llmsim.model.config import ModelConfig
from llmsim.v1 import cost_model_pb2 as pb

# A query key is one of the heterogeneous tuples drawn in the module docstring; their
# fields are read by position (``to_proto``), so the alias stays a plain tuple.
QueryKey = tuple[Any, ...]
KeyBuilder = Callable[[int, StepBatch], QueryKey]

# Operator classes of the decomposition -> the protocol's operator kinds.
KIND_OF_CLASS: dict[OpClass, int] = {
    OpClass.GEMM: pb.OPERATOR_KIND_GEMM,
    OpClass.ELEMENTWISE: pb.OPERATOR_KIND_ELEMENTWISE,
    OpClass.EMBEDDING: pb.OPERATOR_KIND_ELEMENTWISE,
    OpClass.SAMPLER: pb.OPERATOR_KIND_ELEMENTWISE,
    OpClass.ATTENTION: pb.OPERATOR_KIND_ATTENTION,
    OpClass.MOE: pb.OPERATOR_KIND_MOE,
    OpClass.COLLECTIVE: pb.OPERATOR_KIND_COLLECTIVE,
}


@dataclass(frozen=True, slots=True, kw_only=True)
class PlannedOp:
    """One operator of a step, priced by its query.

    Attributes:
        name: decomposition operator name (breakdown key).
        key: query key (memo key); its answer covers all the step's executions of the op.
    """

    name: str
    key: QueryKey


def _tp_layout(tp: int) -> ParallelConfig:
    """The layout of a bridge query at TP degree ``tp`` (the protocol names TP only)."""
    return ParallelConfig(tensor_parallel_size=tp)


@lru_cache(maxsize=64)
def required_kinds(model: ModelConfig, tp: int) -> frozenset[int]:
    """Protocol operator kinds a server must price for ``model`` at ``tp``."""
    return frozenset(KIND_OF_CLASS[op.op_class] for op in step_ops(model, _tp_layout(tp)))


def _row_builders(model: ModelConfig, tp: int, per_decode: bool
                  ) -> list[tuple[str, Rows, KeyBuilder]]:
    """Per operator: name, rows kind and a key builder."""
    builders: list[tuple[str, Rows, KeyBuilder]] = []
    layers = model.num_hidden_layers
    for op in step_ops(model, _tp_layout(tp)):
        times = op.count * (layers if op.scope is Scope.LAYER else 1)
        name = op.name
        key: KeyBuilder
        if op.op_class is OpClass.GEMM:
            n, k = op.n, op.k

            def gemm_key(rows: int, _b: StepBatch, name: str = name, t: int = times,
                         n: int = n, k: int = k) -> QueryKey:
                return ("gemm", name, t, rows, n, k)
            key = gemm_key
        elif op.op_class in (OpClass.ELEMENTWISE, OpClass.EMBEDDING, OpClass.SAMPLER):
            n = op.n

            def elementwise_key(rows: int, _b: StepBatch, name: str = name, t: int = times,
                                n: int = n) -> QueryKey:
                return ("elementwise", name, t, rows, n)
            key = elementwise_key
        elif op.op_class is OpClass.COLLECTIVE:
            def collective_key(rows: int, _b: StepBatch, name: str = name, t: int = times,
                               op: OpSpec = op) -> QueryKey:
                return ("collective", name, t, op.collective or "all_reduce",
                        collective_bytes(op, rows, model.dtype_bytes), tp)
            key = collective_key
        elif op.op_class is OpClass.MOE:
            e, topk, n, k = model.num_experts, model.num_experts_per_token, op.n, op.k

            def moe_key(rows: int, _b: StepBatch, name: str = name, t: int = times,
                        e: int = e, topk: int = topk, n: int = n, k: int = k) -> QueryKey:
                return ("moe", name, t, rows, e, topk, k, n)
            key = moe_key
        else:  # attention over the batch structure
            def batch_key(_rows: int, b: StepBatch, name: str = name, t: int = times) -> QueryKey:
                return attention_key(name, t, b, per_decode)
            key = batch_key
        builders.append((name, op.rows, key))
    return builders


def attention_key(name: str, reps: int, batch: StepBatch, per_decode: bool) -> QueryKey:
    """The attention query key of ``batch`` (see the module docstring)."""
    prefills = tuple((p.num_new_tokens, p.num_cached_tokens) for p in batch.prefills)
    lens = batch.decode_context_lens
    if lens:
        summary = (len(lens), sum(lens), max(lens), min(lens))
    else:
        summary = (0, 0, 0, 0)
    detail = tuple(sorted(lens)) if per_decode else ()
    return ("attention", name, reps, prefills, *summary, detail)


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class StepShape:
    """The plan shared by every step with the same token and sequence counts.

    One object per ``(tp, tokens, sequences)`` (the planner memoizes them), compared and
    hashed by identity.

    Attributes:
        ops: every operator but attention, with its query key, in execution order (ops at
            zero rows left out).
        attention_at: index in ``ops`` before which attention runs; -1 when the step
            computes no token (no attention).
        attention_name: attention's operator name.
        attention_reps: attention's repetitions per step.
    """

    ops: tuple[PlannedOp, ...]
    attention_at: int
    attention_name: str
    attention_reps: int


class StepPlanner:
    """Plans the queries of steps for one model, dtype and attention detail."""

    def __init__(self, model: ModelConfig, *, dtype: str, per_decode: bool) -> None:
        self.model = model
        self.dtype = dtype
        self.per_decode = per_decode
        self._builders: dict[int, list[tuple[str, Rows, KeyBuilder]]] = {}
        self._shapes: dict[tuple[int, int, int], StepShape] = {}

    def shape(self, tp: int, tokens: int, sequences: int) -> StepShape:
        """The :class:`StepShape` of steps of ``tokens`` tokens and ``sequences`` sampled
        sequences at TP ``tp`` (memoized: token counts recur across steps)."""
        key = (tp, tokens, sequences)
        shape = self._shapes.get(key)
        if shape is not None:
            return shape
        builders = self._builders.get(tp)
        if builders is None:
            builders = self._builders[tp] = _row_builders(self.model, tp, self.per_decode)
        ops: list[PlannedOp] = []
        at, att_name, att_reps = -1, "", 0
        empty = StepBatch()  # only the attention builder reads the batch
        for name, rows_kind, build in builders:
            if rows_kind is Rows.BATCH:
                att_name = name
                att_reps = build(0, empty)[2]
                if tokens:  # attention: present whenever the step computes tokens
                    at = len(ops)
                continue
            rows = tokens if rows_kind is Rows.TOKENS else sequences
            if rows:
                ops.append(PlannedOp(name=name, key=build(rows, empty)))
        shape = self._shapes[key] = StepShape(ops=tuple(ops), attention_at=at,
                                              attention_name=att_name, attention_reps=att_reps)
        return shape

    def attention_key(self, shape: StepShape, batch: StepBatch) -> QueryKey:
        """The attention query key of ``batch`` (whose shape is ``shape``)."""
        return attention_key(shape.attention_name, shape.attention_reps, batch,
                             self.per_decode)

    def plan(self, batch: StepBatch) -> list[PlannedOp]:
        """The operators of ``batch`` with their query keys; ops at zero rows are left out."""
        shape = self.shape(batch.tp, batch.num_tokens, batch.num_sampled)
        planned = list(shape.ops)
        if shape.attention_at >= 0:
            planned.insert(shape.attention_at, PlannedOp(
                name=shape.attention_name, key=self.attention_key(shape, batch)))
        return planned

    def decode_run_attention_keys(self, lens: tuple[int, ...], tp: int, first_step: int,
                                  last_step: int) -> list[QueryKey]:
        """Attention keys of a decode-only batch ``lens`` after ``first_step..last_step`` steps.

        After ``j`` steps every KV length has grown by ``j``: the summary is
        ``(n, sum + n j, max + j, min + j)`` (and every sorted length ``+ j`` under
        per-decode detail). The other operators' keys do not change along such a run
        (same token and sequence counts), so these are the only new keys of its steps.

        Args:
            lens: decode KV lengths (tokens) at step 0; not empty.
            tp: tensor-parallel degree.
            first_step: first step ahead (>= 1).
            last_step: last step ahead (inclusive).
        """
        layers = self.model.num_hidden_layers
        op = next(op for op in step_ops(self.model, _tp_layout(tp)) if op.rows is Rows.BATCH)
        name, reps = op.name, op.count * (layers if op.scope is Scope.LAYER else 1)
        n, total, hi, lo = len(lens), sum(lens), max(lens), min(lens)
        ordered = tuple(sorted(lens)) if self.per_decode else ()
        return [("attention", name, reps, (), n, total + n * j, hi + j, lo + j,
                 tuple(x + j for x in ordered) if ordered else ())
                for j in range(first_step, last_step + 1)]

    def to_proto(self, key: QueryKey, tp: int) -> pb.OpQuery:
        """The protobuf query for ``key``."""
        kind, name, reps = key[0], key[1], key[2]
        key = key[1:]  # shape fields start at key[2]
        q = pb.OpQuery(op_name=name, dtype=self.dtype, tp_degree=tp, tp_rank=0,
                       repetitions=reps)
        if kind == "gemm":
            q.gemm.m, q.gemm.n, q.gemm.k = key[2], key[3], key[4]
        elif kind == "elementwise":
            q.elementwise.rows, q.elementwise.row_elements = key[2], key[3]
        elif kind == "collective":
            q.collective.collective, q.collective.bytes, q.collective.ranks = key[2:5]
        elif kind == "moe":
            m = q.moe
            m.tokens, m.num_experts, m.experts_per_token = key[2], key[3], key[4]
            m.hidden_size, m.intermediate_size = key[5], key[6]
        elif kind == "attention":
            a = q.attention
            model = self.model
            a.num_q_heads = max(1, model.num_attention_heads // tp)
            a.num_kv_heads = max(1, model.num_key_value_heads // tp)
            a.head_dim = model.head_dim
            for new, cached in key[2]:
                a.prefills.add(new_tokens=new, cached_tokens=cached)
            a.num_decodes, a.decode_kv_sum, a.decode_kv_max, a.decode_kv_min = key[3:7]
            a.decode_kv_lens.extend(key[7])
        else:  # pragma: no cover - keys come from this module
            raise ValueError(f"unknown query kind {kind!r}")
        return q
