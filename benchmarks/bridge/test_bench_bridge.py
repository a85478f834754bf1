"""Wall time of the 300-request RTXPRO6000 replay: profile server over gRPC vs in-process.

Prints the bridge / in-process wall-time ratio (target <= 1.5x), the RPC count and the
cache hit rates. The profile server runs in its own process, as a shared server would.
Run: ``make bench`` or ``pytest benchmarks/bridge --benchmark-enable --benchmark-only -s``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from llmsim.data import dataset_path
from llmsim.errors import DataNotFoundError

REPO = Path(__file__).resolve().parents[2]
EXPERIMENT = REPO / "examples" / "rtxpro6000-llama-3.1-8b.yaml"


def _experiment():
    from llmsim.experiment import load_experiment

    try:
        dataset_path("llmservingsim/profiles/RTXPRO6000/meta-llama/Llama-3.1-8B/bf16")
    except DataNotFoundError as exc:
        pytest.skip(str(exc))
    return load_experiment(EXPERIMENT)


def test_bridge_vs_in_process_replay(benchmark):
    from llmsim import replay
    from llmsim.bridge import BridgeCostModel
    from llmsim.costmodel.profile_model import ProfileCostModel
    from llmsim.model.config import load_model_config

    exp = _experiment()
    model = load_model_config(exp.model_path)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    server = subprocess.Popen([sys.executable, "-m", "adapters.profile", "--profile",
                               str(exp.profile_path), "--port", "0"], stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True, env=env)
    try:
        port = json.loads(server.stdout.readline())["port"]
        replay.run(exp)  # warm-up: imports, profile import cache
        in_proc = []
        for _ in range(3):
            cm = ProfileCostModel.from_path(exp.profile_path, model=model)
            t0 = time.perf_counter()
            ref = replay.run(exp, cost_model=cm)
            in_proc.append(time.perf_counter() - t0)
        runs = []

        def bridge_run():
            client = BridgeCostModel(f"127.0.0.1:{port}", model=model)
            t0 = time.perf_counter()
            result = replay.run(exp, cost_model=client)
            runs.append((time.perf_counter() - t0, client.stats, result))
            client.close()

        benchmark.pedantic(bridge_run, rounds=3, iterations=1)
    finally:
        server.terminate()
        server.wait()
    t_ref = min(in_proc)
    t_bridge, stats, result = min(runs, key=lambda r: r[0])
    pd.testing.assert_frame_equal(result.requests, ref.requests, check_exact=True)
    print(f"\n[bridge] 300-request RTXPRO6000 replay, {ref.num_steps} steps: "
          f"in-process {t_ref:.3f} s, bridge {t_bridge:.3f} s, "
          f"ratio bridge/in-process {t_bridge / t_ref:.2f}x (target <= 1.5x)")
    print(f"[bridge] RPCs {stats.rpcs} for {stats.steps} step_cost calls; "
          f"queries sent {stats.queries_sent} ({stats.speculative_sent} speculative); "
          f"operator lookups {stats.lookups}, memo hit rate {stats.hit_rate:.3f}")
