"""Speed of whole replays (issue 15 targets), each run as its own process and printed:

* the 300-request validation replay (RTXPRO6000 Llama-3.1-8B), target <= 1 s;
* the Azure conv 2023 hour (19,366 requests, prompts clipped to 4,096 tokens, chunk 512,
  batch cap 128; ``azure-conv-4x-rtxpro6000.yaml``) on 1 instance (target <= 2 s) and on
  4 instances behind round robin (target <= 5 s, <= 500 MB peak RSS);
* the Azure 2024 conv trace's first 1M requests on 16 instances (<= 5 min, <= 4 GB): only
  when that week-long trace is in the data directory (it is not in the shared one).

Wall time is the whole process (start-up, trace load, replay, writing the outputs), measured
by the parent; CPU time and peak RSS are the child's (``cli_child.py``). Decode fast-forward
is on (the default); ``LLMSIM_BENCH_EXACT=1`` also runs each replay with ``--exact-steps``
for comparison. ``make bench`` runs these.
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

ROOT = Path(__file__).resolve().parents[2]
AZURE_YAML = ROOT / "benchmarks" / "serving" / "azure-conv-4x-rtxpro6000.yaml"
AZURE_2024 = "azure-llm-2024/AzureLLMInferenceTrace_conv_1week.csv"


def _require(relpath: str) -> Path:
    try:
        return dataset_path(relpath)
    except DataNotFoundError as exc:
        if os.environ.get("LLMSIM_REQUIRE_DATA", "") not in ("", "0", "false", "no"):
            pytest.fail(f"real data required but missing: {exc}")
        pytest.skip(str(exc))


def _replay(args: list[str], out: Path, timeout_s: int) -> dict:
    """``llmsim replay ARGS --out OUT --no-progress`` in a child; wall, CPU, RSS."""
    cmd = [sys.executable, str(Path(__file__).with_name("cli_child.py")), "replay", *args,
           "--out", str(out), "--no-progress"]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, cwd=ROOT,
                          check=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    wall = time.perf_counter() - t0
    res = json.loads(done.stdout.strip().splitlines()[-1])
    assert res["rc"] == 0, done.stderr[-2000:]
    res["wall_s"] = wall
    res["summary"] = json.loads((out / "summary.json").read_text())
    return res


def _line(label: str, res: dict) -> str:
    s = res["summary"]
    ff = s.get("fast_forward", {})
    return (f"{label}: wall {res['wall_s']:.2f} s (whole process), CPU {res['cpu_s']:.2f} s, "
            f"peak RSS {res['peak_rss_mib']:.0f} MiB, {s['num_steps']:,} steps "
            f"({ff.get('steps_fast_forwarded', 0):,} fast-forwarded in {ff.get('runs', 0):,} runs), "
            f"{s['num_finished']:,}/{s['num_requests']:,} requests")


def _both(label: str, args: list[str], tmp_path: Path, timeout_s: int) -> dict:
    res = _replay(args, tmp_path / "ff", timeout_s)
    print(f"\n[serving] {_line(label, res)}")
    if os.environ.get("LLMSIM_BENCH_EXACT", "") not in ("", "0"):
        exact = _replay([*args, "--exact-steps"], tmp_path / "exact", timeout_s * 20)
        print(f"[serving] {_line(label + ' --exact-steps', exact)}")
        for name in ("requests.csv", "timeseries.csv"):
            assert (tmp_path / "ff" / name).read_bytes() == (tmp_path / "exact" / name).read_bytes()
    return res


@pytest.mark.realdata
def test_bench_validation_replay_whole_process(tmp_path):
    _require("llmservingsim/workloads/sharegpt-llama-3.1-8b-300-sps10.jsonl")
    res = _both("300-request RTXPRO6000 validation replay (target <= 1 s)",
                ["examples/rtxpro6000-llama-3.1-8b.yaml"], tmp_path, 600)
    assert res["summary"]["num_finished"] == 300


@pytest.mark.realdata
@pytest.mark.parametrize("instances,target", [(1, "<= 2 s"), (4, "<= 5 s, <= 500 MB")])
def test_bench_azure_conv_hour(tmp_path, instances, target):
    _require("azure-llm-2023/AzureLLMInferenceTrace_conv.csv")
    res = _both(f"Azure conv 2023 hour, {instances} instance(s), round robin (target {target})",
                [str(AZURE_YAML), "--set", f"instances={instances}"], tmp_path, 3600)
    assert res["summary"]["num_finished"] == 19366


@pytest.mark.realdata
def test_bench_azure_2024_first_million_16_instances(tmp_path):
    path = _require(AZURE_2024)
    res = _both("Azure conv 2024, first 1M requests, 16 instances (target <= 5 min, <= 4 GB)",
                [str(AZURE_YAML), "--set", "instances=16", "--set", f"trace.path={path}",
                 "--set", "trace.transforms=[{truncate: {max_requests: 1000000, "
                 "max_input_tokens: 4096}}]"], tmp_path, 3600)
    assert res["summary"]["num_finished"] == 1_000_000
