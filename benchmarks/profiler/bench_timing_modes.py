"""Hot loop vs cold cache vs in-context timing of the closed-loop model's operators on this
CPU (1 thread): prints each op's median at a few token counts in the three modes. The
in-context figures are what a real forward pass sees (:mod:`profiler.in_context`)."""

from __future__ import annotations

import statistics

import pytest
import torch

from llmsim.model.config import load_model_config
from profiler.closed_loop.run import MODEL_CONFIG
from profiler.in_context import ContextRunner, dense_batch, time_passes
from profiler.suite import OpSuite
from profiler.timing import CpuTimer, cache_flusher, llc_bytes

OPS = ("layernorm", "qkv_proj", "rotary_emb", "o_proj", "gate_up_proj", "act_fn", "down_proj")


def _modes() -> dict[tuple[str, int], tuple[float, float, float]]:
    torch.set_num_threads(1)
    model = load_model_config(MODEL_CONFIG)
    cpu = torch.device("cpu")
    runner = ContextRunner(model, 1, dtype=torch.float32, device=cpu, max_positions=600,
                           num_layer_copies=model.num_hidden_layers)
    suite = OpSuite(model, 1, dtype=torch.float32, device=cpu, max_positions=600)
    hot, cold = CpuTimer(), CpuTimer(flush=cache_flusher(2 * (llc_bytes() or 32 * 2 ** 20)))
    out = {}
    for t in (1, 8, 64):
        ctx = time_passes(runner.prepare(dense_batch(t, 256, 16)), warmup=2,
                          repetitions=7).samples_ns
        for op in OPS:
            call = suite.prepare(op, (t,))
            out[op, t] = tuple(statistics.median(v) / 1e3 for v in (
                hot.time(call, warmup=2, repetitions=15),
                cold.time(call, warmup=2, repetitions=15), ctx[op]))
    return out


@pytest.mark.slow
def test_timing_modes(benchmark) -> None:
    res = benchmark.pedantic(_modes, rounds=1, iterations=1)
    print(f"\n{'op':<14}{'tokens':>7}{'hot us':>9}{'cold us':>9}{'in-ctx us':>11}")
    for (op, t), (h, c, i) in sorted(res.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        print(f"{op:<14}{t:>7}{h:>9.1f}{c:>9.1f}{i:>11.1f}")
    assert all(v > 0 for vals in res.values() for v in vals)
