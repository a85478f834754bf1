"""Atomic output: files and directories that appear only once complete, and never clobber.

Every llmsim writer (profiles, reports, trace conversions, stats, downloads) follows one
rule: write to a temporary name in the destination's own directory (same filesystem), then
``os.replace`` it into place. A run that fails or is killed half-way leaves at most a hidden
``.NAME.*`` temporary, never a file or directory under the final name that looks complete.

``tempfile.mkstemp`` / ``mkdtemp`` create their entries with mode 0600 / 0700; the helpers
here give them the mode an ordinary ``open``/``mkdir`` would (0666 / 0777 minus the umask),
so an atomic write is indistinguishable from a plain one.

Output directories (``replay --out``, ``validate --out``, profile bundles) are published by
:func:`publish_dir`, which marks each one with a manifest, ``.llmsim-output.json``
(``{"schema": "llmsim.output/1", "written_by": "llmsim <version>", "files": [...]}``: the
relative paths it wrote, sorted; no host or time, so two identical runs write identical
bytes). What may be at the destination:

* nothing: the new directory is renamed into place;
* an empty directory: it is replaced (``rename`` onto an empty directory);
* a directory carrying a valid manifest (a previous llmsim output): it is replaced once the
  new one is complete. Entries it holds beyond its manifest's list must themselves be llmsim
  outputs (e.g. ``validation/`` that ``llmsim validate`` writes inside a replay's
  ``output_dir``): they are moved into the new directory, never deleted;
* a directory without a manifest that holds only llmsim outputs: treated the same way;
* anything else (a regular file, a device, a FIFO, a symbolic link, a directory holding a
  file llmsim did not write): refused with a :class:`~llmsim.errors.ConfigError` naming the
  path and the reason, before anything is moved. :func:`check_output_target` runs the same
  test up front so the CLIs refuse before the expensive work.

Temporaries are ``.NAME.tmp-*`` (being assembled) and ``.NAME.old-*`` (the previous output,
moved aside for the swap). Each carries ``.llmsim-owner.json`` with the writer's host name
and pid. A run killed with SIGKILL leaves them behind; the next run for the same
destination removes those whose owner is on this host and no longer alive (a ``.old-*``
whose destination is missing, i.e. the kill fell between the two renames, is renamed back
instead). Directories of a live run (a concurrent llmsim) and anything without the owner
file are left alone. Remaining window: a kill between moving a previous output aside and
renaming the new one in, when nested outputs were being carried over, loses those nested
outputs (the rename pair takes microseconds).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import socket
import stat
import tempfile
from pathlib import Path
from typing import Any

from llmsim.errors import ConfigError

logger = logging.getLogger(__name__)

MANIFEST_NAME = ".llmsim-output.json"
"""File in every directory :func:`publish_dir` publishes that marks it as llmsim's own."""
OWNER_NAME = ".llmsim-owner.json"
"""File in each in-progress temporary directory: ``{"host": str, "pid": int}`` of its writer."""
MANIFEST_SCHEMA = "llmsim.output/1"
_MAX_MARKER_BYTES = 1 << 20
_FIELD = "output_dir"
_HINT = "remove it or choose another output directory (--out)"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _file_kind(mode: int) -> str:
    """A reader's name for the file type in ``st_mode``."""
    for test, name in ((stat.S_ISREG, "a regular file"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a FIFO"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISLNK, "a symbolic link")):
        if test(mode):
            return name
    return "not a regular file or directory"


def _os_error(exc: OSError, path: Path, action: str) -> ConfigError:
    """A located ``ConfigError`` for an ``OSError`` met while doing ``action`` for ``path``."""
    what = exc.strerror or str(exc)
    where = f" ({exc.filename})" if exc.filename and str(exc.filename) != str(path) else ""
    return ConfigError(f"cannot {action}: {what}{where}", path=path, field=_FIELD)


# ------------------------------------------------------------------ single files
def atomic_write_bytes(path: str | Path, data: bytes, *, fsync: bool = True) -> Path:
    """Write ``data`` to ``path`` through a temp file in the same directory + ``os.replace``.

    Args:
        path: destination; its parent directories are created. When it exists it must be a
            regular file (or a symbolic link to one, which is replaced by the new file).
        data: the file's full content.
        fsync: flush the temp file to disk before the rename (durable across a crash).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        FileExistsError: ``path`` exists and is not a regular file (a directory, a device
            such as ``/dev/null``, a FIFO): it is never replaced.
        OSError: the directory or file cannot be written (the temp file is removed).
    """
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        mode = None
    if mode is not None and not stat.S_ISREG(mode):
        kind = "a directory" if stat.S_ISDIR(mode) else _file_kind(mode)
        raise FileExistsError(errno.EEXIST, f"exists and is {kind}; llmsim only replaces regular "
                              "files", str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str, *, fsync: bool = True) -> Path:
    """:func:`atomic_write_bytes` of ``text`` encoded as UTF-8."""
    return atomic_write_bytes(path, text.encode("utf-8"), fsync=fsync)


# ------------------------------------------------------------------ markers
def _read_json_marker(path: Path) -> dict[str, Any] | None:
    """The JSON object in marker file ``path``, or None when absent / not a small JSON object."""
    try:
        st = path.lstat()
        if not stat.S_ISREG(st.st_mode) or st.st_size > _MAX_MARKER_BYTES:
            return None
        obj = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


def _manifest(directory: Path) -> dict[str, Any] | None:
    """``directory``'s llmsim manifest when it is a valid one, else None."""
    obj = _read_json_marker(directory / MANIFEST_NAME)
    if obj is None or obj.get("schema") != MANIFEST_SCHEMA:
        return None
    files = obj.get("files")
    if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
        return None
    return obj


def _is_llmsim_output(path: Path) -> bool:
    """True for a real directory (not a link) carrying a valid llmsim manifest."""
    try:
        if not stat.S_ISDIR(path.lstat().st_mode):
            return False
    except OSError:
        return False
    return _manifest(path) is not None


def _write_owner(directory: Path) -> None:
    data = json.dumps({"host": socket.gethostname(), "pid": os.getpid()}).encode()
    (directory / OWNER_NAME).write_bytes(data)


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except (OverflowError, ValueError):
        return False
    return True


def _owner_state(directory: Path) -> str:
    """``"ours-dead"`` (stale, removable), ``"live"`` (a running writer) or ``"unknown"``."""
    owner = _read_json_marker(directory / OWNER_NAME)
    if owner is None or not isinstance(owner.get("pid"), int) or owner.get("host") != socket.gethostname():
        return "unknown"
    return "live" if _pid_alive(owner["pid"]) else "ours-dead"


def _temp_kind(name: str, out_name: str | None = None) -> str | None:
    """``"tmp"``/``"old"`` when ``name`` is one of llmsim's temporaries (for ``out_name``)."""
    for kind in ("tmp", "old"):
        if out_name is not None:
            if name.startswith(f".{out_name}.{kind}-"):
                return kind
        elif name.startswith(".") and f".{kind}-" in name[1:]:
            return kind
    return None


# ------------------------------------------------------------------ inspection
def _describe_target(out_dir: Path) -> tuple[str, list[str]]:
    """What is at ``out_dir``: ``("missing"|"empty"|"replaceable", names to carry over)``.

    Raises:
        ConfigError: ``out_dir`` must not be replaced (names the path and why).
    """
    try:
        st = out_dir.lstat()
    except (FileNotFoundError, NotADirectoryError):  # a parent is missing / a file: see _check_parent
        return "missing", []
    except OSError as exc:
        raise _os_error(exc, out_dir, "inspect the output path") from exc
    if not stat.S_ISDIR(st.st_mode):
        raise ConfigError(f"exists and is {_file_kind(st.st_mode)}, not an llmsim output "
                          f"directory; {_HINT}", path=out_dir, field=_FIELD)
    manifest = _manifest(out_dir)
    listed = {f.split("/", 1)[0] for f in manifest["files"]} if manifest else set()
    carry: list[str] = []
    try:
        names = sorted(os.listdir(out_dir))
    except OSError as exc:
        raise _os_error(exc, out_dir, "list the output directory") from exc
    if not names:
        return "empty", []
    for name in names:
        entry = out_dir / name
        if name in (MANIFEST_NAME, OWNER_NAME) or name in listed:
            continue
        if _is_llmsim_output(entry):
            carry.append(name)
            continue
        if _temp_kind(name) is not None:
            state = _owner_state(entry)
            if state == "ours-dead":
                continue
            if state == "live":
                raise ConfigError(f"holds '{name}', being written by a running llmsim; wait for "
                                  "it to finish", path=out_dir, field=_FIELD)
        if manifest is None:
            raise ConfigError(f"exists and is not an llmsim output directory (it holds '{name}'); "
                              f"{_HINT}", path=out_dir, field=_FIELD)
        raise ConfigError(f"is an llmsim output but also holds '{name}', which llmsim did not "
                          f"write; {_HINT}", path=out_dir, field=_FIELD)
    return "replaceable", carry


def _nearest_existing(path: Path) -> Path:
    p = path.parent
    while not os.path.lexists(p) and p != p.parent:
        p = p.parent
    return p


def check_output_target(out_dir: str | Path) -> Path:
    """Refuse, before any work, an output directory :func:`publish_dir` would refuse.

    Checks what is at ``out_dir`` (see the module docstring) and that the nearest existing
    parent is a writable directory. Nothing is created or removed. The same checks run again
    at publish time, so a destination that changes in between is still safe.

    Args:
        out_dir: the output directory a command is about to write.

    Returns:
        ``out_dir`` as a :class:`~pathlib.Path`.

    Raises:
        ConfigError: ``out_dir`` is a file, device, link or foreign directory, or its parent
            is not a directory / not writable (``path`` is ``out_dir``, field ``output_dir``).
    """
    out_dir = Path(out_dir)
    _describe_target(out_dir)
    _check_parent(out_dir)
    return out_dir


def _check_parent(out_dir: Path) -> None:
    """Raise a ConfigError unless ``out_dir``'s nearest existing parent is a writable directory."""
    parent = _nearest_existing(out_dir)
    try:
        st = parent.stat()
    except OSError as exc:
        raise _os_error(exc, out_dir, "inspect the parent directory") from exc
    if not stat.S_ISDIR(st.st_mode):
        raise ConfigError(f"cannot create it: {parent} is {_file_kind(st.st_mode)}, not a directory",
                          path=out_dir, field=_FIELD)
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"cannot create it: directory {parent} is not writable",
                          path=out_dir, field=_FIELD)


# ------------------------------------------------------------------ stale temporaries
def clean_stale_temps(out_dir: str | Path) -> list[Path]:
    """Remove the ``.NAME.tmp-*`` / ``.NAME.old-*`` that killed llmsim runs left beside ``out_dir``.

    Only directories carrying an owner file naming this host and a pid that is no longer
    alive are touched; a stale ``.old-*`` is renamed back to ``out_dir`` when ``out_dir`` is
    missing (the previous output is restored), else deleted. Failures are logged, not raised.

    Returns:
        The temporaries removed or restored.
    """
    out_dir = Path(out_dir)
    try:
        names = sorted(os.listdir(out_dir.parent))
    except OSError:
        return []
    done: list[Path] = []
    for name in names:
        kind = _temp_kind(name, out_dir.name)
        entry = out_dir.parent / name
        if kind is None or not entry.is_dir() or entry.is_symlink() or _owner_state(entry) != "ours-dead":
            continue
        try:
            if kind == "old" and not os.path.lexists(out_dir):
                (entry / OWNER_NAME).unlink(missing_ok=True)
                os.replace(entry, out_dir)
                logger.warning("restored %s from %s (left by a killed run)", out_dir, entry)
            else:
                shutil.rmtree(entry)
                logger.info("removed %s (left by a killed run)", entry)
            done.append(entry)
        except OSError as exc:
            logger.warning("could not clean up %s: %s", entry, exc)
    return done


# ------------------------------------------------------------------ directories
def temp_dir_next_to(out_dir: str | Path) -> Path:
    """A new empty hidden directory beside ``out_dir`` (same filesystem), mode 0777 - umask.

    Assemble a multi-file output in it, then publish it with :func:`publish_dir` (or remove
    it on failure). Stale temporaries of killed runs are cleaned up first
    (:func:`clean_stale_temps`). The directory holds the owner file until it is published
    (assemble only the output's own files in it; :func:`publish_dir` lists them all).

    Raises:
        ConfigError: ``out_dir`` is something :func:`publish_dir` would refuse (checked
            first, so nothing is created beside a device or a foreign file), or the parent
            cannot be created or written (read-only, a file in the way).
    """
    out_dir = Path(out_dir)
    _describe_target(out_dir)
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        _check_parent(out_dir)  # the clearer message when a file is in the way / read-only
        raise _os_error(exc, out_dir, "create the parent directory") from exc
    clean_stale_temps(out_dir)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    except OSError as exc:
        raise _os_error(exc, out_dir, "create a temporary directory beside it") from exc
    try:
        os.chmod(tmp, 0o777 & ~_umask())
        _write_owner(tmp)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise _os_error(exc, out_dir, "prepare a temporary directory beside it") from exc
    return tmp


def _write_manifest(directory: Path) -> None:
    skip = {directory / MANIFEST_NAME, directory / OWNER_NAME}
    files = sorted(p.relative_to(directory).as_posix() for p in directory.rglob("*")
                   if not p.is_dir() and p not in skip)
    from llmsim import __version__

    manifest = {"schema": MANIFEST_SCHEMA, "written_by": f"llmsim {__version__}", "files": files}
    (directory / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n")


def publish_dir(tmp: Path, out_dir: str | Path, *, replace_existing: bool = True) -> Path:
    """Mark the assembled directory ``tmp`` as llmsim's (manifest) and rename it to ``out_dir``.

    What may be replaced is in the module docstring; anything else raises before anything is
    moved. A previous output is moved aside first and deleted only after the new one is in
    place (on failure it is put back), so ``out_dir`` always holds one complete output.
    With ``replace_existing=False`` an existing ``out_dir`` raises instead.

    Raises:
        FileExistsError: ``out_dir`` exists and ``replace_existing`` is False.
        ConfigError: ``out_dir`` is not something llmsim may replace, or a rename failed
            (``tmp`` is left for the caller to remove).
    """
    out_dir = Path(out_dir)
    if not replace_existing and os.path.lexists(out_dir):
        raise FileExistsError(f"{out_dir} already exists")
    try:
        _write_manifest(tmp)
    except OSError as exc:
        raise _os_error(exc, out_dir, "write the output manifest") from exc
    state, carry = _describe_target(out_dir)
    try:
        if state in ("missing", "empty"):
            os.replace(tmp, out_dir)  # fails (ENOTEMPTY/ENOTDIR) if something appeared since
        else:
            _swap(tmp, out_dir, carry)
    except OSError as exc:
        raise _os_error(exc, out_dir, "publish the output") from exc
    # the owner file stayed until now so that a kill during the swap leaves a removable tmp
    (out_dir / OWNER_NAME).unlink(missing_ok=True)
    return out_dir


def _swap(tmp: Path, out_dir: Path, carry: list[str]) -> None:
    """Replace llmsim's own ``out_dir`` by ``tmp``, moving the nested outputs ``carry`` across."""
    for name in carry:
        if os.path.lexists(tmp / name):
            raise ConfigError(f"holds the llmsim output '{name}', which the new output would "
                              f"overwrite; {_HINT}", path=out_dir, field=_FIELD)
    old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
    os.rmdir(old)
    _write_owner(out_dir)  # a kill from here on leaves an identifiable temporary
    try:
        os.replace(out_dir, old)
    except OSError:
        (out_dir / OWNER_NAME).unlink(missing_ok=True)
        raise
    moved: list[str] = []
    try:
        for name in carry:
            os.replace(old / name, tmp / name)
            moved.append(name)
        os.replace(tmp, out_dir)
    except BaseException:
        for name in moved:
            os.replace(tmp / name, old / name)
        (old / OWNER_NAME).unlink(missing_ok=True)
        os.replace(old, out_dir)
        raise
    shutil.rmtree(old, ignore_errors=True)


__all__ = [
    "MANIFEST_NAME",
    "OWNER_NAME",
    "atomic_write_bytes",
    "atomic_write_text",
    "check_output_target",
    "clean_stale_temps",
    "publish_dir",
    "temp_dir_next_to",
]
