"""Trace benchmarks: load times (Azure conv 2023, a 1M-row trace) and replay at scale.

Run with ``make bench`` (or ``pytest benchmarks/traces --benchmark-enable --benchmark-only -s``);
each benchmark prints the figure it measures. Real-data benchmarks need LLMSIM_DATA_DIR.
The replay benchmarks run the replay in a child process (``replay_child.py``) so its peak
RSS is measured cleanly.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from llmsim.data import dataset_path
from llmsim.errors import DataNotFoundError
from llmsim.trace import load_trace, load_trace_frame

ROOT = Path(__file__).resolve().parents[2]
EXPERIMENT = ROOT / "examples" / "rtxpro6000-llama-3.1-8b.yaml"
AZURE_CONV = "azure-llm-2023/AzureLLMInferenceTrace_conv.csv"
MOONCAKE_CONV = "mooncake/conversation_trace.jsonl"


def require_data(relpath: str) -> Path:
    """The dataset file, or skip (fail under LLMSIM_REQUIRE_DATA=1, as in tests/conftest.py)."""
    try:
        return dataset_path(relpath)
    except DataNotFoundError as exc:
        if os.environ.get("LLMSIM_REQUIRE_DATA", "") not in ("", "0", "false", "no"):
            pytest.fail(f"real data required but missing: {exc}")
        pytest.skip(str(exc))


def test_bench_load_azure_conv_2023(benchmark):
    path = require_data(AZURE_CONV)
    trace = benchmark(lambda: load_trace("azure", path))
    assert len(trace) == 19366
    mean = benchmark.stats.stats.mean
    print(f"\nAzure conv 2023 load ({len(trace):,} requests -> Trace): mean {mean * 1e3:.1f} ms "
          f"(target <= 500 ms)")
    assert mean <= 0.5


@pytest.fixture(scope="module")
def million_row_csv(tmp_path_factory) -> Path:
    n = 1_000_000
    rng = np.random.default_rng(0)
    t = pd.Timestamp("2024-05-10") + pd.to_timedelta(np.cumsum(rng.exponential(0.01, n)), unit="s")
    path = tmp_path_factory.mktemp("big") / "azure_1m.csv"
    pd.DataFrame({"TIMESTAMP": t.strftime("%Y-%m-%d %H:%M:%S.%f"),
                  "ContextTokens": rng.integers(1, 8000, n),
                  "GeneratedTokens": rng.integers(1, 900, n)}).to_csv(path, index=False)
    return path


def test_bench_load_1m_rows(benchmark, million_row_csv, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    frame = benchmark.pedantic(lambda: load_trace_frame("azure", million_row_csv, cache=False),
                               rounds=3, iterations=1)
    assert len(frame) == 1_000_000
    csv_s = benchmark.stats.stats.mean
    t0 = time.perf_counter()
    load_trace_frame("azure", million_row_csv, cache=True)  # builds the Parquet cache
    build_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    cached = load_trace_frame("azure", million_row_csv, cache=True)
    cached_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    trace = cached.to_trace()
    materialize_s = time.perf_counter() - t0
    assert len(trace) == 1_000_000
    size_mb = million_row_csv.stat().st_size / 1e6
    print(f"\n1M-row Azure-format trace ({size_mb:.0f} MB CSV): CSV -> TraceFrame {csv_s:.2f} s; "
          f"streaming Parquet cache build {build_s:.2f} s; cached load {cached_s:.3f} s; "
          f"materialize 1M Request objects {materialize_s:.2f} s")


def _replay(fmt: str, relpath: str, timeout_s: int) -> dict:
    require_data(relpath)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("replay_child.py")), str(EXPERIMENT), fmt, relpath],
        capture_output=True, text=True, timeout=timeout_s, env=env, check=True, cwd=ROOT,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_bench_replay_azure_conv_hour(benchmark):
    res = benchmark.pedantic(lambda: _replay("azure", AZURE_CONV, 1200), rounds=1, iterations=1)
    print(f"\nAzure conv 2023 hour on 1x RTXPRO6000 Llama-3.1-8B: {res['requests']:,} requests, "
          f"{res['num_steps']:,} steps, replay wall {res['replay_s']:.2f} s (sim {res['sim_wall_s']:.2f} s, "
          f"target <= 10 s), trace load {res['load_s']:.2f} s, peak RSS {res['peak_rss_mib']:.0f} MiB "
          f"(after imports {res['rss_after_imports_mib']:.0f} MiB), simulated {res['simulated_duration_s']:.0f} s")
    assert res["finished"] == res["requests"] == 19366


def test_bench_replay_mooncake_conversation_hour(benchmark):
    res = benchmark.pedantic(lambda: _replay("mooncake", MOONCAKE_CONV, 3600), rounds=1, iterations=1)
    print(f"\nMooncake conversation hour, prefix caching on, 1x RTXPRO6000 Llama-3.1-8B: "
          f"{res['requests']:,} requests, {res['num_steps']:,} steps, replay wall {res['replay_s']:.2f} s, "
          f"peak RSS {res['peak_rss_mib']:.0f} MiB, prefix hit rate {res['prefix_hit_rate']:.3f}, "
          f"simulated {res['simulated_duration_s']:.0f} s")
    assert res["finished"] == res["requests"] == 12031
