"""Download catalog datasets into the user cache, with resume and checksum verification.

Protocol per file (``pull_file``):

1. If the destination exists with the catalog size and SHA-256, nothing is downloaded.
2. Bytes go to ``<dest>.partial``. An existing partial file is resumed with an HTTP
   ``Range: bytes=N-`` request; a server that ignores ranges (200 instead of 206) restarts it,
   and a 206 whose ``Content-Range`` does not start at ``N`` is refused (the partial file is
   deleted) rather than spliced.
3. A response that ends early (fewer bytes than announced) is resumed, up to ``retries``
   times.
4. Only a complete file whose size and SHA-256 match the catalog is renamed into place
   (``os.replace``). A mismatch deletes the partial file and raises
   :class:`DownloadError`: a corrupt or truncated download is never used.

Files without a published checksum are accepted after the size check (when a size is
known) with a warning.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from llmsim.data.catalog import DataFile, Dataset
from llmsim.data.paths import user_cache_dir
from llmsim.errors import DownloadError

logger = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 20
DEFAULT_TIMEOUT_S = 60.0


class FileState(StrEnum):
    """Result of checking a local file against the catalog."""

    OK = "ok"
    MISSING = "missing"
    SIZE_MISMATCH = "size-mismatch"
    CHECKSUM_MISMATCH = "checksum-mismatch"
    UNCHECKED = "unchecked"  # present, but the catalog has no checksum


@dataclass(frozen=True, slots=True, kw_only=True)
class FileCheck:
    """A local file's state, with its actual size and digest (when present)."""

    file: DataFile
    path: Path
    state: FileState
    size_bytes: int | None = None
    sha256: str | None = None


def sha256_of(path: Path) -> str:
    """SHA-256 hex digest of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(CHUNK_BYTES), b""):
            h.update(chunk)
    return h.hexdigest()


def check_file(file: DataFile, root: Path) -> FileCheck:
    """Compare ``root / file.path`` with the catalog's size and checksum."""
    path = root / file.path
    if not path.is_file():
        return FileCheck(file=file, path=path, state=FileState.MISSING)
    size = path.stat().st_size
    if file.size_bytes is not None and size != file.size_bytes:
        return FileCheck(file=file, path=path, state=FileState.SIZE_MISMATCH, size_bytes=size)
    if file.sha256 is None:
        return FileCheck(file=file, path=path, state=FileState.UNCHECKED, size_bytes=size)
    digest = sha256_of(path)
    state = FileState.OK if digest == file.sha256 else FileState.CHECKSUM_MISMATCH
    return FileCheck(file=file, path=path, state=state, size_bytes=size, sha256=digest)


def verify_dataset(dataset: Dataset, root: Path) -> list[FileCheck]:
    """Check every file of ``dataset`` under ``root``."""
    return [check_file(f, root) for f in dataset.files]


Opener = Callable[[urllib.request.Request, float], object]


def _default_open(request: urllib.request.Request, timeout_s: float) -> object:
    return urllib.request.urlopen(request, timeout=timeout_s)  # noqa: S310 (catalog URLs)


def pull_file(
    file: DataFile,
    root: Path,
    *,
    retries: int = 3,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    opener: Opener = _default_open,
) -> Path:
    """Download one file under ``root`` (resume + verification, see the module docstring).

    Args:
        file: the catalog entry.
        root: data root to download into.
        retries: resumptions allowed after an early end of the response.
        timeout_s: socket timeout per request, s.
        opener: ``(request, timeout_s) -> response`` (tests may inject one).

    Returns:
        The verified destination path.

    Raises:
        DownloadError: HTTP failure, truncation beyond ``retries``, or a size / checksum
            mismatch (the partial file is deleted).
    """
    dest = root / file.path
    if check_file(file, root).state is FileState.OK:
        logger.info("%s: already present and verified", file.path)
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".partial")
    for attempt in range(retries + 1):
        complete = _fetch(file, partial, timeout_s=timeout_s, opener=opener)
        if complete:
            break
        logger.warning("%s: download ended early (attempt %d), resuming", file.path, attempt + 1)
    else:
        partial.unlink(missing_ok=True)
        raise DownloadError(f"truncated after {retries + 1} attempts", url=file.url, path=dest)
    _verify_partial(file, partial, dest)
    os.replace(partial, dest)
    logger.info("%s: downloaded and verified", file.path)
    return dest


