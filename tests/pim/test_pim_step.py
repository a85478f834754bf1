"""PIM attention offload (llmsim.pim): device figures, greedy channel assignment, a PIM
step's time computed by hand, sub-batch interleaving, and the imported LLMServingSim
single_node_pim_instance config replaying end to end. A model without a measured
validation: these tests check the model's arithmetic, not its accuracy."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmsim.costmodel.base import PrefillChunk, StepBatch, StepCost
from llmsim.errors import ConfigError
from llmsim.pim import (
    PIM_DEVICES,
    PimCostModel,
    assign_channels,
    interleaved_step_ns,
    pim_attention_ns,
    split_sub_batches,
)

DDR4 = PIM_DEVICES["DDR4_8GB_3200_pim"]


def test_ddr4_device_figures_follow_the_ini() -> None:
    # 64-bit bus of x16 chips: 4 per rank; page 1024 x 16 / 8 = 2048 B; 65536 rows ->
    # 128 MB a bank, x 8 banks x 4 chips = 4096 MB a rank < 8192 MB: the channel is 8 GiB
    assert DDR4.channel_capacity_bytes == 8 * 2**30
    assert DDR4.num_channels(512 * 2**30) == 64
    assert DDR4.channel_bandwidth_bytes_per_s == 64 / 8 * 3200e6
    assert DDR4.read_latency_ns == pytest.approx(22 * 0.63)


def test_greedy_channel_assignment_longest_first_min_load() -> None:
    # 3 channels, each request placed twice, longest first on the least-loaded channel
    # 300 -> ch0, ch1; 200 -> ch2 twice (ch2 stays the least loaded); 100 -> ch0, ch1
    assert assign_channels([100, 300, 200], 3, 2) == [[300, 100], [300, 100], [200, 200]]
    with pytest.raises(ConfigError):
        assign_channels([1], 2, 3)


class _FakeGpu:
    """1000 ns per token of dense work; attention 10 ns per KV token (decodes) or 5 ns per
    new token (prefills), reported as the ``attention`` op."""

    def step_cost(self, batch: StepBatch) -> StepCost:
        attn = 10 * sum(batch.decode_context_lens) + 5 * sum(
            p.num_new_tokens for p in batch.prefills)
        dense = 1000 * batch.num_tokens
        return StepCost(duration_ns=dense + attn, breakdown_ns={"attention": attn,
                                                                "dense": dense})


def _lat(n: int, split: int) -> int:
    """Llama-3.1-8B shape (32 / 8 / 128): the fit's own coefficients, unscaled."""
    return int((333.2538 * n + 30675.2739) / split)


def test_a_pim_step_time_by_hand() -> None:
    """Llama-3.1-8B on the DDR4 PIM of single_node_pim_instance (64 channels): one prefill
    chunk of 100 tokens and decodes at 1000 and 3000 KV tokens. split = min(64, 8) = 8: each
    decode goes to 8 channels; the 16 entries land on 16 different channels (all loads 0 or
    equal at each choice), so the busiest channel holds one 3000-token entry."""
    model = PimCostModel(_FakeGpu(), DDR4, num_channels=64, heads=32, kv_heads=8,
                         head_dim=128, num_layers=32)
    batch = StepBatch(prefills=(PrefillChunk(num_new_tokens=100, num_cached_tokens=0,
                                             emits_token=True),),
                      decode_context_lens=(1000, 3000))
    gpu_ns = 1000 * 102 + 5 * 100  # dense of every token + the prefill's attention only
    pim_layer_ns = _lat(3000, 8)
    assert pim_attention_ns(DDR4, [1000, 3000], num_channels=64, heads=32, kv_heads=8,
                            head_dim=128) == pim_layer_ns
    cost = model.step_cost(batch)
    assert cost.duration_ns == gpu_ns + 32 * pim_layer_ns
    assert cost.breakdown_ns["pim_attention"] == 32 * pim_layer_ns
    assert cost.breakdown_ns["attention"] == 500
    # 2 channels only: split 2, 4 entries on 2 channels: [3000, 1000] each
    two = pim_attention_ns(DDR4, [1000, 3000], num_channels=2, heads=32, kv_heads=8,
                           head_dim=128)
    assert two == _lat(3000, 2) + _lat(1000, 2)


def test_model_shape_scales_the_fit() -> None:
    # 64 heads / 8 KV heads / 128: slope x 2 (GQA ratio), intercept x 2 (heads x dim)
    assert DDR4.attention_ns(500, 64, 8, 128, 1) == pytest.approx(
        2 * 333.2538 * 500 + 2 * 30675.2739)


def test_sub_batch_split_and_interleaving_schedule() -> None:
    assert split_sub_batches([100, 1, 1, 50, 1]) == ([0], [1, 2, 3, 4])
    # GPU 10 / 20 ns per layer, PIM 30 / 5 ns, 2 layers, by hand:
    # L0: g1 0-10, p1 10-40; g2 10-30, p2 40-45; L1: g1 40-50 (after p1), p1 50-80;
    #     g2 50-70, p2 80-85 -> 85
    assert interleaved_step_ns((10, 20), (30, 5), 2) == 85
    # without PIM work it is the GPU's sum
    assert interleaved_step_ns((10, 20), (0, 0), 3) == 90


def test_interleaved_step_uses_both_sub_batches() -> None:
    model = PimCostModel(_FakeGpu(), DDR4, num_channels=64, heads=32, kv_heads=8,
                         head_dim=128, num_layers=4, sub_batch_interleaving=True)
    batch = StepBatch(prefills=(PrefillChunk(num_new_tokens=40, num_cached_tokens=0,
                                             emits_token=True),),
                      decode_context_lens=(2000, 500))
    # tokens [40, 1, 1]: sub-batch 1 = the prefill, sub-batch 2 = both decodes
    g1 = (1000 * 40 + 5 * 40) // 4
    g2 = (1000 * 2) // 4
    p2 = pim_attention_ns(DDR4, [2000, 500], num_channels=64, heads=32, kv_heads=8,
                          head_dim=128)
    assert model.step_cost(batch).duration_ns == interleaved_step_ns((g1, g2), (0, p2), 4)


def test_imported_single_node_pim_instance_replays(data_path, tmp_path: Path) -> None:
    from llmsim.cluster.importers.llmservingsim import import_config, write_imported
    from llmsim.experiment import load_experiment
    from llmsim.replay import run

    cfg = data_path("llmservingsim/configs/cluster/single_node_pim_instance.json")
    imported = import_config(cfg)
    assert not imported.unsupported
    out = write_imported(imported, tmp_path / "pim.yaml")
    exp = load_experiment(out, overrides={
        "trace.transforms": [{"truncate": {"max_requests": 20}}]})
    assert exp.pim[0].device == "DDR4_8GB_3200_pim"
    res = run(exp)
    assert len(res.requests) == 20 and (res.requests["tpot_s"] > 0).all()
