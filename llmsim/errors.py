"""The llmsim exception tree.

Every error llmsim raises on purpose derives from :class:`LlmsimError`::

    LlmsimError
    ├── ConfigError            bad experiment file, model config or CLI value
    │   └── MissingDataError   ... that names a dataset file not available locally
    ├── DataNotFoundError      a dataset is not in LLMSIM_DATA_DIR / the user cache
    ├── DownloadError          a download failed, was truncated or did not match its checksum
    ├── TraceFormatError       a malformed trace row (file, line, field)
    ├── ProfileError           a malformed or incomplete operator profile (file, line, field)
    │   └── ProfileRangeError  a lookup the profile cannot answer (missing TP degree / op)
    ├── MeasuredRunError       a malformed measured deployment (file, line, field)
    ├── CostModelUnavailable   an external cost model (gRPC bridge) failed or timed out
    └── InvariantError         the simulator's internal state broke an invariant

Errors that point into a file carry ``path``, ``line`` (1-based, ``None`` when the whole
file is at fault) and ``field`` attributes and put all three in the message.
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "LlmsimError",
    "ConfigError",
    "MissingDataError",
    "DataNotFoundError",
    "DownloadError",
    "TraceFormatError",
    "ProfileError",
    "ProfileRangeError",
    "MeasuredRunError",
    "CostModelUnavailable",
    "InvariantError",
]


class LlmsimError(Exception):
    """Base class of every error llmsim raises deliberately."""


class _LocatedError(LlmsimError):
    """An error located in a file: ``path:line: field: message``."""

    def __init__(
        self,
        message: str,
        *,
        path: str | Path | None = None,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        self.path = str(path) if path is not None else None
        self.line = line
        self.field = field
        self.reason = message
        where = ""
        if self.path is not None:
            where = self.path if line is None else f"{self.path}:{line}"
            where += ": "
        what = f"field '{field}': " if field else ""
        super().__init__(f"{where}{what}{message}")


class ConfigError(_LocatedError):
    """An experiment file, model config or command-line value is invalid."""


class MissingDataError(ConfigError):
    """A configuration names a dataset file that is not available locally.

    Located at the key that names it (file, line, field); the message says which catalog
    dataset holds the path and how to get it (from :class:`DataNotFoundError`).
    """


class DataNotFoundError(LlmsimError):
    """A dataset llmsim needs is not available locally.

    Attributes:
        dataset: catalog name of the missing dataset (e.g. ``"llmservingsim"``).
        relpath: the path looked for, relative to the data root.
        searched: the directories that were searched.
        hint: how to get it, when the default ``llmsim data pull DATASET`` is wrong.
    """

    def __init__(self, dataset: str, relpath: str, searched: list[Path], *,
                 hint: str | None = None) -> None:
        self.dataset = dataset
        self.relpath = relpath
        self.searched = searched
        where = ", ".join(str(p) for p in searched) or "(nowhere)"
        how = hint or f"Get it with `llmsim data pull {dataset}`"
        super().__init__(
            f"'{relpath}' not found (looked in {where}). {how}, or point LLMSIM_DATA_DIR "
            f"at a directory that holds it."
        )


class DownloadError(LlmsimError):
    """A download failed, was truncated beyond retry, or did not match its checksum.

    Attributes:
        url: the source URL.
        path: the destination file (never left in place on failure).
    """

    def __init__(self, message: str, *, url: str, path: Path) -> None:
        self.url = url
        self.path = path
        super().__init__(f"{url} -> {path}: {message}")


class TraceFormatError(_LocatedError):
    """A request trace row is malformed (names the file, line and field)."""


class ProfileError(_LocatedError):
    """An operator profile (or its source bundle) is malformed or incomplete."""


class ProfileRangeError(ProfileError):
    """The profile cannot answer a lookup (absent TP degree or operator)."""


class MeasuredRunError(_LocatedError):
    """A measured deployment (vLLM run directory or bench JSON) is malformed."""


class CostModelUnavailable(LlmsimError):
    """An external cost model could not be reached or did not answer in time."""


class InvariantError(LlmsimError):
    """The simulator's state broke an invariant (a bug, never bad input).

    Attributes:
        step: engine step index at which the violation was detected, if known.
        request_id: the request involved, if any.
    """

    def __init__(self, message: str, *, step: int | None = None, request_id: str | None = None):
        self.step = step
        self.request_id = request_id
        ctx = []
        if step is not None:
            ctx.append(f"step {step}")
        if request_id is not None:
            ctx.append(f"request {request_id}")
        prefix = f"[{', '.join(ctx)}] " if ctx else ""
        super().__init__(prefix + message)
