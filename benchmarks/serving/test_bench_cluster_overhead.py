"""Replay wall time of the cluster examples next to the TP1 replay of the same workload
(issue 10 target: within 1.5x).

* TP2: ``examples/rtxpro6000-qwen3-32b-tp2.yaml`` vs the same experiment at
  ``engine.tensor_parallel_size = 1`` (the Qwen3-32B bundle profiles TP1 and TP2);
* DP2 x EP2: ``examples/rtxpro6000-qwen3-30b-a3b-dp2-ep.yaml`` (two lock-step ranks) vs
  ``examples/rtxpro6000-qwen3-30b-a3b.yaml`` (one TP1 engine, the same 300 ShareGPT requests).

Prints the simulation wall time (``ReplayResult.wall_time_s``, cost-model memo cold: a fresh
cost model every round; minimum over the rounds), the engine steps, and the ratios of the
wall times and of the wall time per step (the layouts schedule different step counts:
the TP1 engine of a 32B model is slower, so its queue differs). ``make bench`` runs it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from llmsim.data import dataset_path
from llmsim.errors import DataNotFoundError
from llmsim.experiment import Experiment, load_experiment
from llmsim.model.config import load_model_config
from llmsim.replay import load_experiment_trace, run

ROOT = Path(__file__).resolve().parents[2]
ROUNDS = 2

CASES = {
    "tp2": (("rtxpro6000-qwen3-32b-tp2", {}),
            ("rtxpro6000-qwen3-32b-tp2", {"engine.tensor_parallel_size": 1})),
    "dp2xep2": (("rtxpro6000-qwen3-30b-a3b-dp2-ep", {}), ("rtxpro6000-qwen3-30b-a3b", {})),
}


def _replay(exp: Experiment) -> tuple[float, int]:
    """Minimum simulation wall time over ``ROUNDS`` replays (fresh cost model each), steps."""
    model = load_model_config(exp.model_path)
    trace = load_experiment_trace(exp)
    walls, steps = [], 0
    for _ in range(ROUNDS):
        r = run(exp, trace=trace, model=model)  # builds fresh cost models
        assert r.summary["num_finished"] == len(trace.requests)
        walls.append(r.wall_time_s)
        steps = r.num_steps
    return min(walls), steps


@pytest.mark.realdata
@pytest.mark.parametrize("case", sorted(CASES))
def test_bench_cluster_overhead(benchmark, case):
    try:
        dataset_path("llmservingsim/workloads/sharegpt-qwen3-32b-300-sps10.jsonl")
        dataset_path("llmservingsim/workloads/sharegpt-qwen3-30b-a3b-300-sps10.jsonl")
    except DataNotFoundError as exc:
        pytest.skip(str(exc))
    (name, sets), (base_name, base_sets) = CASES[case]
    exp = load_experiment(ROOT / "examples" / f"{name}.yaml", overrides=sets)
    base = load_experiment(ROOT / "examples" / f"{base_name}.yaml", overrides=base_sets)
    assert exp.trace.path == base.trace.path  # the same workload
    out: dict[str, tuple[float, int]] = {}

    def both() -> None:
        out["cluster"] = _replay(exp)
        out["tp1"] = _replay(base)

    benchmark.pedantic(both, rounds=1, iterations=1)
    (wall, steps), (wall1, steps1) = out["cluster"], out["tp1"]
    ratio, per_step = wall / wall1, (wall / steps) / (wall1 / steps1)
    print(f"\n[cluster] {case}: {name} {wall:.3f} s wall ({steps} steps) vs TP1 "
          f"{base_name}{' ' + str(base_sets) if base_sets else ''} {wall1:.3f} s ({steps1} "
          f"steps): ratio {ratio:.2f}x (target <= 1.5x), per step {per_step:.2f}x")
