"""Wall time of the 300-request RTXPRO6000 replay: profile server over gRPC vs in-process.

Prints the bridge / in-process wall-time ratio (target <= 1.5x), the same ratio in CPU
time (client process, all its threads, plus the server process: the steadier figure on a
loaded machine), the request count, the cache and guess hit rates, the decode stretches
fast-forwarded, and the load average (the wall ratio depends on how many cores are free:
client and server each need one). The profile server runs in its own process, as a
shared server would. Runs alternate in-process / bridge so load drifts hit both alike.
Run: ``make bench`` or ``pytest benchmarks/bridge --benchmark-enable --benchmark-only -s``.
"""

from __future__ import annotations

import json
import os
import statistics
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


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (Linux ``/proc``; NaN elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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
        in_proc, runs = [], []
        in_cpu: list[float] = []
        bridge_cpu: list[tuple[float, float]] = []

        def in_process_run():  # untimed by pytest-benchmark; timed here
            cm = ProfileCostModel.from_path(exp.profile_path, model=model)
            t0, c0 = time.perf_counter(), time.process_time()
            ref = replay.run(exp, cost_model=cm)
            in_proc.append((time.perf_counter() - t0, ref))
            in_cpu.append(time.process_time() - c0)

        def bridge_run():
            client = BridgeCostModel(f"127.0.0.1:{port}", model=model)
            t0, c0, s0 = time.perf_counter(), time.process_time(), _cpu_s(server.pid)
            result = replay.run(exp, cost_model=client)
            runs.append((time.perf_counter() - t0, client.stats, result))
            bridge_cpu.append((time.process_time() - c0, _cpu_s(server.pid) - s0))
            client.close()

        benchmark.pedantic(bridge_run, setup=in_process_run, rounds=5, iterations=1)
    finally:
        server.terminate()
        server.wait()
    ref = in_proc[0][1]
    for _, _, result in runs:
        pd.testing.assert_frame_equal(result.requests, ref.requests, check_exact=True)
    t_ref = [t for t, _ in in_proc]
    t_bridge = [t for t, _, _ in runs]
    stats = runs[0][1]
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"\n[bridge] 300-request RTXPRO6000 replay, {ref.num_steps} steps "
          f"(load average {load} on {os.cpu_count()} cores): in-process "
          f"{min(t_ref):.3f} s (median {statistics.median(t_ref):.3f}), bridge "
          f"{min(t_bridge):.3f} s (median {statistics.median(t_bridge):.3f}), "
          f"ratio bridge/in-process {min(t_bridge) / min(t_ref):.2f}x of the best runs, "
          f"{statistics.median(t_bridge) / statistics.median(t_ref):.2f}x of the medians "
          "(target <= 1.5x)")
    client_cpu = [c for c, _ in bridge_cpu]
    total_cpu = [c + srv for c, srv in bridge_cpu]
    print(f"[bridge] CPU (min of {len(in_cpu)}): in-process {min(in_cpu):.3f} s, bridge client "
          f"{min(client_cpu):.3f} s + server {min(srv for _, srv in bridge_cpu):.3f} s; "
          f"ratio client/in-process {min(client_cpu) / min(in_cpu):.2f}x, (client + server)/"
          f"in-process {min(total_cpu) / min(in_cpu):.2f}x")
    ff = runs[0][2].summary["fast_forward"]
    print(f"[bridge] decode fast-forward over the bridge: {ff['runs']} stretches, "
          f"{ff['steps_fast_forwarded']} steps (in-process: "
          f"{ref.summary['fast_forward']['runs']} stretches)")
    print(f"[bridge] {'CostStream messages' if stats.streamed else 'CostBatch RPCs'} "
          f"{stats.rpcs} for {stats.steps} step_cost calls; queries sent "
          f"{stats.queries_sent} ({stats.speculative_sent} guesses, "
          f"{stats.speculation_hit_rate:.0%} of them used); operator lookups "
          f"{stats.lookups}, answered without a request of their own {stats.hit_rate:.3f}")
