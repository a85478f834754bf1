"""Wall time of the 300-request RTXPRO6000 / Llama-3.1-8B replay (target <= 1 s).

Prints the simulation wall time (``ReplayResult.wall_time_s``: event loop + metrics tables,
cost-model memo cold), the end-to-end ``run()`` time with the trace and cost model already
loaded, and the number of engine steps. ``make bench`` runs it.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from llmsim.data import dataset_path
from llmsim.errors import DataNotFoundError
from llmsim.experiment import load_experiment
from llmsim.model.config import load_model_config
from llmsim.replay import build_cost_model, load_experiment_trace, run

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.realdata
@pytest.mark.parametrize("example", ["rtxpro6000-llama-3.1-8b", "rtx4090-llama-3.1-8b"])
def test_bench_replay_300_requests(benchmark, example):
    try:
        dataset_path("llmservingsim/workloads/sharegpt-llama-3.1-8b-300-sps10.jsonl")
    except DataNotFoundError as exc:
        pytest.skip(str(exc))
    exp = load_experiment(ROOT / "examples" / f"{example}.yaml")
    model = load_model_config(exp.model_path)
    t0 = time.perf_counter()
    trace = load_experiment_trace(exp)
    t1 = time.perf_counter()
    walls: list[float] = []
    steps: list[int] = []

    def replay():
        cost_model = build_cost_model(exp, model)  # fresh: memo cold on every round
        r = run(exp, trace=trace, cost_model=cost_model, model=model)
        walls.append(r.wall_time_s)
        steps.append(r.num_steps)
        return r

    t2 = time.perf_counter()
    result = benchmark.pedantic(replay, rounds=3, iterations=1)
    t3 = time.perf_counter()
    assert result.summary["num_finished"] == 300
    print(f"\n[serving] {example}: 300 requests, {steps[-1]} engine steps; simulation wall "
          f"min {min(walls):.3f} s / mean {sum(walls) / len(walls):.3f} s; run() incl. cost-model "
          f"build {(t3 - t2) / 3:.3f} s per round; trace load {t1 - t0:.3f} s")
