"""Whole-process time of the 300-request validation replay (issue 15 target: <= 1 s).

Runs ``python -m llmsim replay examples/rtxpro6000-llama-3.1-8b.yaml --out DIR`` and
``python -m llmsim validate`` of the same experiment as fresh processes, five times each
with the parsed-bundle cache warm and with ``LLMSIM_NO_CACHE=1`` (every run re-parses the
CSV bundle, as before the cache), and ``python -m llmsim --help``;
prints the median wall and CPU (user + system) seconds of each. The cache lives in a
private ``XDG_CACHE_HOME`` so the user's cache is neither used nor touched. Wall time on
this shared 2-core machine moves with the load; CPU time is the steadier figure.
``python -m pytest -q -s benchmarks/startup`` runs it.
"""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llmsim.data import dataset_path
from llmsim.errors import DataNotFoundError

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "rtxpro6000-llama-3.1-8b.yaml"
RUNS = 5


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """``(wall_s, cpu_s)`` of one child process (CPU = user + system, from getrusage)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, cwd=ROOT, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def medians(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    runs = [timed(cmd, env) for _ in range(RUNS)]
    return statistics.median(w for w, _ in runs), statistics.median(c for _, c in runs)


@pytest.mark.realdata
def test_bench_startup_whole_process(tmp_path):
    try:
        dataset_path("llmservingsim/workloads/sharegpt-llama-3.1-8b-300-sps10.jsonl")
    except DataNotFoundError as exc:
        pytest.skip(str(exc))
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "xdg")}
    env.pop("LLMSIM_NO_CACHE", None)
    replay = [sys.executable, "-m", "llmsim", "replay", str(EXAMPLE), "--no-progress",
              "--out", str(tmp_path / "out")]
    timed(replay, env)  # fills the cache
    cached = medians(replay, env)
    uncached = medians(replay, {**env, "LLMSIM_NO_CACHE": "1"})
    validate = [sys.executable, "-m", "llmsim", "validate", str(EXAMPLE), "--out",
                str(tmp_path / "val")]
    val_cached = medians(validate, env)
    val_uncached = medians(validate, {**env, "LLMSIM_NO_CACHE": "1"})
    helped = medians([sys.executable, "-m", "llmsim", "--help"], env)
    load = os.getloadavg()[0]
    print(f"\n[startup] 300-request replay, whole process, median of {RUNS} "
          f"(load average {load:.2f}):")
    for label, (wall, cpu) in (("replay, cache warm", cached),
                               ("replay, NO_CACHE=1", uncached),
                               ("validate, cache warm", val_cached),
                               ("validate, NO_CACHE=1", val_uncached),
                               ("llmsim --help", helped)):
        print(f"[startup]   {label:20s} wall {wall:6.3f} s   cpu {cpu:6.3f} s")
    assert (tmp_path / "out" / "requests.csv").is_file()
    assert (tmp_path / "val" / "report.json").is_file()
    assert cached[1] < uncached[1]  # the cache must save CPU time
