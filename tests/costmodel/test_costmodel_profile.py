"""ProfileCostModel: exact grid values, interpolation, skew, multi-chunk, extrapolation."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from llmsim.cluster.parallel import ParallelConfig
from llmsim.costmodel.base import CostModel, PrefillChunk, StepBatch
from llmsim.costmodel.collectives import LinkModel
from llmsim.costmodel.interp import Grid1D, GridND
from llmsim.costmodel.profile_model import ProfileCostModel
from llmsim.costmodel.registry import CostModelContext, build_cost_model
from llmsim.errors import ConfigError, ProfileRangeError
from llmsim.model.config import ModelConfig
from llmsim.v1 import profile_pb2 as pb

TP2 = ParallelConfig(tensor_parallel_size=2)
TP4 = ParallelConfig(tensor_parallel_size=4)

LAYERS = 2
DENSE_K = {"layernorm": 1.0, "qkv_proj": 3.0, "rotary_emb": 0.5, "o_proj": 2.0,
           "gate_up_proj": 6.0, "act_fn": 0.25, "down_proj": 4.0, "embedding": 0.1,
           "final_layernorm": 1.0}
TOKENS = [1, 2, 4, 8, 16]
N = [1, 2, 4]
KV = [16, 32, 64]
PC = [16, 32, 64]
KP = [0, 16, 32]


def dense_ns(op: str, t: float) -> float:
    return DENSE_K[op] * t + 100.0


def dec_ns(n, kv):  # bilinear, so bilinear interpolation reproduces it exactly
    return 1000.0 + n * kv


def pre_ns(pc, kp):
    return 500.0 + pc * (kp + 10)


def mix_ns(pc, kp, n, kv):
    return pre_ns(pc, kp) + dec_ns(n, kv)


def make_model(**overrides) -> ModelConfig:
    base = dict(name="t", architecture="LlamaForCausalLM", num_hidden_layers=LAYERS,
                hidden_size=8, num_attention_heads=2, num_key_value_heads=1, head_dim=4,
                intermediate_size=16, vocab_size=32)
    base.update(overrides)
    return ModelConfig(**base)


def make_tp(tp: int = 1, *, skew_fit: pb.SkewFit | None = None) -> pb.TpProfile:
    tpp = pb.TpProfile(tp_degree=tp)
    for op in DENSE_K:
        t = tpp.ops.add(op=op, kind=pb.OP_KIND_DENSE)
        t.axes.add(name="tokens", values=TOKENS)
        t.mean_ns.extend(dense_ns(op, x) for x in TOKENS)
    for op, f in (("lm_head", lambda s: 1000.0 + 10 * s), ("sampler", lambda s: 50.0 + s)):
        t = tpp.ops.add(op=op, kind=pb.OP_KIND_PER_SEQUENCE)
        t.axes.add(name="sequences", values=[1, 2, 4])
        t.mean_ns.extend(f(s) for s in (1, 2, 4))
    pts = [(0, 0, n, kv, dec_ns(n, kv)) for n in N for kv in KV]
    pts += [(pc, kp, 0, 0, pre_ns(pc, kp)) for pc in PC for kp in KP]
    pts += [(pc, kp, n, kv, mix_ns(pc, kp, n, kv)) for pc in PC for kp in KP for n in N
            for kv in KV]
    att = tpp.ops.add(op="attention", kind=pb.OP_KIND_ATTENTION)
    for i, name in enumerate(("prefill_chunk", "kv_prefill", "n_decode", "kv_decode")):
        att.axes.add(name=name, values=[p[i] for p in pts])
    att.mean_ns.extend(p[4] for p in pts)
    if skew_fit is not None:
        tpp.skew_fit.CopyFrom(skew_fit)
    return tpp


def make_skew_fit(alpha: float = 0.25, default: float = 0.5) -> pb.SkewFit:
    fit = pb.SkewFit(method="test", alpha_default=default)
    fit.n_edges.extend([0, 2, 4, 1e6])
    fit.n_labels.extend(["n<=2", "n<=4", "n>4"])
    fit.skew_rate_edges.extend([-0.01, 0.4, 0.7, 1.01])
    fit.skew_rate_labels.extend(["sr<=40%", "sr<=70%", "sr>70%"])
    fit.kv_big_edges.extend([0, 1024, 1e9])
    fit.kv_big_labels.extend(["kvB<=1k", "kvB>1k"])
    fit.kp_edges.extend([-1, 0, 1e9])
    fit.kp_labels.extend(["kp=0", "kp>0"])
    for pc, kp_label, a in ((0, "kp=0", alpha), (16, "kp>0", 3.0)):
        fit.pc.append(pc)
        fit.n_label.append("n<=2")
        fit.skew_rate_label.append("sr<=70%")
        fit.kv_big_label.append("kvB<=1k")
        fit.kp_label.append(kp_label)
        fit.bucket_alpha.append(a)
        fit.bucket_num_samples.append(4)
    return fit


def make_profile(*, tps=(1,), skew_fit: pb.SkewFit | None = None) -> pb.Profile:
    profile = pb.Profile(schema_version=1)
    for tp in tps:
        profile.tp.append(make_tp(tp, skew_fit=skew_fit))
    return profile


def cm(**kwargs) -> ProfileCostModel:
    profile = kwargs.pop("profile", None) or make_profile(skew_fit=kwargs.pop("skew_fit", None))
    return ProfileCostModel(profile, model=make_model(), source="synthetic.pb", **kwargs)


def decodes(*lens: int) -> StepBatch:
    return StepBatch(decode_context_lens=tuple(lens))


def test_is_a_cost_model():
    assert isinstance(cm(), CostModel)


def test_exact_on_grid_points():
    cost = cm().step_cost(decodes(32, 32))  # 2 tokens, 2 sequences
    bd = cost.breakdown_ns
    for op in DENSE_K:
        layer_op = op not in ("embedding", "final_layernorm")
        count = 2 if op == "layernorm" else 1
        assert bd[op] == round(dense_ns(op, 2) * count * (LAYERS if layer_op else 1))
    assert bd["lm_head"] == 1020 and bd["sampler"] == 52
    assert bd["attention"] == LAYERS * dec_ns(2, 32)
    assert cost.duration_ns == sum(bd.values())


def test_linear_interpolation_between_points():
    model = cm()
    cost = model.step_cost(decodes(24, 24, 24))  # n=3, kv=24: both off-grid
    assert cost.breakdown_ns["attention"] == round(LAYERS * dec_ns(3, 24))
    assert cost.breakdown_ns["qkv_proj"] == round(LAYERS * dense_ns("qkv_proj", 3))
    assert cost.breakdown_ns["lm_head"] == 1030
    mixed = StepBatch(prefills=(PrefillChunk(num_new_tokens=24, num_cached_tokens=8),),
                      decode_context_lens=(40, 40, 40))
    assert model.attention_ns(mixed) == pytest.approx(mix_ns(24, 8, 3, 40))
    assert not model.extrapolations


def test_prefill_only_and_token_counts():
    model = cm()
    batch = StepBatch(prefills=(PrefillChunk(num_new_tokens=8, num_cached_tokens=16,
                                             emits_token=False),))
    cost = model.step_cost(batch)
    assert "lm_head" not in cost.breakdown_ns  # no sequence emits a token
    assert cost.breakdown_ns["down_proj"] == LAYERS * dense_ns("down_proj", 8)
    # pc=8 is below the smallest chunk (16): the first value is held and counted
    assert cost.breakdown_ns["attention"] == LAYERS * pre_ns(16, 16)
    assert model.extrapolations["attention"] == 1


def test_skew_correction_uses_bucket_alpha():
    model = cm(skew_fit=make_skew_fit(alpha=0.25, default=0.5))
    t_mean, t_max = dec_ns(2, 32), dec_ns(2, 48)  # lens 16, 48: mean 32, max 48, rate 0.5
    assert model.attention_ns(decodes(16, 48)) == pytest.approx(t_mean + 0.25 * (t_max - t_mean))
    # n=4 has no bucket: alpha_default
    lens = (16, 16, 16, 48)  # mean 24, rate 0.25
    want = dec_ns(4, 24) + 0.5 * (dec_ns(4, 48) - dec_ns(4, 24))
    assert model.attention_ns(decodes(*lens)) == pytest.approx(want)


def test_skew_alpha_is_clamped_and_applies_to_mixed_batches():
    model = cm(skew_fit=make_skew_fit())
    batch = StepBatch(prefills=(PrefillChunk(num_new_tokens=16, num_cached_tokens=16),),
                      decode_context_lens=(16, 48))
    # bucket (pc 16, kp>0) has alpha 3.0, clamped to 1: priced at t_max
    assert model.attention_ns(batch) == pytest.approx(mix_ns(16, 16, 2, 48))


def test_no_skew_fit_prices_at_mean():
    assert cm().attention_ns(decodes(16, 48)) == pytest.approx(dec_ns(2, 32))


def test_multiple_chunks_priced_per_request():
    model = cm()
    chunks = (PrefillChunk(num_new_tokens=32, num_cached_tokens=0),
              PrefillChunk(num_new_tokens=64, num_cached_tokens=32))
    floor = pre_ns(16, 0)  # smallest measured prefill-only call
    want = pre_ns(64, 32) + (pre_ns(32, 0) - floor)
    assert model.attention_ns(StepBatch(prefills=chunks)) == pytest.approx(want)
    with_dec = StepBatch(prefills=chunks, decode_context_lens=(16, 16))
    want = mix_ns(64, 32, 2, 16) + (pre_ns(32, 0) - floor)
    assert model.attention_ns(with_dec) == pytest.approx(want)
    # the collapsed single chunk LLMServingSim would use costs more
    collapsed = StepBatch(prefills=(PrefillChunk(num_new_tokens=96, num_cached_tokens=32),))
    assert model.attention_ns(collapsed) > model.attention_ns(StepBatch(prefills=chunks))
    tokens = model.step_cost(with_dec).breakdown_ns["qkv_proj"]
    assert tokens == round(LAYERS * dense_ns("qkv_proj", 16) * 98 / 16)  # 98 tokens


def test_extrapolation_rules_and_counts():
    model = cm()
    cost = model.step_cost(decodes(128))  # kv above the grid: linear through last two
    assert cost.breakdown_ns["attention"] == LAYERS * dec_ns(1, 128)
    assert model.extrapolations == {"attention": 1}
    big = StepBatch(prefills=(PrefillChunk(num_new_tokens=32, num_cached_tokens=0),))
    cost = model.step_cost(big)  # 32 tokens > 16: dense ops scale proportionally
    assert cost.breakdown_ns["gate_up_proj"] == round(LAYERS * dense_ns("gate_up_proj", 16) * 2)
    assert model.extrapolations["gate_up_proj"] == 1
    assert model.extrapolations["attention"] == 1  # pc=32 kp=0 is on the grid
    lots = decodes(*([16] * 8))  # 8 sequences > 4: per-sequence ops linear through last two
    assert model.step_cost(lots).breakdown_ns["lm_head"] == 1080
    model.step_cost(decodes(128))  # a memoized repeat counts again
    assert model.extrapolations["attention"] == 3


def test_memoized():
    model = cm()
    a = model.step_cost(decodes(20, 30))
    assert model.step_cost(decodes(20, 30)) is a
    model.clear_cache()
    b = model.step_cost(decodes(20, 30))
    assert b is not a and b == a


def test_tp_link_model_and_collectives_table():
    profile = make_profile(tps=(1, 2))
    link = LinkModel(bandwidth_bytes_per_s=1e9, hop_latency_ns=1000.0)
    model = ProfileCostModel(profile, model=make_model(), parallel=TP2, link=link)
    cost = model.step_cost(StepBatch(decode_context_lens=(16,) * 4, parallel=TP2))
    nbytes = 4 * 8 * 2  # tokens x hidden x dtype
    per_call = 2 * (1000.0 + nbytes / 2 / 1e9 * 1e9)
    assert cost.breakdown_ns["all_reduce"] == round(2 * LAYERS * per_call)
    assert "all_reduce" not in model.step_cost(decodes(16)).breakdown_ns  # TP1 batch
    table = pb.OpTable(op="all_reduce", kind=pb.OP_KIND_COLLECTIVE)
    table.axes.add(name="bytes", values=[32, 128, 32, 128])
    table.axes.add(name="ranks", values=[2, 2, 4, 4])
    table.mean_ns.extend([100.0, 300.0, 1.0, 1.0])
    model = ProfileCostModel(profile, model=make_model(), parallel=TP2, collectives=[table])
    cost = model.step_cost(StepBatch(decode_context_lens=(16,) * 4, parallel=TP2))  # 64 bytes
    assert cost.breakdown_ns["all_reduce"] == round(2 * LAYERS * (100 + 200 * 32 / 96))


def test_missing_tp_in_batch():
    with pytest.raises(ProfileRangeError) as exc:
        cm().step_cost(StepBatch(decode_context_lens=(16,), parallel=TP4))
    assert exc.value.path == "synthetic.pb"


def test_grids_ragged_coverage():
    # x2 grid everywhere; a coarser column at x=3 only covers y >= 10
    coords = [(x, y) for x in (2, 4) for y in (1, 10, 20)] + [(3, 10), (3, 20)]
    grid = GridND(coords, [x * 100 + y for x, y in coords])
    assert grid(3, 10) == (310.0, False)
    assert grid(3, 5) == (305.0, False)  # x=3 skipped: it does not cover y=5
    assert grid(3, 15) == (315.0, False)
    assert grid(5, 20)[1] and grid(5, 20)[0] == pytest.approx(520.0)
    g = Grid1D([1, 2, 4], [10.0, 20.0, 5.0])
    assert g(3) == (12.5, False) and g(8) == (5.0, True)  # negative slope floored at 0
    assert g(0) == (10.0, True)
    assert Grid1D([1, 2], [1.0, 2.0], proportional_above=True)(10) == (10.0, True)


# ------------------------------------------------------------------------- real data

RTXPRO = "llmservingsim/profiles/RTXPRO6000/meta-llama/Llama-3.1-8B/bf16"
RTX4090 = "llmservingsim/profiles/RTX4090/meta-llama/Llama-3.1-8B/bf16"


def _csv_value_ns(path: Path, match: dict[str, str], col: str = "time_us") -> float:
    from decimal import Decimal

    lines = path.read_text().splitlines()
    header = lines[0].split(",")
    for line in lines[1:]:
        row = dict(zip(header, line.split(","), strict=True))
        if all(row[k] == v for k, v in match.items()):
            return float(Decimal(row[col]).scaleb(3))
    raise KeyError(match)


@pytest.mark.realdata
@pytest.mark.parametrize("rel", [RTXPRO, RTX4090])
def test_real_bundle_exact_on_grid(rel, data_path):
    bundle = data_path(rel)
    model = ProfileCostModel.from_path(bundle)
    cost = model.step_cost(decodes(*([1024] * 8)))
    att = _csv_value_ns(bundle / "tp1/attention.csv", {"prefill_chunk": "0", "kv_prefill": "0",
                                                         "n_decode": "8", "kv_decode": "1024"})
    assert cost.breakdown_ns["attention"] == round(32 * att)
    ln = _csv_value_ns(bundle / "tp1/dense.csv", {"layer": "layernorm", "tokens": "8"})
    assert cost.breakdown_ns["layernorm"] == round(2 * 32 * ln)
    lm = _csv_value_ns(bundle / "tp1/per_sequence.csv", {"layer": "lm_head", "sequences": "8"})
    assert cost.breakdown_ns["lm_head"] == round(lm)
    # skewed decodes land between all-at-mean and all-at-max (alpha in [0, 1])
    lens = (100,) * 7 + (4000,)
    t = model.attention_ns(decodes(*lens))
    t_mean = model.attention_ns(decodes(*([sum(lens) / 8] * 8)))
    t_max = model.attention_ns(decodes(*([4000] * 8)))
    assert t_mean <= t <= t_max
    assert not model.extrapolations


@pytest.mark.realdata
def test_real_moe_and_missing_tp_op(data_path):
    bundle = data_path("llmservingsim/profiles/RTXPRO6000/Qwen/Qwen3-30B-A3B-Instruct-2507/bf16")
    model = ProfileCostModel.from_path(bundle)
    assert model.missing_optional_ops == ("moe_gate",)
    cost = model.step_cost(decodes(500))  # 1 token -> 8 active experts, on the grid
    want = _csv_value_ns(bundle / "tp1/moe.csv", {"tokens": "1", "activated_experts": "8"})
    assert cost.breakdown_ns["moe"] == round(48 * want)
    assert "qk_norm" in cost.breakdown_ns
    with pytest.raises(ProfileRangeError) as exc:
        ProfileCostModel.from_path(bundle, parallel=TP2)
    assert exc.value.field == "tp2/moe" and str(bundle) in str(exc.value)


@pytest.mark.realdata
def test_registry_factory(data_path):
    from llmsim.model import load_model_config

    cfg = load_model_config(data_path(
        "llmservingsim/configs/model/meta-llama/Llama-3.1-8B.json"))
    ctx = CostModelContext(model=cfg, profile_path=data_path(RTXPRO))
    model = build_cost_model("profile", ctx)
    assert model.step_cost(decodes(100)).duration_ns > 10_000_000  # > 10 ms per step
    with pytest.raises(ConfigError):
        build_cost_model("profile", CostModelContext(model=cfg, ))
    assert math.isfinite(model.step_cost(decodes(100)).duration_ns)


def test_skew_buckets_from_labels_when_edges_absent():
    fit = make_skew_fit(alpha=0.25, default=0.5)
    for name in ("n", "skew_rate", "kv_big", "kp"):
        fit.ClearField(f"{name}_edges")
        fit.ClearField(f"{name}_labels")
    model = cm(skew_fit=fit)
    t_mean, t_max = dec_ns(2, 32), dec_ns(2, 48)
    assert model.attention_ns(decodes(16, 48)) == pytest.approx(t_mean + 0.25 * (t_max - t_mean))


def test_skew_fit_disabled_by_source_is_not_applied_unless_forced():
    fit = make_skew_fit(alpha=0.25, default=0.5)
    fit.disabled_by_source = True
    t_mean, t_max = dec_ns(2, 32), dec_ns(2, 48)
    assert cm(skew_fit=fit).attention_ns(decodes(16, 48)) == pytest.approx(t_mean)
    forced = cm(skew_fit=fit, skew=True).attention_ns(decodes(16, 48))
    assert forced == pytest.approx(t_mean + 0.25 * (t_max - t_mean))
    enabled = make_skew_fit(alpha=0.25, default=0.5)
    assert cm(skew_fit=enabled, skew=False).attention_ns(decodes(16, 48)) == pytest.approx(t_mean)


def test_rtx4090_bundle_declares_its_skew_fit_disabled(data_path):
    from llmsim.profile import load_profile

    rtx4090 = load_profile(data_path("llmservingsim/profiles/RTX4090/meta-llama/Llama-3.1-8B/bf16"))
    pro6000 = load_profile(
        data_path("llmservingsim/profiles/RTXPRO6000/meta-llama/Llama-3.1-8B/bf16"))
    assert rtx4090.tp[0].skew_fit.disabled_by_source
    assert len(rtx4090.tp[0].skew_fit.pc) > 0  # rows kept for inspection
    assert not pro6000.tp[0].skew_fit.disabled_by_source


def test_skew_rate_maps_a_real_batch_to_the_two_level_batch_with_its_mean_and_max():
    # lens 40, 48: mean 44, max 48, min 40. Min-based rate 0.5 -> bucket "sr<=70%" (0.25);
    # with the profiled long/short ratio S = 4 the two-level batch of the same mean and max
    # has rate (4 * 44/48 - 1) / 3 = 0.89 -> "sr>70%", no bucket -> alpha_default 0.5.
    t_mean, t_max = dec_ns(2, 44), dec_ns(2, 48)
    without_table = cm(skew_fit=make_skew_fit(alpha=0.25, default=0.5))
    assert without_table.attention_ns(decodes(40, 48)) == pytest.approx(
        t_mean + 0.25 * (t_max - t_mean))
    profile = make_profile(skew_fit=make_skew_fit(alpha=0.25, default=0.5))
    profile.tp[0].skew.skew.extend([4.0, 4.0, 2.0])  # median 4
    with_table = cm(profile=profile)
    assert with_table.attention_ns(decodes(40, 48)) == pytest.approx(
        t_mean + 0.5 * (t_max - t_mean))
    # on a profiled two-level batch (1 of 2 at kv_big = 4 x kvs) both rates agree: 0.5
    assert with_table.attention_ns(decodes(12, 48)) == pytest.approx(
        without_table.attention_ns(decodes(12, 48)))
