"""A sweep killed with SIGKILL mid-way resumes without re-measuring finished points."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from llmsim.profile import read_profile
from profiler.__main__ import main as profiler_main

REPO = Path(__file__).parents[2]
TINY_LLAMA = REPO / "tests" / "fixtures" / "profiler" / "tiny-llama.json"
ARGS = ["run", str(TINY_LLAMA), "--preset", "ci", "--no-progress", "--no-energy",
        "--repetitions", "40", "--max-tokens", "64", "--max-seqs", "8"]


def _points(journal: Path) -> dict[str, float]:
    out = {}
    for line in journal.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # torn last line
        if rec.get("type") == "point":
            out[rec["key"]] = rec["stats"]["median_ns"]
    return out


def test_resume_after_sigkill(tmp_path: Path) -> None:
    out = tmp_path / "tiny.pb"
    journal = tmp_path / "tiny.pb.journal.jsonl"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "profiler", *ARGS, "--out", str(out)],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            if journal.exists() and len(_points(journal)) >= 25:
                break
            assert proc.poll() is None, "sweep finished before it could be killed"
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert not out.exists()  # no half-written profile that looks complete
    before = _points(journal)
    assert len(before) >= 25

    # without --resume the sweep refuses to clobber the journal
    assert profiler_main([*ARGS, "--out", str(out)]) == 2
    # with other settings it refuses to mix measurements
    assert profiler_main([*ARGS, "--out", str(out), "--resume", "--threads", "2"]) == 2

    assert profiler_main([*ARGS, "--out", str(out), "--resume"]) == 0
    assert not journal.exists()
    prof = read_profile(out)
    assert prof.provenance.attributes["sessions"] == "2"
    got = {}
    for table in prof.tp[0].ops:
        cols = [list(a.values) for a in table.axes]
        for i, med in enumerate(table.median_ns):
            got[f"tp1/{table.op}/{','.join(str(c[i]) for c in cols)}"] = med
    # every point of the killed session kept its measured value (never re-measured) ...
    for key, med in before.items():
        assert got[key] == med, key
    # ... and the profile is complete
    assert len(got) > len(before)
    assert int(prof.provenance.attributes["points"]) == len(got) + len(prof.tp[0].skew.n)
