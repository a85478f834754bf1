"""Wall time of the P/D example replay (examples/rtxpro6000-llama-3.1-8b-pd.yaml, issue 11).

Prints the simulation wall time (``ReplayResult.wall_time_s``) of the 300-request
1 prefill + 1 decode replay, with NixlConnector (the example) and P2pNcclConnector, next to
the colocated single-instance replay of the same workload. ``make bench`` runs it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from llmsim.data import dataset_path
from llmsim.errors import DataNotFoundError
from llmsim.experiment import load_experiment
from llmsim.replay import run

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.realdata
@pytest.mark.parametrize(("example", "overrides"), [
    ("rtxpro6000-llama-3.1-8b", {}),
    ("rtxpro6000-llama-3.1-8b-pd", {}),
    ("rtxpro6000-llama-3.1-8b-pd", {"kv_transfer_config.kv_connector": "P2pNcclConnector"}),
])
def test_bench_pd_replay(benchmark, example, overrides):
    try:
        dataset_path("llmservingsim/workloads/sharegpt-llama-3.1-8b-300-sps10.jsonl")
    except DataNotFoundError as exc:
        pytest.skip(str(exc))
    exp = load_experiment(ROOT / "examples" / f"{example}.yaml", overrides)
    walls: list[float] = []

    def replay():
        r = run(exp)
        walls.append(r.wall_time_s)
        return r

    result = benchmark.pedantic(replay, rounds=3, iterations=1)
    assert result.summary["num_finished"] == 300
    label = overrides.get("kv_transfer_config.kv_connector", "")
    print(f"\n[pd] {example} {label}: 300 requests, {result.num_steps} engine steps; "
          f"simulation wall min {min(walls):.3f} s / mean {sum(walls) / len(walls):.3f} s; "
          f"TTFT p50 {result.summary['ttft_s']['p50'] * 1e3:.1f} ms")
