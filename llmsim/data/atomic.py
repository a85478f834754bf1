"""Atomic output: files and directories that appear only once complete.

Every llmsim writer (profiles, reports, trace conversions, stats, downloads) follows one
rule: write to a temporary name in the destination's own directory (same filesystem), then
``os.replace`` it into place. A run that fails or is killed half-way leaves at most a hidden
``.NAME.*`` temporary, never a file or directory under the final name that looks complete.

``tempfile.mkstemp`` / ``mkdtemp`` create their entries with mode 0600 / 0700; the helpers
here give them the mode an ordinary ``open``/``mkdir`` would (0666 / 0777 minus the umask),
so an atomic write is indistinguishable from a plain one.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | Path, data: bytes, *, fsync: bool = True) -> Path:
    """Write ``data`` to ``path`` through a temp file in the same directory + ``os.replace``.

    Args:
        path: destination; its parent directories are created.
        data: the file's full content.
        fsync: flush the temp file to disk before the rename (durable across a crash).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        OSError: the directory or file cannot be written (the temp file is removed).
    """
    path = Path(path)
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


def temp_dir_next_to(out_dir: str | Path) -> Path:
    """A new empty hidden directory beside ``out_dir`` (same filesystem), mode 0777 - umask.

    Assemble a multi-file output in it, then publish it with :func:`publish_dir`.
    """
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    os.chmod(tmp, 0o777 & ~_umask())
    return tmp


def publish_dir(tmp: Path, out_dir: str | Path, *, replace_existing: bool = True) -> Path:
    """Rename the assembled directory ``tmp`` to ``out_dir``.

    An existing ``out_dir`` is moved aside first and deleted only after the new one is in
    place (on failure the old one is put back), so ``out_dir`` always holds one complete
    output. With ``replace_existing=False`` an existing ``out_dir`` raises instead.

    Raises:
        FileExistsError: ``out_dir`` exists and ``replace_existing`` is False.
        OSError: a rename failed (``tmp`` is left for the caller to remove).
    """
    out_dir = Path(out_dir)
    if not out_dir.exists():
        os.replace(tmp, out_dir)
        return out_dir
    if not replace_existing:
        raise FileExistsError(f"{out_dir} already exists")
    old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
    os.rmdir(old)
    os.replace(out_dir, old)
    try:
        os.replace(tmp, out_dir)
    except OSError:
        os.replace(old, out_dir)
        raise
    shutil.rmtree(old, ignore_errors=True)
    return out_dir


__all__ = ["atomic_write_bytes", "atomic_write_text", "publish_dir", "temp_dir_next_to"]
