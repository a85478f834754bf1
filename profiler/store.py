"""Reading and writing profiles and the sweep journal, atomically.

Profiles go through ``llmsim.profile`` (which owns the format and its schema check); other
outputs (plots, JSON) use :func:`llmsim.data.atomic.atomic_write_bytes` (temp file +
``os.replace``).

The journal (``<out>.journal.jsonl``) is the sweep's incremental save: one JSON object per
line, appended and fsync'ed after every measured point, so a killed sweep loses at most the
point it was measuring. A torn last line (killed mid-write) is ignored on resume.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from llmsim.data.atomic import atomic_write_bytes  # noqa: F401 (old import path, kept)
from llmsim.errors import ProfileError
from llmsim.v1 import profile_pb2 as pb

logger = logging.getLogger(__name__)


def write_profile(profile: pb.Profile, path: str | Path) -> Path:
    """Write ``profile`` atomically (delegates to :func:`llmsim.profile.write_profile`)."""
    from llmsim.profile import write_profile as _write

    return _write(profile, path)


def read_profile(path: str | Path) -> pb.Profile:
    """Read a ``.pb`` profile or import an LLMServingSim bundle directory
    (:func:`llmsim.profile.load_profile`).

    Raises:
        ProfileError: unreadable or not a profile.
    """
    from llmsim.profile import load_profile

    return load_profile(path)


def journal_path(out: Path) -> Path:
    """The journal that belongs to the profile ``out``."""
    return out.with_name(out.name + ".journal.jsonl")


class Journal:
    """Append-only JSON-lines log of a sweep (one fsync per record)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(path, "a", encoding="utf-8")

    def append(self, record: dict[str, Any]) -> None:
        self._f.write(json.dumps(record, sort_keys=True) + "\n")
        self._f.flush()
        os.fsync(self._f.fileno())

    def close(self) -> None:
        self._f.close()


def read_journal(path: Path) -> list[dict[str, Any]]:
    """All complete records of a journal.

    A torn last line (the sweep was killed while writing it) is cut off the file, so that
    appending after a resume starts on a fresh line.

    Raises:
        ProfileError: a complete line is not valid JSON.
    """
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if end < len(data):
        logger.warning("%s: cutting a torn last record (%d bytes)", path, len(data) - end)
        with open(path, "r+b") as f:
            f.truncate(end)
    records = []
    for i, line in enumerate(data[:end].decode("utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise ProfileError(f"corrupt journal record: {exc.msg}", path=path, line=i) from exc
    return records
