"""Per-step TP traffic as vLLM does it: which collectives, how many, how many bytes, and the
CUDA-graph-padded token count they run at (docs/cluster-semantics.md, "Tensor parallelism")."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from llmsim.cluster.parallel import ParallelConfig
from llmsim.costmodel.base import PrefillChunk, StepBatch
from llmsim.costmodel.collectives import Collective
from llmsim.costmodel.decompose import OpClass, Rows, Scope, collective_bytes, step_ops
from llmsim.costmodel.profile_model import ProfileCostModel
from llmsim.instance.step_time import StepOverheads, StepTimeModel
from llmsim.model.config import ModelConfig
from llmsim.scheduler.plan import BatchPlan
from llmsim.v1 import profile_pb2 as pb

TP2 = ParallelConfig(tensor_parallel_size=2)

LAYERS = 3
HIDDEN = 8
VOCAB = 64
TOKENS = [1, 2, 4, 8, 16, 32]


def make_model(**overrides) -> ModelConfig:
    base = {"name": "t", "architecture": "LlamaForCausalLM", "num_hidden_layers": LAYERS,
            "hidden_size": HIDDEN, "num_attention_heads": 4, "num_key_value_heads": 2,
            "head_dim": 2, "intermediate_size": 16, "vocab_size": VOCAB}
    base.update(overrides)
    return ModelConfig(**base)


def make_profile(tps=(1, 2)) -> pb.Profile:
    """Flat 100 ns dense ops, 1 us attention: the collectives are all that varies."""
    profile = pb.Profile(schema_version=1)
    for tp in tps:
        tpp = profile.tp.add(tp_degree=tp)
        for op in ("layernorm", "qkv_proj", "rotary_emb", "o_proj", "gate_up_proj", "act_fn",
                   "down_proj", "embedding", "final_layernorm"):
            t = tpp.ops.add(op=op, kind=pb.OP_KIND_DENSE)
            t.axes.add(name="tokens", values=TOKENS)
            t.mean_ns.extend([100.0] * len(TOKENS))
        for op in ("lm_head", "sampler"):
            t = tpp.ops.add(op=op, kind=pb.OP_KIND_PER_SEQUENCE)
            t.axes.add(name="sequences", values=[1, 64])
            t.mean_ns.extend([10.0, 10.0])
        pts = [(0, 0, n, kv) for n in (1, 64) for kv in (1, 4096)]
        pts += [(pc, kp, 0, 0) for pc in (1, 64) for kp in (0, 4096)]
        pts += [(pc, kp, n, kv) for pc in (1, 64) for kp in (0, 4096) for n in (1, 64)
                for kv in (1, 4096)]
        att = tpp.ops.add(op="attention", kind=pb.OP_KIND_ATTENTION)
        for i, name in enumerate(("prefill_chunk", "kv_prefill", "n_decode", "kv_decode")):
            att.axes.add(name=name, values=[p[i] for p in pts])
        att.mean_ns.extend([1000.0] * len(pts))
    return profile


@dataclass
class RecordingLink:
    """An analytic collectives model that records every call: ``1000 + bytes`` ns."""

    calls: list[tuple[Collective, int, int]] = field(default_factory=list)
    source: str = "fake:recording"

    def time_ns(self, collective: Collective, nbytes: float, ranks: int) -> float:
        self.calls.append((collective, int(nbytes), ranks))
        return 1000.0 + nbytes

    def all_reduce_ns(self, nbytes: float, ranks: int) -> float:
        return self.time_ns(Collective.ALL_REDUCE, nbytes, ranks)


def comm_ops(model: ModelConfig, tp: int) -> list:
    ops = step_ops(model, ParallelConfig(tensor_parallel_size=tp))
    return [op for op in ops if op.op_class is OpClass.COLLECTIVE]


def test_tp1_has_no_collectives():
    assert comm_ops(make_model(), 1) == []
    assert comm_ops(make_model(num_experts=8, num_experts_per_token=2,
                               moe_intermediate_size=8), 1) == []


@pytest.mark.parametrize("moe", [False, True])
def test_collectives_per_step_dense_and_moe(moe):
    moe_cfg = {"num_experts": 8, "num_experts_per_token": 2, "moe_intermediate_size": 8}
    extra = moe_cfg if moe else {}
    model = make_model(**extra)
    ops = comm_ops(model, 2)
    per_layer = [op for op in ops if op.scope is Scope.LAYER]
    per_step = [op for op in ops if op.scope is Scope.STEP]
    # 2 all-reduces per layer (o_proj; down_proj or the MoE runner's reduce), each at T x H
    assert [(o.name, o.collective, o.rows, o.n) for o in per_layer] == [
        ("all_reduce", "all_reduce", Rows.TOKENS, HIDDEN)] * 2
    assert sum(o.count for o in per_layer) * LAYERS == 2 * LAYERS
    # one embedding all-reduce at T x H, one logits all-gather of S x V (not padded)
    assert [(o.name, o.collective, o.rows, o.n) for o in per_step] == [
        ("embedding_all_reduce", "all_reduce", Rows.TOKENS, HIDDEN),
        ("logits_all_gather", "all_gather", Rows.SEQUENCES, VOCAB)]
    names = [op.name for op in step_ops(model, TP2)]
    ffn_end = "moe" if moe else "down_proj"
    assert names.index("all_reduce") == names.index("o_proj") + 1
    assert names[names.index(ffn_end) + 1] == "all_reduce"


def test_collective_bytes_tokens_hidden_dtype():
    model = make_model(dtype_bytes=2)
    ar, emb, ag = comm_ops(model, 2)[0], comm_ops(model, 2)[2], comm_ops(model, 2)[3]
    assert collective_bytes(ar, 24, model.dtype_bytes) == 24 * HIDDEN * 2
    assert collective_bytes(emb, 24, model.dtype_bytes) == 24 * HIDDEN * 2
    assert collective_bytes(ag, 5, model.dtype_bytes) == 5 * VOCAB * 2


def test_step_prices_every_collective_at_its_bytes():
    link = RecordingLink()
    model = ProfileCostModel(make_profile(), model=make_model(), parallel=TP2, link=link)
    batch = StepBatch(prefills=(PrefillChunk(num_new_tokens=5),),
                      decode_context_lens=(10, 20, 30), parallel=TP2)  # T = 8, S = 4
    cost = model.step_cost(batch)
    ar_bytes, ag_bytes = 8 * HIDDEN * 2, 4 * VOCAB * 2
    assert sorted(set(link.calls)) == sorted({(Collective.ALL_REDUCE, ar_bytes, 2),
                                              (Collective.ALL_GATHER, ag_bytes, 2)})
    bd = cost.breakdown_ns
    assert bd["all_reduce"] == 2 * LAYERS * (1000 + ar_bytes)
    assert bd["embedding_all_reduce"] == 1000 + ar_bytes
    assert bd["logits_all_gather"] == 1000 + ag_bytes
    assert cost.duration_ns == sum(bd.values())
    # every priced collective's source is retrievable
    assert model.collective_sources[("all_reduce", "unknown", "fake:recording")] == 1
    assert model.collective_sources[("logits_all_gather", "nccl", "fake:recording")] == 1
    tp1 = model.step_cost(StepBatch(decode_context_lens=(10,)))
    assert not {"all_reduce", "embedding_all_reduce", "logits_all_gather"} & tp1.breakdown_ns.keys()


def test_collectives_run_at_the_padded_token_count():
    """With CUDA-graph padding to 8 tokens, the all-reduces move 8 x H x 2 bytes; the logits
    all-gather (outside the graph) stays at the real sequence count."""
    link = RecordingLink()
    model_cfg = make_model()
    cost_model = ProfileCostModel(make_profile(), model=model_cfg, parallel=TP2, link=link)
    stm = StepTimeModel(cost_model, StepOverheads(), cudagraph_capture_sizes=(1, 2, 4, 8),
                        model=model_cfg, parallel=TP2)
    batch = StepBatch(decode_context_lens=(7,) * 5, parallel=TP2)
    plan = BatchPlan(chunks=(), batch=batch, num_prefill_tokens=0, num_decodes=5, preempted=(),
                     admitted=(), scheduled_ns=0)
    gpu_ns, real = stm.gpu_ns(plan)
    padded_ar = 1000 + 8 * HIDDEN * 2
    real_ar = 1000 + 5 * HIDDEN * 2
    assert gpu_ns - real.duration_ns == (2 * LAYERS + 1) * (padded_ar - real_ar)
    assert real.breakdown_ns["logits_all_gather"] == 1000 + 5 * VOCAB * 2
