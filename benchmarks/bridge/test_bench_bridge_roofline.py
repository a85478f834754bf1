"""The 300-request ShareGPT workload (Llama-3.1-8B) on an H100-SXM that exists only as the
roofline server: wall time, engine steps, RPCs and cache hit rate.

Run: ``make bench`` or ``pytest benchmarks/bridge --benchmark-enable --benchmark-only -s``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llmsim.data import dataset_path
from llmsim.errors import DataNotFoundError

REPO = Path(__file__).resolve().parents[2]
EXPERIMENT = REPO / "examples" / "rtxpro6000-llama-3.1-8b.yaml"


def test_workload_on_roofline_h100(benchmark):
    from llmsim import replay
    from llmsim.bridge import BridgeCostModel
    from llmsim.experiment import load_experiment
    from llmsim.model.config import load_model_config

    try:
        dataset_path("llmservingsim/workloads/sharegpt-llama-3.1-8b-300-sps10.jsonl")
    except DataNotFoundError as exc:
        pytest.skip(str(exc))
    # H100-SXM 80 GB: the memory model sizes the KV cache for it.
    exp = load_experiment(EXPERIMENT, {"hardware.name": "H100-SXM",
                                       "hardware.gpu_memory_bytes": 85_520_809_984})
    model = load_model_config(exp.model_path)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    server = subprocess.Popen([sys.executable, "-m", "adapters.roofline", "--hardware",
                               "h100-sxm", "--port", "0"], stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True, env=env)
    out = {}
    try:
        port = json.loads(server.stdout.readline())["port"]

        def run_once():
            client = BridgeCostModel(f"127.0.0.1:{port}", model=model)
            t0 = time.perf_counter()
            result = replay.run(exp, cost_model=client)
            out.update(wall_s=time.perf_counter() - t0, stats=client.stats, result=result)
            client.close()

        benchmark.pedantic(run_once, rounds=1, iterations=1)
    finally:
        server.terminate()
        server.wait()
    result, stats = out["result"], out["stats"]
    assert len(result.requests) == 300 and (result.requests["ttft_s"] > 0).all()
    print(f"\n[bridge] 300-request workload on the roofline H100-SXM server: wall "
          f"{out['wall_s']:.2f} s, {result.num_steps} steps, {stats.rpcs} RPCs, cache hit rate "
          f"{stats.hit_rate:.3f}, TTFT mean {result.requests['ttft_s'].mean() * 1e3:.1f} ms, "
          f"TPOT mean {result.requests['tpot_s'].mean() * 1e3:.2f} ms")
