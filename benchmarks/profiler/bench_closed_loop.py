"""Closed loop on this CPU: profile a small Llama-style model, replay a synthetic trace on
the profile, and serve the same trace on the real PyTorch engine; prints the error tables
(``profiler.closed_loop.run``; in-context profile, engine overheads calibrated on a separate
trace). Takes about 4 minutes on 2 cores (the in-context sweep is ~3 of them)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from profiler.closed_loop.run import main


@pytest.mark.slow
def test_closed_loop_errors(benchmark, tmp_path: Path) -> None:
    out = tmp_path / "closed-loop"
    rc = benchmark.pedantic(main, args=(["--out", str(out), "--requests", "40"],),
                            rounds=1, iterations=1)
    assert rc == 0
    bench = json.loads((out / "measured-bench.json").read_text())
    assert bench["completed"] == 40 and len(bench["itls"]) == 40
    errors = out / "errors.json"
    if errors.exists():
        for label, rows in json.loads(errors.read_text())["tables"].items():
            print(label, {f"{r['metric']} {r['stat']}": round(r["error_pct"], 1) for r in rows})
