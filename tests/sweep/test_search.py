"""``llmsim search capacity``: the returned rate meets the SLO and ``rate x (1 + rel_tol)``
does not (checked by independent replays), the evaluations are monotone, the rate is the
scaled trace's mean rate, fewest instances, bracket edges, resuming, file/line errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from sweep_helpers import BASE

import llmsim
from llmsim.api import experiment_trace
from llmsim.errors import ConfigError
from llmsim.experiment import load_experiment
from llmsim.sweep.point import slo_metrics
from llmsim.sweep.search import load_search, run_search

N_REQUESTS = 40
SLO = {"ttft_s": 0.5, "tpot_s": 0.03, "attainment": 0.9, "ttft_percentile": None,
       "tpot_percentile": None}
COMMON = {"engine.cudagraph_capture_sizes": None,
          "trace.transforms": [{"truncate": {"max_requests": N_REQUESTS}}]}


def write_search(tmp_path: Path, body: str, name: str = "q.yaml") -> Path:
    path = tmp_path / name
    path.write_text(f"experiment: {BASE}\n"
                    "set:\n"
                    "  engine.cudagraph_capture_sizes: null\n"
                    f"  trace.transforms: [{{truncate: {{max_requests: {N_REQUESTS}}}}}]\n"
                    "slo: {ttft_s: 0.5, tpot_s: 0.03, attainment: 0.9}\n" + body)
    return path


def base_rate_per_s() -> float:
    trace = experiment_trace(load_experiment(BASE, COMMON))
    arrivals = [r.arrival_ns for r in trace.requests]
    return (len(arrivals) - 1) / ((max(arrivals) - min(arrivals)) / 1e9)


def replay_at(rate_per_s: float | None, instances: int = 1) -> tuple[dict, float]:
    """Independent replay at a rate: (SLO metrics, the scaled trace's mean rate)."""
    transforms = list(COMMON["trace.transforms"])
    if rate_per_s is not None:
        transforms.append({"scale_rate": rate_per_s / base_rate_per_s()})
    exp = load_experiment(BASE, {**COMMON, "trace.transforms": transforms,
                                 "instances": instances})
    trace = experiment_trace(exp)
    arrivals = [r.arrival_ns for r in trace.requests]
    offered = (len(arrivals) - 1) / ((max(arrivals) - min(arrivals)) / 1e9)
    result = llmsim.run(exp)
    return slo_metrics(result.requests, SLO, duration_s=result.summary["duration_s"]), offered


def test_max_rate_meets_the_slo_and_the_next_rate_does_not(tmp_path):
    tol = 0.05
    path = write_search(tmp_path, "find: max_rate\n"
                        f"rate: {{low_per_s: 1, high_per_s: 100, rel_tol: {tol}}}\n")
    res = run_search(load_search(path), out_dir=tmp_path / "out", backend="serial", plots=False)
    assert res.bounded and res.monotone and res.answer is not None
    rate = float(res.answer)
    assert 1 < rate < 100
    met, offered = replay_at(rate)
    assert met["slo_met"] and met["slo_attainment"] >= 0.9
    assert offered == pytest.approx(rate, rel=1e-6)  # the rate is the trace's mean rate
    above, _ = replay_at(rate * (1 + tol))
    assert not above["slo_met"]
    # the evaluations: met below the answer, not met above it (monotone attainment flag)
    ev = res.evaluations.sort_values("rate_per_s")
    flags = ev["slo_met"].tolist()
    assert flags == sorted(flags, reverse=True)
    assert ev["rate_per_s"].iloc[0] == 1 and ev["rate_per_s"].iloc[-1] == 100
    # resuming: every probe is in the store
    again = run_search(load_search(path), out_dir=tmp_path / "out", backend="serial",
                       plots=False)
    assert again.num_run == 0 and again.answer == res.answer


def test_parallel_probes_find_the_same_bracket(tmp_path):
    """Two probes per round (local pool) end on a bracket as tight as bisection's."""
    tol = 0.05
    path = write_search(tmp_path, "find: max_rate\n"
                        f"rate: {{low_per_s: 1, high_per_s: 100, rel_tol: {tol}}}\n")
    res = run_search(load_search(path), out_dir=tmp_path / "out", backend="local", workers=2)
    assert res.answer is not None and res.monotone
    ev = res.evaluations
    failing = ev.loc[~ev["slo_met"].astype(bool), "rate_per_s"].min()
    assert res.answer < failing <= res.answer * (1 + tol)
    assert (tmp_path / "out" / "results" / "plots" / "rate_per_s.png").is_file()


def test_min_instances(tmp_path):
    path = write_search(tmp_path, "find: min_instances\nrate: {per_s: 60}\n"
                        "instances: {low: 1, high: 8}\n")
    res = run_search(load_search(path), out_dir=tmp_path / "out", backend="serial", plots=False)
    assert res.answer is not None and res.monotone
    n = int(res.answer)
    assert 1 < n <= 8
    assert replay_at(60.0, instances=n)[0]["slo_met"]
    assert not replay_at(60.0, instances=n - 1)[0]["slo_met"]


def test_bracket_edges(tmp_path):
    easy = write_search(tmp_path, "find: max_rate\nrate: {low_per_s: 0.5, high_per_s: 1}\n",
                        name="easy.yaml")
    res = run_search(load_search(easy), out_dir=tmp_path / "a", backend="serial", plots=False)
    assert res.answer == 1 and not res.bounded and len(res.evaluations) == 2
    hard = write_search(tmp_path, "find: max_rate\nrate: {low_per_s: 500, high_per_s: 1000}\n",
                        name="hard.yaml")
    res = run_search(load_search(hard), out_dir=tmp_path / "b", backend="serial", plots=False)
    assert res.answer is None


@pytest.mark.parametrize(("body", "line", "field", "text"), [
    ("find: max_rate\n", 6, "find", "needs rate"),
    ("find: max_rate\nrate: {low_per_s: 5, high_per_s: 2}\n", 7, "rate.low_per_s",
     "must be below"),
    ("find: max_rate\nrate: {low_per_s: 1, high_per_s: 2, tol: 1}\n", 7, "rate.tol",
     "unknown key (known: high_per_s, low_per_s, per_s, rel_tol)"),
    ("find: most\nrate: {low_per_s: 1, high_per_s: 2}\n", 6, "find", "'max_rate' or"),
    ("find: min_instances\ninstances: {low: 1, high: 0}\n", 7, "instances.high",
     "greater than or equal to 1"),
])
def test_bad_search_files(tmp_path, body, line, field, text):
    path = write_search(tmp_path, body)
    with pytest.raises(ConfigError) as info:
        load_search(path)
    assert info.value.path == str(path)
    assert info.value.line == line and info.value.field == field, str(info.value)
    assert text in str(info.value)


def test_cli_search(tmp_path):
    path = write_search(tmp_path, "find: max_rate\nrate: {low_per_s: 0.5, high_per_s: 1}\n")
    out = subprocess.run([sys.executable, "-m", "llmsim", "search", "capacity", str(path),
                          "--out", str(tmp_path / "o"), "--backend", "serial", "--no-plots"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "highest rate meeting the SLO" in out.stdout and ": 1 req/s (the upper bound" \
        in out.stdout
