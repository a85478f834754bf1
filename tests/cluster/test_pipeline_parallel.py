"""Pipeline parallelism: vLLM's layer split, the collectives of a PP / TP x PP step (count and
bytes), per-stage KV capacity, the communication report and the YAML errors of bad PP settings
(docs/cluster-semantics.md, "Pipeline parallelism")."""

from __future__ import annotations

import textwrap
from collections import Counter
from pathlib import Path

import pytest

from llmsim.cluster.parallel import ParallelConfig, check_supported, pp_layer_split
from llmsim.costmodel.base import PrefillChunk, StepBatch
from llmsim.costmodel.collectives import Collective
from llmsim.costmodel.decompose import PP_TOKEN_ID_BYTES, OpClass, Scope, step_ops
from llmsim.costmodel.profile_model import ProfileCostModel
from llmsim.errors import ConfigError
from llmsim.experiment import load_experiment
from llmsim.instance.step_time import StepOverheads, StepTimeModel
from llmsim.memory.capacity import activation_peak_bytes, kv_capacity
from llmsim.metrics.communication import group_communication
from llmsim.model.config import ModelConfig
from llmsim.replay import check_parallel_supported
from llmsim.scheduler.plan import BatchPlan
from tests.costmodel.test_collectives_traffic import (
    HIDDEN,
    LAYERS,
    VOCAB,
    RecordingLink,
    make_model,
    make_profile,
)


