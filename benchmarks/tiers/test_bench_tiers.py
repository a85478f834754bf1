"""KV-tier / weight-offload benchmarks: replay wall time of the CXL example.

Run with ``make bench`` (or ``pytest benchmarks/tiers --benchmark-enable --benchmark-only -s``);
each benchmark prints the figure it measures. Needs LLMSIM_DATA_DIR.

* ``examples/rtxpro6000-llama-3.1-8b-cxl.yaml`` (LLMServingSim's single_node_cxl_instance:
  weights streamed from four CXL devices every step) next to
  ``examples/rtxpro6000-llama-3.1-8b-memory.yaml`` (single_node_memory_instance: the same
  instance with everything on the GPU; replays as the GPU-only example).
* ``examples/rtxpro6000-llama-3.1-8b-mooncake-cpu-offload.yaml`` (8 engines, native CPU + CXL
  KV offload, 1,750 Mooncake requests): one round, with the per-tier hit rates.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from llmsim.errors import DataNotFoundError
from llmsim.experiment import load_experiment
from llmsim.replay import run

ROOT = Path(__file__).resolve().parents[2]
CXL = ROOT / "examples" / "rtxpro6000-llama-3.1-8b-cxl.yaml"
MEMORY = ROOT / "examples" / "rtxpro6000-llama-3.1-8b-memory.yaml"
MOONCAKE = ROOT / "examples" / "rtxpro6000-llama-3.1-8b-mooncake-cpu-offload.yaml"


def _load(path: Path):
    try:
        return load_experiment(path)
    except DataNotFoundError as exc:
        if os.environ.get("LLMSIM_REQUIRE_DATA", "") not in ("", "0", "false", "no"):
            pytest.fail(f"real data required but missing: {exc}")
        pytest.skip(str(exc))


@pytest.mark.parametrize("path", [CXL, MEMORY], ids=["cxl", "memory"])
def test_bench_replay_cxl_examples(benchmark, path):
    exp = _load(path)
    res = benchmark.pedantic(lambda: run(exp), rounds=3, iterations=1)
    tiers = res.summary.get("kv_tiers", {})
    stream = [e["weight_offload"]["stream_ns_per_step"] for e in tiers.get("engines", [])
              if "weight_offload" in e]
    print(f"\n{exp.name}: replay of {len(res.requests)} requests, {res.num_steps} steps: "
          f"wall {benchmark.stats.stats.mean:.3f} s mean of 3 (simulation proper "
          f"{res.wall_time_s:.3f} s last round); weights streamed per step "
          f"{stream[0] / 1e6 if stream else 0:.3f} ms; TPOT mean "
          f"{res.summary['tpot_s']['mean'] * 1e3:.1f} ms")


def test_bench_replay_mooncake_offload(benchmark):
    exp = _load(MOONCAKE)
    res = benchmark.pedantic(lambda: run(exp), rounds=1, iterations=1)
    t = res.summary["kv_tiers"]
    rates = ", ".join(f"{k} {v['hit_rate']:.3f}" for k, v in t["tiers"].items())
    print(f"\n{exp.name}: {len(res.requests)} requests, {res.num_steps} steps in "
          f"{benchmark.stats.stats.mean:.1f} s wall; prefix hit rate by tier: gpu "
          f"{t['gpu_hit_rate']:.3f}, {rates}")
