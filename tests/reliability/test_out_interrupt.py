"""Interrupted and killed writes (issue 17): Ctrl-C exits 130 cleanly; SIGKILL leftovers are
cleaned up by the next run, without touching a concurrent run's or anyone else's files."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llmsim.data import atomic
from llmsim.data.atomic import (
    OWNER_NAME,
    clean_stale_temps,
    publish_dir,
    temp_dir_next_to,
)

REPO = Path(__file__).resolve().parents[2]
TINY_EXP = REPO / "tests" / "fixtures" / "bridge" / "tiny-experiment.yaml"


def write_output(out: Path, files: dict[str, str]) -> Path:
    tmp = temp_dir_next_to(out)
    try:
        for name, text in files.items():
            (tmp / name).write_text(text)
        return publish_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def hidden_siblings(out: Path) -> list[str]:
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}."))


def run_child(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], check=False, capture_output=True,
                          text=True, cwd=REPO, timeout=60)


# ------------------------------------------------------------------ Ctrl-C
def test_sigint_during_replay_exits_130_without_traceback_or_output(tmp_path):
    """The replay blocks on a cost-model server that accepts and never answers; SIGINT then."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    server.settimeout(30)
    port = server.getsockname()[1]
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "llmsim", "replay", str(TINY_EXP), "--no-progress",
         "--set", f"cost_model=grpc://127.0.0.1:{port}?deadline_s=60", "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        conn, _ = server.accept()  # the CLI is inside the replay now
        time.sleep(0.3)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
        elapsed_s = time.monotonic() - t0
        conn.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        server.close()
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1] == "llmsim: interrupted"
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert elapsed_s < 10  # not waiting out the 60 s deadline
    assert not out.exists() and hidden_siblings(out) == []


def test_keyboard_interrupt_in_main_returns_130(monkeypatch, capsys):
    from llmsim.cli import main as cli_main

    def interrupted(_argv):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_main, "_run", interrupted)
    assert cli_main.main(["replay", "x.yaml"]) == 130
    assert capsys.readouterr().err == "llmsim: interrupted\n"


def test_interrupt_while_writing_a_report_keeps_the_old_one(tmp_path, monkeypatch):
    from llmsim.validate import report as report_mod

    out = write_output(tmp_path / "rep", {"report.json": "old"})

    def interrupted(*_a, **_k):
        raise KeyboardInterrupt

    monkeypatch.setattr(report_mod, "_plots", interrupted)
    with pytest.raises(KeyboardInterrupt):
        report_mod.write_report(object(), out)  # type: ignore[arg-type]
    assert (out / "report.json").read_text() == "old"
    assert hidden_siblings(out) == []


# ------------------------------------------------------------------ SIGKILL leftovers
_KILLED_MID_WRITE = """
import os, signal, sys
from llmsim.data.atomic import temp_dir_next_to
tmp = temp_dir_next_to(sys.argv[1])
(tmp / "requests.csv").write_text("half a file")
os.kill(os.getpid(), signal.SIGKILL)
"""

_KILLED_MID_SWAP = """
import os, signal, sys
from llmsim.data import atomic
real = os.replace
def replace(src, dst):
    real(src, dst)
    if ".old-" in os.path.basename(dst):  # the previous output was just moved aside
        os.kill(os.getpid(), signal.SIGKILL)
atomic.os.replace = replace
tmp = atomic.temp_dir_next_to(sys.argv[1])
(tmp / "summary.json").write_text("new")
atomic.publish_dir(tmp, sys.argv[1])
"""


def test_temp_dir_of_a_killed_run_is_removed_by_the_next_run(tmp_path):
    out = tmp_path / "out"
    proc = run_child(_KILLED_MID_WRITE, out)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    (left,) = hidden_siblings(out)
    assert left.startswith(".out.tmp-") and (out.parent / left / "requests.csv").exists()
    write_output(out, {"summary.json": "1"})
    assert hidden_siblings(out) == []
    assert (out / "summary.json").read_text() == "1"


def test_previous_output_moved_aside_by_a_killed_run_is_restored(tmp_path):
    out = write_output(tmp_path / "out", {"summary.json": "old"})
    proc = run_child(_KILLED_MID_SWAP, out)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert not out.exists()  # killed between the two renames
    assert sorted(n.split("-", 1)[0] for n in hidden_siblings(out)) == [".out.old", ".out.tmp"]
    restored = clean_stale_temps(out)
    assert len(restored) == 2
    assert (out / "summary.json").read_text() == "old" and not (out / OWNER_NAME).exists()
    assert hidden_siblings(out) == []
    write_output(out, {"summary.json": "new"})  # and it is again replaceable
    assert (out / "summary.json").read_text() == "new"


_LIVE_WRITER = """
import sys
from llmsim.data.atomic import temp_dir_next_to
print(temp_dir_next_to(sys.argv[1]), flush=True)
sys.stdin.read()
"""


def test_a_concurrent_runs_temp_dir_is_left_alone(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-c", _LIVE_WRITER, str(out)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        live = Path(proc.stdout.readline().strip())
        assert live.is_dir()
        write_output(out, {"summary.json": "1"})
        write_output(out, {"summary.json": "2"})
        assert live.is_dir()  # pid alive: not ours to remove
    finally:
        proc.communicate(input="", timeout=20)
    write_output(out, {"summary.json": "3"})  # its writer is gone now
    assert not live.exists() and hidden_siblings(out) == []


def test_look_alike_directories_without_an_owner_file_are_kept(tmp_path):
    out = tmp_path / "out"
    lookalikes = {
        ".out.tmp-mine": None,  # no owner file
        ".out.old-mine": json.dumps({"host": "some-other-host", "pid": 1}),  # another machine
        ".out.tmp-bad": "not json",
    }
    for name, owner in lookalikes.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "keep.txt").write_text("keep")
        if owner is not None:
            (tmp_path / name / OWNER_NAME).write_text(owner)
    write_output(out, {"summary.json": "1"})
    for name in lookalikes:
        assert (tmp_path / name / "keep.txt").read_text() == "keep"


def test_dead_pid_detection():
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    assert not atomic._pid_alive(int(proc.stdout))
    assert atomic._pid_alive(os.getpid()) and atomic._pid_alive(os.getppid())
