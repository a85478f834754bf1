"""Decompose an engine step into operators, from the model architecture.

This is the one place that says which operators a step runs, how many times, and at what
shape. The profile cost model looks each operator up in its tables by ``name``; the gRPC
bridge turns each into a query for an external simulator. Both use this list, so their
results are comparable operator by operator.

Composition (docs/cost-model.md, "Kernel time from operator profiles"):
per decoder layer, every ``scope == "layer"`` op runs once per layer (``count`` times) at
the step's total tokens, plus attention over the step's batch; ``scope == "step"`` ops run
once per step; ``lm_head`` and ``sampler`` run at the number of sequences that emit a token.
With TP > 1 the step communicates as vLLM v0.19 does (docs/cluster-semantics.md, "Tensor parallelism", read from
``RowParallelLinear.forward``, ``VocabParallelEmbedding.forward``,
``LogitsProcessor._gather_logits`` and ``DefaultMoERunner``):

* ``all_reduce`` twice per decoder layer, ``[T_pad, hidden]`` in the model dtype: after
  ``o_proj`` and after the FFN (``down_proj``, or, for a MoE layer with TP-sharded experts,
  the MoE runner's all-reduce of the expert output, which replaces the ``down_proj`` one);
* ``embedding_all_reduce`` once per step, ``[T_pad, hidden]`` (the vocab-parallel embedding
  masks out-of-shard rows and all-reduces);
* ``logits_all_gather`` once per step, ``[num_sampled, vocab]`` gathered from
  ``[num_sampled, vocab / tp]`` per rank, outside the CUDA graph (so at the real sequence
  count, never padded).

With PP > 1 the step is the sum of its stages (async scheduling serialises them,
docs/cluster-semantics.md, "Pipeline parallelism"), so the per-layer ops keep their ``L``
count and :func:`_pipeline_ops` adds the communication between stages: ``pp_send_recv``,
``pp_all_gather`` (TP > 1) and ``pp_token_broadcast``.

``T_pad`` is the CUDA-graph-padded token count: every op with ``rows == TOKENS`` runs at the
padded count, which :mod:`llmsim.instance.step_time` applies by pricing the padded batch.
Bytes of one collective: :func:`collective_bytes` (``rows x n x dtype_bytes``).

Operator names match the LLMServingSim profile bundle (``dense.csv``/``per_sequence.csv``):
``embedding, layernorm, qkv_proj, qk_norm, rotary_emb, o_proj, gate_up_proj, act_fn,
down_proj, final_layernorm, lm_head, sampler``; plus ``attention``, ``moe`` (routed experts,
``moe.csv``), ``moe_gate`` (router GEMM) and the collectives ``all_reduce``,
``embedding_all_reduce`` and ``logits_all_gather``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache

from llmsim.cluster.moe_dp import MoeMode, moe_mode
from llmsim.cluster.parallel import SINGLE_GPU, ParallelConfig
from llmsim.model.config import ModelConfig


class OpClass(StrEnum):
    """What kind of computation an operator is (how an analytical model prices it)."""

    GEMM = "gemm"                # (M x K) @ (K x N); M = rows (tokens or sequences)
    ELEMENTWISE = "elementwise"  # norms, activations, rotary: elements touched
    EMBEDDING = "embedding"      # table gather: rows x hidden
    ATTENTION = "attention"      # paged attention over the step's batch
    MOE = "moe"                  # routed expert FFNs
    MOE_ACROSS_RANKS = "moe_across_ranks"  # routed experts priced by llmsim.cluster.moe_dp
    SAMPLER = "sampler"          # sampling over the vocabulary per sequence
    COLLECTIVE = "collective"    # TP communication


class Scope(StrEnum):
    """How often an operator runs per step."""

    LAYER = "layer"  # once per decoder layer (x count)
    STEP = "step"    # once per step


class Rows(StrEnum):
    """Which batch dimension an operator scales with."""

    TOKENS = "tokens"        # all tokens computed in the step
    SEQUENCES = "sequences"  # sequences that emit a token
    BATCH = "batch"          # the whole batch structure (attention)


@dataclass(frozen=True, slots=True, kw_only=True)
class OpSpec:
    """One operator of the step.

    Attributes:
        name: profile operator name.
        op_class: computation kind.
        scope: per layer or per step.
        count: times it runs per scope (e.g. 2 layernorms per layer).
        rows: the batch dimension it scales with.
        n: GEMM output columns per rank (elements), or elements per row for
            element-wise ops; 0 when not applicable.
        k: GEMM reduction dimension per rank (elements); 0 when not applicable.
        collective: for ``COLLECTIVE`` ops, which collective (``all_reduce``,
            ``all_gather``, ...; :class:`llmsim.costmodel.collectives.Collective` values);
            ``n`` is then the elements per row of the full (reduced or gathered) tensor.
        group: for ``COLLECTIVE`` ops, the rank group it runs over: ``"tp"`` (the stage's
            TP group) or ``"pp"`` (between pipeline stages).
        elem_bytes: bytes per element of a ``COLLECTIVE`` op's tensor; 0: the model dtype.
    """

    name: str
    op_class: OpClass
    scope: Scope
    count: int
    rows: Rows
    n: int = 0
    k: int = 0
    collective: str = ""
    group: str = "tp"
    elem_bytes: int = 0

    def gemm_mnk(self, rows: int) -> tuple[int, int, int]:
        """``(M, N, K)`` of this GEMM at ``rows`` rows."""
        return rows, self.n, self.k

    def elements(self, rows: int) -> int:
        """Elements touched by an element-wise op at ``rows`` rows."""
        return rows * self.n


def _is_qwen3(model: ModelConfig) -> bool:
    return "qwen3" in model.architecture.lower()


@lru_cache(maxsize=64)
def step_ops(model: ModelConfig, parallel: ParallelConfig = SINGLE_GPU) -> tuple[OpSpec, ...]:
    """The operators of one engine step for ``model`` in layout ``parallel`` (TP degree
    ``tp = parallel.tensor_parallel_size``).

    Shapes are one rank's share: column-parallel GEMMs (qkv, gate_up) split N by ``tp``,
    row-parallel GEMMs (o_proj, down_proj) split K by ``tp``; KV heads are replicated when
    ``tp`` exceeds them.

    A MoE model whose experts run across ranks (:func:`llmsim.cluster.moe_dp.moe_mode` is
    not None, except EP over DP at TP 1) gets its ``moe`` op as
    :attr:`OpClass.MOE_ACROSS_RANKS`, which the profile cost model leaves to
    :mod:`llmsim.cluster.moe_dp`; under sequence-parallel MoE (DP > 1, TP > 1, EP) the
    per-layer all-reduce after the experts is left out too (replaced there by a TP
    all-gather).

    Returns:
        Operators in execution order (per-layer ops first, then per-step ops).
    """
    tp = parallel.tensor_parallel_size
    h, d = model.hidden_size, model.head_dim
    q_heads = max(1, model.num_attention_heads // tp)
    kv_heads = max(1, model.num_key_value_heads // tp)
    L, S = Scope.LAYER, Scope.STEP
    T, Q = Rows.TOKENS, Rows.SEQUENCES
    ops: list[OpSpec] = [
        OpSpec(name="layernorm", op_class=OpClass.ELEMENTWISE, scope=L, count=2, rows=T, n=h),
        OpSpec(name="qkv_proj", op_class=OpClass.GEMM, scope=L, count=1, rows=T,
               n=(q_heads + 2 * kv_heads) * d, k=h),
    ]
    if _is_qwen3(model):
        ops.append(OpSpec(name="qk_norm", op_class=OpClass.ELEMENTWISE, scope=L, count=1,
                          rows=T, n=(q_heads + kv_heads) * d))
    ops += [
        OpSpec(name="rotary_emb", op_class=OpClass.ELEMENTWISE, scope=L, count=1, rows=T,
               n=(q_heads + kv_heads) * d),
        OpSpec(name="attention", op_class=OpClass.ATTENTION, scope=L, count=1,
               rows=Rows.BATCH, n=q_heads * d, k=kv_heads * d),
        OpSpec(name="o_proj", op_class=OpClass.GEMM, scope=L, count=1, rows=T, n=h,
               k=q_heads * d),
    ]
    if tp > 1:
        ops.append(OpSpec(name="all_reduce", op_class=OpClass.COLLECTIVE, scope=L, count=1,
                          rows=T, n=h, collective="all_reduce"))
    sequence_parallel_moe = False
    if model.is_moe:
        inter = model.moe_intermediate_size // tp
        moe_class = OpClass.MOE
        mode = moe_mode(parallel)
        if mode is not None and mode is not MoeMode.EP_OVER_DP:
            # experts spread over ranks (EP) or sharded over dp x tp: the rank's TP cost
            # model leaves them to llmsim.cluster.moe_dp (EP over DP at TP 1 keeps its TP1
            # moe, which the lock-step group replaces)
            moe_class = OpClass.MOE_ACROSS_RANKS
            sequence_parallel_moe = mode is MoeMode.EP_SEQUENCE_PARALLEL
        ops += [
            OpSpec(name="moe_gate", op_class=OpClass.GEMM, scope=L, count=1, rows=T,
                   n=model.num_experts, k=h),
            OpSpec(name="moe", op_class=moe_class, scope=L, count=1, rows=T, n=inter, k=h),
        ]
    else:
        inter = model.intermediate_size // tp
        ops += [
            OpSpec(name="gate_up_proj", op_class=OpClass.GEMM, scope=L, count=1, rows=T,
                   n=2 * inter, k=h),
            OpSpec(name="act_fn", op_class=OpClass.ELEMENTWISE, scope=L, count=1, rows=T,
                   n=inter),
            OpSpec(name="down_proj", op_class=OpClass.GEMM, scope=L, count=1, rows=T, n=h,
                   k=inter),
        ]
    if tp > 1 and not sequence_parallel_moe:
        # after down_proj, or the MoE runner's reduce of the TP-sharded experts; sequence-
        # parallel MoE replaces it with its TP all-gather (llmsim.cluster.moe_dp)
        ops.append(OpSpec(name="all_reduce", op_class=OpClass.COLLECTIVE, scope=L, count=1,
                          rows=T, n=h, collective="all_reduce"))
    ops.append(OpSpec(name="embedding", op_class=OpClass.EMBEDDING, scope=S, count=1,
                      rows=T, n=h))
    if tp > 1:
        ops.append(OpSpec(name="embedding_all_reduce", op_class=OpClass.COLLECTIVE, scope=S,
                          count=1, rows=T, n=h, collective="all_reduce"))
    ops += [
        OpSpec(name="final_layernorm", op_class=OpClass.ELEMENTWISE, scope=S, count=1,
               rows=T, n=h),
        OpSpec(name="lm_head", op_class=OpClass.GEMM, scope=S, count=1, rows=Q,
               n=model.vocab_size // tp, k=h),
    ]
    if tp > 1:
        ops.append(OpSpec(name="logits_all_gather", op_class=OpClass.COLLECTIVE, scope=S,
                          count=1, rows=Q, n=model.vocab_size, collective="all_gather"))
    ops.append(OpSpec(name="sampler", op_class=OpClass.SAMPLER, scope=S, count=1, rows=Q,
                      n=model.vocab_size))
    if parallel.pipeline_parallel_size > 1:
        ops += _pipeline_ops(model, parallel)
    return tuple(ops)


PP_TOKEN_ID_BYTES = 8
"""Bytes of one sampled token id broadcast from the last pipeline stage (int64: vLLM V1's
sampler returns ``torch.long`` ids, ``vllm/v1/sample/sampler.py``)."""


def _pipeline_ops(model: ModelConfig, parallel: ParallelConfig) -> list[OpSpec]:
    """The communication pipeline parallelism adds to a step (docs/cluster-semantics.md,
    "Pipeline parallelism"; vLLM 0.19 ``GroupCoordinator.isend_tensor_dict``,
    ``GPUModelRunner._pp_broadcast_prev_sampled_token_ids``):

    * ``pp_send_recv``, ``pp - 1`` per step (one per stage boundary): the hidden state and
      the residual, ``[T_pad, hidden]`` each, every TP rank sending ``1/tp`` of each to its
      peer of the next stage (the whole tensors when ``hidden`` does not split over ``tp``);
    * ``pp_all_gather``, ``2 (pp - 1)`` per step when ``tp > 1``: the receiving stage
      all-gathers both tensors over its TP group;
    * ``pp_token_broadcast``, once per step: the last stage broadcasts the sampled token ids
      (``PP_TOKEN_ID_BYTES`` each) to the other stages, which with async scheduling is what
      the next step waits on. Priced as one point-to-point message (nccl-tests' broadcast
      bus factor is 1, as send/recv's).

    The pickled tensor metadata sent over the CPU (gloo) group at every boundary is not
    modelled (no sourced figure for its cost).
    """
    tp, pp = parallel.tensor_parallel_size, parallel.pipeline_parallel_size
    h = model.hidden_size
    split = h % tp == 0
    S, T, Q = Scope.STEP, Rows.TOKENS, Rows.SEQUENCES
    ops = [OpSpec(name="pp_send_recv", op_class=OpClass.COLLECTIVE, scope=S, count=pp - 1,
                  rows=T, n=2 * h // tp if split else 2 * h, collective="send_recv",
                  group="pp")]
    if tp > 1 and split:
        ops.append(OpSpec(name="pp_all_gather", op_class=OpClass.COLLECTIVE, scope=S,
                          count=2 * (pp - 1), rows=T, n=h, collective="all_gather"))
    ops.append(OpSpec(name="pp_token_broadcast", op_class=OpClass.COLLECTIVE, scope=S,
                      count=1, rows=Q, n=1, collective="send_recv", group="pp",
                      elem_bytes=PP_TOKEN_ID_BYTES))
    return ops


def all_reduce_bytes(model: ModelConfig, tokens: int) -> int:
    """Bytes of one TP all-reduce of the hidden states: ``tokens x hidden x dtype_bytes``."""
    return tokens * model.hidden_size * model.dtype_bytes


def collective_bytes(op: OpSpec, rows: int, dtype_bytes: int) -> int:
    """Bytes of one call of collective ``op`` at ``rows`` rows: ``rows x n x dtype_bytes``
    (``op.elem_bytes`` in place of ``dtype_bytes`` when the op sets it).

    ``rows`` is the padded token count for ``TOKENS`` ops and the sampled sequence count for
    ``SEQUENCES`` ops; the result is the full tensor (the all-gather's gathered result; a
    send/recv's message between one pair of ranks).
    """
    return rows * op.n * (op.elem_bytes or dtype_bytes)
