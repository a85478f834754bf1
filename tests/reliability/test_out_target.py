"""``--out`` never destroys what llmsim did not write (issue 17, data loss).

Library level (``llmsim.data.atomic``) and through the CLI: a regular file, a character
device, a symbolic link and a foreign directory at the destination are refused with a
``ConfigError`` and left untouched; llmsim's own previous output (it carries the manifest)
is replaced; nested llmsim outputs are carried over; a parent that is a file, read-only or
busy gives a one-line error, never a traceback.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from llmsim.cli.main import main
from llmsim.data import atomic
from llmsim.data.atomic import (
    MANIFEST_NAME,
    atomic_write_text,
    check_output_target,
    publish_dir,
    temp_dir_next_to,
)
from llmsim.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
TINY_EXP = REPO / "tests" / "fixtures" / "bridge" / "tiny-experiment.yaml"
TINY_TRACE = REPO / "tests" / "fixtures" / "bridge" / "tiny-trace.jsonl"


def write_output(out: Path, files: dict[str, str]) -> Path:
    """Publish a directory holding ``files`` (name -> text) at ``out``, as every llmsim writer does."""
    tmp = temp_dir_next_to(out)
    try:
        for name, text in files.items():
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp / name).write_text(text)
        return publish_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def hidden_siblings(out: Path) -> list[str]:
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}."))


def snapshot(d: Path) -> dict[str, bytes]:
    return {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------ library level
def test_manifest_marks_the_output_and_is_deterministic(tmp_path):
    a = write_output(tmp_path / "a", {"summary.json": "{}", "sub/x.csv": "1\n"})
    b = write_output(tmp_path / "b", {"summary.json": "{}", "sub/x.csv": "1\n"})
    manifest = json.loads((a / MANIFEST_NAME).read_text())
    assert manifest["schema"] == "llmsim.output/1"
    assert manifest["files"] == ["sub/x.csv", "summary.json"]
    assert manifest["written_by"].startswith("llmsim ")
    assert snapshot(a) == snapshot(b)  # no host, pid or time in it
    assert not (a / atomic.OWNER_NAME).exists()
    assert hidden_siblings(a) == [] and hidden_siblings(b) == []


def test_own_previous_output_is_replaced(tmp_path):
    out = write_output(tmp_path / "out", {"old.csv": "old", "summary.json": "1"})
    check_output_target(out)
    write_output(out, {"summary.json": "2"})
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST_NAME, "summary.json"]
    assert (out / "summary.json").read_text() == "2"
    assert hidden_siblings(out) == []


def test_empty_existing_directory_is_used(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    check_output_target(out)
    write_output(out, {"summary.json": "1"})
    assert (out / "summary.json").read_text() == "1"


def test_regular_file_is_refused_and_kept(tmp_path):
    out = tmp_path / "out"
    out.write_text("precious")
    for call in (check_output_target, temp_dir_next_to):
        with pytest.raises(ConfigError, match="is a regular file, not an llmsim output") as err:
            call(out)
        assert err.value.path == str(out) and err.value.field == "output_dir"
    assert out.read_text() == "precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_foreign_directory_is_refused_and_its_files_kept(tmp_path):
    out = tmp_path / "results"
    (out / "deep").mkdir(parents=True)
    (out / "notes.txt").write_text("mine")
    (out / "deep" / "data.bin").write_bytes(b"\x00\x01")
    before = snapshot(out)
    with pytest.raises(ConfigError, match="not an llmsim output directory.*remove it or choose another"):
        check_output_target(out)
    with pytest.raises(ConfigError, match="not an llmsim output directory"):
        write_output(out, {"summary.json": "1"})
    assert snapshot(out) == before
    assert hidden_siblings(out) == []


def test_own_output_with_a_user_file_added_is_refused(tmp_path):
    out = write_output(tmp_path / "out", {"summary.json": "1"})
    (out / "my-analysis.ipynb").write_text("hours of work")
    with pytest.raises(ConfigError, match="also holds 'my-analysis.ipynb', which llmsim did not write"):
        write_output(out, {"summary.json": "2"})
    assert (out / "my-analysis.ipynb").read_text() == "hours of work"
    assert (out / "summary.json").read_text() == "1"


def test_forged_or_broken_manifest_does_not_count(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "data.csv").write_text("x")
    for text in ("not json", json.dumps({"schema": "other/1", "files": []}),
                 json.dumps({"schema": "llmsim.output/1", "files": "data.csv"})):
        (out / MANIFEST_NAME).write_text(text)
        with pytest.raises(ConfigError, match="not an llmsim output directory"):
            check_output_target(out)
    assert (out / "data.csv").read_text() == "x"


def test_symlink_is_refused_even_to_an_llmsim_output(tmp_path):
    real = write_output(tmp_path / "real", {"summary.json": "1"})
    link = tmp_path / "link"
    link.symlink_to(real)
    with pytest.raises(ConfigError, match="is a symbolic link"):
        write_output(link, {"summary.json": "2"})
    assert link.is_symlink() and (real / "summary.json").read_text() == "1"


def test_nested_llmsim_outputs_are_carried_over(tmp_path):
    """``validate`` writes ``<output_dir>/validation``; re-running the replay keeps it."""
    out = write_output(tmp_path / "out", {"summary.json": "1"})
    write_output(out / "validation", {"report.json": "r"})
    write_output(out, {"summary.json": "2"})
    assert (out / "summary.json").read_text() == "2"
    assert (out / "validation" / "report.json").read_text() == "r"
    # validate first (creates the parent), replay into the parent afterwards
    parent = tmp_path / "fresh"
    write_output(parent / "validation", {"report.json": "v"})
    write_output(parent, {"summary.json": "3"})
    assert (parent / "validation" / "report.json").read_text() == "v"
    assert hidden_siblings(out) == [] and hidden_siblings(parent) == []


def test_nested_output_clashing_with_a_new_file_is_refused(tmp_path):
    out = write_output(tmp_path / "out", {"summary.json": "1"})
    write_output(out / "validation", {"report.json": "r"})
    with pytest.raises(ConfigError, match="'validation', which the new output would overwrite"):
        write_output(out, {"validation/report.json": "new"})
    assert (out / "validation" / "report.json").read_text() == "r"
    assert (out / "summary.json").read_text() == "1"
    assert hidden_siblings(out) == []


def test_character_device_is_refused_and_untouched():
    dev = Path("/dev/null")
    before = dev.lstat()
    assert stat.S_ISCHR(before.st_mode)
    for call in (check_output_target, temp_dir_next_to):
        with pytest.raises(ConfigError, match="is a character device"):
            call(dev)
    with pytest.raises(FileExistsError, match="character device"):
        atomic_write_text(dev, "x")
    after = dev.lstat()
    assert stat.S_ISCHR(after.st_mode)
    assert (after.st_ino, after.st_rdev) == (before.st_ino, before.st_rdev)
    assert not [p for p in Path("/dev").iterdir() if p.name.startswith(".null.")]


def test_file_writer_refuses_a_directory(tmp_path):
    (tmp_path / "d").mkdir()
    with pytest.raises(FileExistsError, match="is a directory"):
        atomic_write_text(tmp_path / "d", "x")
    assert (tmp_path / "d").is_dir()


def test_parent_is_a_file(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    for call in (check_output_target, temp_dir_next_to):
        with pytest.raises(ConfigError, match=f"{blocker} is a regular file, not a directory"):
            call(blocker / "a" / "out")
    assert blocker.read_text() == "x" and sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_busy_destination_is_a_clean_error_and_the_old_output_stays(tmp_path, monkeypatch):
    out = write_output(tmp_path / "out", {"summary.json": "1"})
    real_replace = os.replace

    def busy(src, dst):
        if Path(src).name.startswith(".out.tmp-"):
            raise OSError(errno.EBUSY, os.strerror(errno.EBUSY), str(dst))
        real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "replace", busy)
    with pytest.raises(ConfigError, match="cannot publish the output: Device or resource busy") as err:
        write_output(out, {"summary.json": "2"})
    assert err.value.path == str(out)
    monkeypatch.undo()
    assert (out / "summary.json").read_text() == "1"  # rolled back
    assert not (out / atomic.OWNER_NAME).exists()
    assert hidden_siblings(out) == []


# ------------------------------------------------------------------ read-only parent
# The CLI runs in a child process that loads every module it needs, then (as root) drops to
# ``nobody`` so the 0555 directory is really read-only for it: root ignores permission bits,
# and nobody could not start the interpreter under /root. Without root, 0555 is enough.
_UNPRIVILEGED = """
import os, sys
from llmsim.cli.main import main
main(["replay", sys.argv[1], "--no-progress", "--out", sys.argv[2]])  # loads the modules; refused
print("--- unprivileged from here", file=sys.stderr, flush=True)
if os.geteuid() == 0:
    os.setgroups([]); os.setresgid(65534, 65534, 65534); os.setresuid(65534, 65534, 65534)