def reference_pp_indices(num_layers: int, rank: int, world: int) -> tuple[int, int]:
    """vLLM 0.19 ``get_pp_indices`` as its docstring and code describe it: ``L // pp`` per
    partition, the remainder added to partitions -2, -3, ... (written independently here)."""
    parts = [num_layers // world] * world
    for i in range(2, num_layers % world + 2):
        parts[-i] += 1
    start = sum(parts[:rank])
    return start, start + parts[rank]


@pytest.mark.parametrize("num_layers,pp", [(80, 2), (80, 3), (32, 5), (7, 4), (4, 4), (81, 4),
                                           (61, 8), (1, 1), (126, 16), (48, 7)])
def test_layer_split_matches_get_pp_indices(num_layers: int, pp: int) -> None:
    split = pp_layer_split(num_layers, pp)
    assert split == tuple(reference_pp_indices(num_layers, r, pp) for r in range(pp))
    assert split[0][0] == 0 and split[-1][1] == num_layers
    assert all(a[1] == b[0] for a, b in zip(split, split[1:], strict=False))


def test_layer_split_known_values() -> None:
    sizes = [e - s for s, e in pp_layer_split(80, 3)]
    assert sizes == [27, 27, 26]  # remainder 2 to the stages before the last
    assert [e - s for s, e in pp_layer_split(32, 5)] == [6, 6, 7, 7, 6]
    assert [e - s for s, e in pp_layer_split(81, 4)] == [20, 20, 21, 20]
    with pytest.raises(ConfigError) as err:
        pp_layer_split(3, 4)
    assert err.value.field == "engine.pipeline_parallel_size"


def _comm(model: ModelConfig, parallel: ParallelConfig) -> dict[str, tuple]:
    out = {}
    for op in step_ops(model, parallel):
        if op.op_class is OpClass.COLLECTIVE:
            calls = op.count * (model.num_hidden_layers if op.scope is Scope.LAYER else 1)
            prev = out.get(op.name, (op.collective, op.group, 0, op.n, op.elem_bytes))
            out[op.name] = (op.collective, op.group, prev[2] + calls, op.n, op.elem_bytes)
    return out


def test_collectives_per_step_tp_pp_and_tp_x_pp() -> None:
    model = make_model()
    tp2 = _comm(model, ParallelConfig(tensor_parallel_size=2))
    assert tp2 == {"all_reduce": ("all_reduce", "tp", 2 * LAYERS, HIDDEN, 0),
                   "embedding_all_reduce": ("all_reduce", "tp", 1, HIDDEN, 0),
                   "logits_all_gather": ("all_gather", "tp", 1, VOCAB, 0)}
    pp3 = _comm(model, ParallelConfig(pipeline_parallel_size=3))
    # one send/recv of hidden + residual per stage boundary, one token-id broadcast
    assert pp3 == {"pp_send_recv": ("send_recv", "pp", 2, 2 * HIDDEN, 0),
                   "pp_token_broadcast": ("send_recv", "pp", 1, 1, PP_TOKEN_ID_BYTES)}
    both = _comm(model, ParallelConfig(tensor_parallel_size=2, pipeline_parallel_size=3))
    assert both == {**tp2,
                    "pp_send_recv": ("send_recv", "pp", 2, 2 * HIDDEN // 2, 0),  # 1/tp each
                    "pp_all_gather": ("all_gather", "tp", 4, HIDDEN, 0),  # 2 tensors x 2
                    "pp_token_broadcast": ("send_recv", "pp", 1, 1, PP_TOKEN_ID_BYTES)}


def test_pp_step_prices_every_collective_at_its_bytes() -> None:
    link = RecordingLink()
    par = ParallelConfig(tensor_parallel_size=2, pipeline_parallel_size=3)
    cm = ProfileCostModel(make_profile(), model=make_model(), parallel=par, link=link)
    batch = StepBatch(prefills=(PrefillChunk(num_new_tokens=5),), decode_context_lens=(10, 20, 30),
                      parallel=par)  # T = 8, S = 4
    cost = cm.step_cost(batch)
    t, s = 8, 4
    hid = t * HIDDEN * 2
    send = t * 2 * HIDDEN // 2 * 2  # hidden + residual, 1/tp per TP rank, bf16
    assert set(link.calls) == {(Collective.ALL_REDUCE, hid, 2), (Collective.ALL_GATHER, s * VOCAB * 2, 2),
                               (Collective.SEND_RECV, send, 2), (Collective.ALL_GATHER, hid, 2),
                               (Collective.SEND_RECV, s * PP_TOKEN_ID_BYTES, 2)}
    bd = cost.breakdown_ns
    assert bd["pp_send_recv"] == 2 * (1000 + send)
    assert bd["pp_all_gather"] == 4 * (1000 + hid)
    assert bd["pp_token_broadcast"] == 1000 + s * PP_TOKEN_ID_BYTES
    assert bd["all_reduce"] == 2 * LAYERS * (1000 + hid)
    # the stages' compute adds up to the whole model's: same as the TP2 step without PP
    tp2 = ParallelConfig(tensor_parallel_size=2)
    plain = ProfileCostModel(make_profile(), model=make_model(), parallel=tp2, link=RecordingLink())
    ref = plain.step_cost(StepBatch(prefills=batch.prefills, decode_context_lens=(10, 20, 30),
                                    parallel=tp2))
    pp_ops = {"pp_send_recv", "pp_all_gather", "pp_token_broadcast"}
    assert {k: v for k, v in bd.items() if k not in pp_ops} == dict(ref.breakdown_ns)
    assert cost.duration_ns == ref.duration_ns + sum(bd[k] for k in pp_ops)
    # the report lists the same figures
    comm = {c.name: c for c in cm.step_communication(par, t, s)}
    assert comm["pp_send_recv"].calls == 2 and comm["pp_send_recv"].bytes_per_call == send
    assert comm["pp_send_recv"].group == "pp" and comm["pp_send_recv"].source == "fake:recording"
    assert comm["pp_all_gather"].duration_ns == bd["pp_all_gather"]


def test_pp_at_tp1_communicates_and_pads() -> None:
    """TP1 x PP2: the send/recv runs (a TP group of one GPU would price it at 0) at the
    CUDA-graph-padded token count; the report counts the padded shape."""
    link = RecordingLink()
    par = ParallelConfig(pipeline_parallel_size=2)
    model = make_model()
    cm = ProfileCostModel(make_profile(tps=(1,)), model=model, parallel=par, link=link)
    stm = StepTimeModel(cm, StepOverheads(), cudagraph_capture_sizes=(1, 2, 4, 8), model=model,
                        parallel=par)
    batch = StepBatch(decode_context_lens=(7,) * 5, parallel=par)
    plan = BatchPlan(chunks=(), batch=batch, num_prefill_tokens=0, num_decodes=5, preempted=(),
                     admitted=(), scheduled_ns=0)
    gpu_ns, real = stm.gpu_ns(plan)
    assert real.breakdown_ns["pp_send_recv"] == 1000 + 5 * 2 * HIDDEN * 2
    padded_send = 1000 + 8 * 2 * HIDDEN * 2
    assert gpu_ns - real.duration_ns == padded_send - real.breakdown_ns["pp_send_recv"]
    assert stm.comm_shapes == Counter({(8, 5): 1})
    report = group_communication("g", par, cm, [stm.comm_shapes])
    assert report is not None and report["steps"] == 1
    send = report["collectives"]["pp_send_recv"]
    assert send["calls_per_step"] == 1 and send["bytes_per_call_mean"] == 8 * 2 * HIDDEN * 2
    assert send["ms_per_step_mean"] == pytest.approx(padded_send / 1e6)
    assert send["sources"] == {"nccl: fake:recording": 1}
    assert report["ms_per_step_mean"] == pytest.approx(
        (padded_send + 1000 + 5 * PP_TOKEN_ID_BYTES) / 1e6)
    assert group_communication("g", ParallelConfig(), cm, []) is None


def test_kv_capacity_is_the_smallest_stage() -> None:
    model = ModelConfig(name="m", architecture="LlamaForCausalLM", num_hidden_layers=5,
                        hidden_size=1024, num_attention_heads=8, num_key_value_heads=8,
                        head_dim=128, intermediate_size=4096, vocab_size=32000)
    kw = {"total_gpu_bytes": 2 << 30, "gpu_memory_utilization": 0.9, "block_size": 16,
          "max_num_batched_tokens": 2048, "max_num_seqs": 16, "non_torch_bytes": 0,
          "cudagraph_bytes": 0}
    pp2 = ParallelConfig(pipeline_parallel_size=2)
    cap = kv_capacity(model, parallel=pp2, **kw)
    # stage 0: layers 0-2 + embedding; stage 1: layers 3-4 + final norm + lm_head + logits
    assert [e - s for s, e in pp_layer_split(5, 2)] == [3, 2]
    assert model.weight_bytes(pp2, 0) + model.weight_bytes(pp2, 1) == model.weight_bytes()
    blocks = []
    for stage in (0, 1):
        act = activation_peak_bytes(model, max_num_batched_tokens=2048, max_num_seqs=16,
                                    parallel=pp2, sampler=stage == 1)
        free = int((2 << 30) * 0.9) - model.weight_bytes(pp2, stage) - act
        blocks.append(free // (16 * model.kv_bytes_per_token(pp2, stage)))
    assert blocks[0] != blocks[1]
    limiting = blocks.index(min(blocks))
    assert cap.num_gpu_blocks == min(blocks)
    assert cap.bytes_per_block == 16 * model.kv_bytes_per_token(pp2, limiting)
    assert cap.weight_bytes == model.weight_bytes(pp2, limiting)
    one = kv_capacity(model, **kw)
    assert cap.num_gpu_blocks > one.num_gpu_blocks  # half the layers per GPU: more blocks


# --------------------------------------------------------------------------- YAML errors
MODEL = "llmservingsim/configs/model/meta-llama/Llama-3.1-8B.json"
PROFILE = "llmservingsim/profiles/RTXPRO6000/meta-llama/Llama-3.1-8B/bf16"
TRACE = "llmservingsim/workloads/sharegpt-llama-3.1-8b-300-sps10.jsonl"


def _write(tmp_path: Path, body: str) -> Path:
    head = f"""\
        name: c
        model: {MODEL}
        profile: {PROFILE}
        hardware: {{name: RTXPRO6000, gpu_memory_bytes: 102642302976}}
        trace: {{format: llmservingsim, path: {TRACE}}}
        """
    p = tmp_path / "exp.yaml"
    p.write_text(textwrap.dedent(head) + textwrap.dedent(body))
    return p


def _line(path: Path, text: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if text in line)


def test_pp_not_dividing_the_placed_gpus_is_located(tmp_path: Path, data_path) -> None:
    data_path(MODEL)
    data_path(TRACE)
    p = _write(tmp_path, """\
        cluster:
          nodes:
            - name: n0
              gpus:
                - {hardware: RTXPRO6000, count: 4, gpu_memory_bytes: 102642302976}
        instance_groups:
          - name: a
            engine: {tensor_parallel_size: 2, pipeline_parallel_size: 3}
            placement: {node: n0, gpus: [0, 1, 2, 3]}
        """)
    with pytest.raises(ConfigError) as err:
        load_experiment(p)
    e = err.value
    assert str(e.path) == str(p) and e.field == "instance_groups.0.placement.gpus"
    assert e.line == _line(p, "placement:")
    assert "pipeline_parallel_size 3 need 6" in str(e)


@pytest.mark.parametrize("engine,field_word,words", [
    ("{pipeline_parallel_size: 40}", "pipeline_parallel_size",
     "40 pipeline stages for a model of 32 decoder layers"),
    ("{pipeline_parallel_size: 2, async_scheduling: false}", "pipeline_parallel_size",
     "not supported yet: pipeline parallelism without async scheduling"),
])
def test_bad_pp_settings_name_file_line_and_field(tmp_path: Path, data_path, engine: str,
                                                   field_word: str, words: str) -> None:
    data_path(MODEL)
    data_path(TRACE)
    from llmsim.model.config import load_model_config

    p = _write(tmp_path, f"engine: {engine}\n")
    exp = load_experiment(p)
    with pytest.raises(ConfigError) as err:
        check_parallel_supported(exp, [load_model_config(data_path(MODEL))])
    e = err.value
    assert str(e.path) == str(p) and e.field == f"engine.{field_word}"
    assert e.line == _line(p, "engine:")
    assert words in str(e)


def test_check_supported_pp_rules() -> None:
    pp2 = ParallelConfig(tensor_parallel_size=2, pipeline_parallel_size=2)
    assert check_supported(pp2, is_moe=False, num_layers=80) is None
    found = check_supported(pp2, is_moe=False, cost_model="grpc")
    assert found is not None and found[1].startswith("not supported yet: pipeline parallelism")
    # PP with MoE DP is modelled (tests/cluster/test_pp_moe.py)
    assert check_supported(ParallelConfig(pipeline_parallel_size=2, data_parallel_size=2),
                           is_moe=True) is None


def test_h100_tp2_pp2_example_reports_each_collective_and_its_source(data_path) -> None:
    """The TP2 x PP2 example end to end (first 40 requests): every collective of the layout is
    in the summary with its measured source where the data has one (AIConfigurator's
    all-reduce through vLLM, Vidur's h100_dgx send/recv), the analytic NVLink model
    otherwise."""
    data_path("aiconfigurator/systems/data/h100_sxm")
    data_path("vidur/network/h100_dgx/send_recv.csv")
    data_path("llmservingsim/workloads/sharegpt-llama-3.1-8b-300-sps10.jsonl")
    from llmsim.replay import run

    root = Path(__file__).resolve().parents[2]
    exp = load_experiment(root / "examples" / "h100-llama-3.1-70b-tp2-pp2.yaml",
                          overrides={"trace.transforms": [{"truncate": {"max_requests": 40}}]})
    result = run(exp)
    assert result.summary["num_finished"] == 40
    (group,) = result.summary["communication"]
    assert (group["tensor_parallel_size"], group["pipeline_parallel_size"]) == (2, 2)
    assert group["steps"] == result.num_steps
    ops = group["collectives"]
    assert set(ops) == {"all_reduce", "embedding_all_reduce", "logits_all_gather",
                        "pp_send_recv", "pp_all_gather", "pp_token_broadcast"}
    assert ops["all_reduce"]["calls_per_step"] == 2 * 80
    assert ops["pp_send_recv"]["calls_per_step"] == 1 and ops["pp_all_gather"]["calls_per_step"] == 2
    # hidden + residual, half per TP rank: the same bytes as one [T_pad, hidden] all-reduce
    assert ops["pp_send_recv"]["bytes_per_call_mean"] == ops["embedding_all_reduce"][
        "bytes_per_call_mean"]
    assert all(src.endswith("table:vidur:h100_dgx") for src in ops["pp_send_recv"]["sources"])
    assert all("table:aiconfigurator:h100_sxm" in src for src in ops["all_reduce"]["sources"])
    assert all(src.endswith("analytic:nccl(H100)") for src in ops["pp_all_gather"]["sources"])
    assert group["ms_per_step_mean"] == pytest.approx(
        sum(op["ms_per_step_mean"] for op in ops.values()))
    assert all(op["ms_per_step_mean"] > 0 for op in ops.values())