def _fetch(file: DataFile, partial: Path, *, timeout_s: float, opener: Opener) -> bool:
    """Append the missing bytes to ``partial``; True when the response was complete."""
    have = partial.stat().st_size if partial.exists() else 0
    if file.size_bytes is not None and have > file.size_bytes:
        partial.unlink()
        have = 0
    if file.size_bytes is not None and have == file.size_bytes:
        return True
    request = urllib.request.Request(file.url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = opener(request, timeout_s)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # range past the end: the partial file is complete
            return True
        raise DownloadError(f"HTTP {exc.code} {exc.reason}", url=file.url, path=partial) from None
    except (urllib.error.URLError, OSError) as exc:
        raise DownloadError(f"cannot connect: {exc}", url=file.url, path=partial) from None
    with response:  # type: ignore[attr-defined]
        status = getattr(response, "status", 200)
        if have and status == 206:
            _check_resume_range(response.headers.get("Content-Range"), have, file, partial)  # type: ignore[attr-defined]
        mode = "ab" if (have and status == 206) else "wb"
        length = response.headers.get("Content-Length")  # type: ignore[attr-defined]
        expected = int(length) if length is not None else None
        got = 0
        with partial.open(mode) as out:
            try:
                for chunk in iter(lambda: response.read(CHUNK_BYTES), b""):  # type: ignore[attr-defined]
                    out.write(chunk)
                    got += len(chunk)
            except (OSError, http.client.HTTPException) as exc:  # connection dropped mid-body
                logger.warning("%s: read error after %d bytes: %s", file.path, got, exc)
                return False
    return expected is None or got >= expected


def _check_resume_range(content_range: str | None, have: int, file: DataFile, partial: Path) -> None:
    """A 206 answer to ``Range: bytes=have-`` must start at ``have`` (RFC 9110 section 14.4).

    Appending a body that starts elsewhere would splice the file; for a dataset without a
    published checksum nothing downstream could catch that, so the partial file is dropped.

    Raises:
        DownloadError: missing or different ``Content-Range`` start (partial file deleted).
    """
    start = None
    if content_range and content_range.startswith("bytes "):
        head = content_range[6:].split("-", 1)[0].strip()
        start = int(head) if head.isdigit() else None
    if start != have:
        partial.unlink(missing_ok=True)
        raise DownloadError(f"resume asked for bytes {have}- but the server sent Content-Range "
                            f"{content_range!r}; partial file deleted, pull again", url=file.url, path=partial)


def _verify_partial(file: DataFile, partial: Path, dest: Path) -> None:
    size = partial.stat().st_size
    if file.size_bytes is not None and size != file.size_bytes:
        partial.unlink(missing_ok=True)
        raise DownloadError(f"size {size} != catalog size {file.size_bytes}", url=file.url, path=dest)
    if file.sha256 is None:
        logger.warning("%s: no published checksum; accepted unverified", file.path)
        return
    digest = sha256_of(partial)
    if digest != file.sha256:
        partial.unlink(missing_ok=True)
        raise DownloadError(f"sha256 {digest} != catalog {file.sha256} (corrupt download deleted)",
                            url=file.url, path=dest)


def pull_dataset(
    dataset: Dataset,
    root: Path | None = None,
    *,
    retries: int = 3,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    opener: Opener = _default_open,
) -> list[Path]:
    """Download every file of a dataset (default root: the user cache).

    Raises:
        DownloadError: the first file that fails (files already verified stay in place).
    """
    root = user_cache_dir() if root is None else root
    return [pull_file(f, root, retries=retries, timeout_s=timeout_s, opener=opener) for f in dataset.files]
