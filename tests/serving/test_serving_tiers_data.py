"""KV tiers and weight offload on the real data: the LLMServingSim CXL / memory instance
equivalents and a Mooncake window with CPU offload (native and LMCache)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pandas as pd
import pytest

from llmsim.experiment import load_experiment
from llmsim.replay import run
from tests.conftest import require_data

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
NS_PER_S = 10**9


def test_memory_instance_replays_as_the_gpu_only_example(data_path):
    data_path("llmservingsim/workloads/sharegpt-llama-3.1-8b-300-sps10.jsonl")
    mem = run(load_experiment(EXAMPLES / "rtxpro6000-llama-3.1-8b-memory.yaml"))
    gpu = run(load_experiment(EXAMPLES / "rtxpro6000-llama-3.1-8b.yaml"))
    pd.testing.assert_frame_equal(mem.requests, gpu.requests)
    assert mem.summary["kv_tiers"]["engines"][0]["weight_offload"]["stream_ns_per_step"] == 0


def test_cxl_instance_streams_every_weight_every_step(data_path):
    """Llama-3.1-8B bf16 with every layer on a CXL device (60 GiB/s, 250 ns) read over a
    64 GB/s PCIe link: per layer 250 ns + bytes / 64 GB/s each step; the freed 16 GB go to
    the KV cache."""
    data_path("llmservingsim/workloads/sharegpt-llama-3.1-8b-300-sps10.jsonl")
    cxl = run(load_experiment(EXAMPLES / "rtxpro6000-llama-3.1-8b-cxl.yaml"), keep_steps=True)
    h, q, kv, d, inter, vocab, layers = 4096, 32, 8, 128, 14336, 128256, 32
    layer = 2 * (h * q * d * 2 + h * kv * d * 2 + 3 * h * inter + 2 * h)
    named = [2 * vocab * h, 2 * h, 2 * vocab * h]     # embedding, final norm, lm_head

    def copy(nbytes: int) -> int:
        return 250 + -(-nbytes * NS_PER_S // min(60 * 2**30, 64 * 10**9))
    stream = layers * copy(layer) + sum(copy(b) for b in named)
    w = cxl.summary["kv_tiers"]["engines"][0]["weight_offload"]
    assert w["stream_ns_per_step"] == stream
    assert w["offloaded_bytes_per_rank"] == layers * layer + sum(named)
    assert 0.24e9 < stream < 0.26e9
    gpu_blocks = 35832                                # examples/rtxpro6000-llama-3.1-8b.yaml
    assert cxl.summary["kv_cache"]["num_gpu_blocks"] == (
        gpu_blocks + w["offloaded_bytes_per_rank"] // (16 * 131072))
    assert (cxl.steps["gpu_ms"] * 1e6 >= stream - 1).all()
    assert cxl.summary["tpot_s"]["mean"] > stream / NS_PER_S


@pytest.fixture(scope="module")
def mooncake_runs():
    require_data("mooncake/conversation_trace.jsonl")  # skip (or fail in CI) before loading
    exp = load_experiment(EXAMPLES / "studies" / "rtxpro6000-llama-3.1-8b-mooncake-kv-offload.yaml",
                          {"instances": 2, "engine.num_gpu_blocks_override": 8192,
                           "trace.transforms": [{"window": {"end_s": 60}}]})
    out = {}
    for backend in ("native", "lmcache"):
        kvo = dataclasses.replace(exp.kv_offload, backend=backend)
        out[backend] = run(dataclasses.replace(exp, kv_offload=kvo))
    return out


@pytest.mark.parametrize("backend", ["native", "lmcache"])
def test_mooncake_window_hits_per_tier(data_path, mooncake_runs, backend):
    data_path("mooncake/conversation_trace.jsonl")
    res = mooncake_runs[backend]
    t = res.summary["kv_tiers"]
    req = res.requests
    for tier in ("cpu", "cxl"):  # the summary also counts re-admissions after preemptions
        assert req[f"prefix_hit_tokens_{tier}"].sum() <= t["tiers"][tier]["hit_tokens"]
    assert req["prefix_hit_tokens_cpu"].sum() > 0
    assert req["prefix_hit_tokens"].sum() <= t["gpu_hit_tokens"]  # + re-admissions
    cols = list(req.columns)
    assert cols[cols.index("prefix_hit_tokens") + 1:][:2] == ["prefix_hit_tokens_cpu",
                                                              "prefix_hit_tokens_cxl"]
    assert (req["prefix_hit_tokens"] + req["prefix_hit_tokens_cpu"] + req["prefix_hit_tokens_cxl"]
            < req["input_tokens"]).all()
    engines = [e["kv_offload"] for e in t["engines"]]
    if backend == "native":
        assert sum(e["async_load_ns"] for e in engines) > 0
        assert all(e["blocking_transfer_ns"] == 0 for e in engines)
        assert all(e["block_tokens"] == 16 for e in engines)
    else:
        assert sum(e["blocking_transfer_ns"] for e in engines) > 0
        assert all(e["block_tokens"] == 256 for e in engines)