if sys.argv[3] == "--library":  # the writer itself, without the CLI's up-front check
    from llmsim.data.atomic import temp_dir_next_to
    from llmsim.errors import ConfigError
    try:
        temp_dir_next_to(sys.argv[4])
    except ConfigError as exc:
        print(f"ConfigError: {exc}", file=sys.stderr)
        sys.exit(3)
sys.exit(main(sys.argv[3:]))
"""


def _run_cli_unprivileged(args: list[str], warmup_file: Path) -> tuple[int, str]:
    """``llmsim ARGS`` without write permission to the test's read-only dir; (code, stderr)."""
    proc = subprocess.run([sys.executable, "-c", _UNPRIVILEGED, str(TINY_EXP), str(warmup_file), *args],
                          check=False, capture_output=True, text=True, cwd=REPO, timeout=120)
    return proc.returncode, proc.stderr.split("--- unprivileged from here\n", 1)[-1]


@pytest.fixture
def readonly_dir():
    """A 0555 directory holding an llmsim output ``prev``, inside a world-readable base."""
    base = Path(tempfile.mkdtemp(prefix="llmsim-ro-", dir="/tmp"))
    base.chmod(0o755)
    ro = base / "ro"
    ro.mkdir()
    write_output(ro / "prev", {"summary.json": "1"})
    (base / "warmup.txt").write_text("x")
    ro.chmod(0o555)
    yield ro
    ro.chmod(0o755)
    shutil.rmtree(base)


@pytest.mark.parametrize("name", ["new", "prev", "sub/new"])
def test_read_only_parent_gives_one_line_error(readonly_dir, name):
    out = readonly_dir / name
    code, err = _run_cli_unprivileged(["replay", str(TINY_EXP), "--no-progress", "--out", str(out)],
                                      readonly_dir.parent / "warmup.txt")
    assert code == 2, err
    assert err.strip().splitlines() == [
        f"llmsim: error: {out}: field 'output_dir': cannot create it: directory {readonly_dir} is not writable"
    ]
    assert sorted(p.name for p in readonly_dir.iterdir()) == ["prev"]
    assert (readonly_dir / "prev" / "summary.json").read_text() == "1"


@pytest.mark.parametrize(("name", "reason"), [
    ("new", "cannot create a temporary directory beside it: Permission denied"),
    ("sub/new", "cannot create it: directory {ro} is not writable"),
])
def test_read_only_parent_at_write_time_is_a_config_error(readonly_dir, name, reason):
    out = readonly_dir / name
    code, err = _run_cli_unprivileged(["--library", str(out)], readonly_dir.parent / "warmup.txt")
    assert code == 3, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"ConfigError: {out}: field 'output_dir': "
                                                   + reason.format(ro=readonly_dir))
    assert sorted(p.name for p in readonly_dir.iterdir()) == ["prev"]


# ------------------------------------------------------------------ through the CLI
def test_cli_refuses_file_device_and_foreign_dir_before_running(tmp_path, capsys):
    target = tmp_path / "file.txt"
    target.write_text("precious")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("keep")
    null_before = os.lstat("/dev/null")
    cases = [(target, "is a regular file"), (Path("/dev/null"), "is a character device"),
             (foreign, "not an llmsim output directory")]
    for out, reason in cases:
        # cost_model points at a closed port: reaching the replay would fail differently
        rc = main(["replay", str(TINY_EXP), "--no-progress", "--out", str(out)])
        err = capsys.readouterr().err
        assert rc == 2, err
        assert err.startswith(f"llmsim: error: {out}: field 'output_dir': ") and reason in err
        assert "choose another output directory (--out)" in err and len(err.strip().splitlines()) == 1
    rc = main(["replay", str(TINY_EXP), "--no-progress", "--out", str(target / "sub")])  # under a file
    err = capsys.readouterr().err
    assert rc == 2 and err == (f"llmsim: error: {target / 'sub'}: field 'output_dir': cannot create it: "
                               f"{target} is a regular file, not a directory\n")
    assert target.read_text() == "precious" and (foreign / "keep.txt").read_text() == "keep"
    null_after = os.lstat("/dev/null")
    assert stat.S_ISCHR(null_after.st_mode) and null_after.st_rdev == null_before.st_rdev
    assert null_after.st_ino == null_before.st_ino
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt", "foreign"]


def test_trace_convert_refuses_device_and_directory(tmp_path, capsys):
    (tmp_path / "d").mkdir()
    for out in (Path("/dev/null"), tmp_path / "d"):
        rc = main(["trace", "convert", str(TINY_TRACE), "--out", str(out)])
        err = capsys.readouterr().err
        assert rc == 2 and "llmsim only replaces regular files" in err and "Traceback" not in err
    assert stat.S_ISCHR(os.lstat("/dev/null").st_mode) and (tmp_path / "d").is_dir()


@pytest.mark.realdata
def test_cli_replay_replaces_only_its_own_output(data_path, tmp_path, capsys):
    data_path("llmservingsim/workloads/sharegpt-llama-3.1-8b-300-sps10.jsonl")
    exp = str(REPO / "examples" / "rtxpro6000-llama-3.1-8b.yaml")
    out = tmp_path / "run"
    assert main(["replay", exp, "--no-progress", "--out", str(out)]) == 0
    first = snapshot(out)
    assert MANIFEST_NAME in first and "summary.json" in first
    assert main(["replay", exp, "--no-progress", "--out", str(out)]) == 0  # own output: replaced
    assert snapshot(out) == first  # deterministic, manifest included
    (out / "notes.md").write_text("mine")
    capsys.readouterr()
    assert main(["replay", exp, "--no-progress", "--out", str(out)]) == 2
    assert "holds 'notes.md', which llmsim did not write" in capsys.readouterr().err
    assert (out / "notes.md").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
