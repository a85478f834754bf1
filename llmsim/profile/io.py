"""Read and write ``llmsim.v1.Profile`` files (binary protobuf, ``.pb``).

Writes are atomic (temp file in the same directory, then ``os.replace``); reads check the
schema version. :func:`load_profile` also accepts an LLMServingSim bundle directory and
imports it on the fly.
"""

from __future__ import annotations

import logging
from pathlib import Path

from google.protobuf.message import DecodeError

from llmsim.data.atomic import atomic_write_bytes
from llmsim.errors import ProfileError
from llmsim.v1 import profile_pb2 as pb

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
"""The ``Profile.schema_version`` this code reads and writes."""

# (resolved path, mtime_ns, size) -> serialized profile; bundles are slow to parse and the
# serving loop may load the same one many times in a test run.
_CACHE: dict[tuple[str, int, int], bytes] = {}
_CACHE_MAX = 8


def read_profile(path: str | Path) -> pb.Profile:
    """Read a binary ``.pb`` profile.

    Raises:
        ProfileError: unreadable file, not a Profile, or an unknown schema version.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ProfileError(f"cannot read profile: {exc}", path=path) from exc
    profile = pb.Profile()
    try:
        profile.ParseFromString(data)
    except DecodeError as exc:
        raise ProfileError(f"not a llmsim.v1.Profile: {exc}", path=path) from exc
    if profile.schema_version != SCHEMA_VERSION:
        raise ProfileError(
            f"schema version {profile.schema_version} is not supported "
            f"(this llmsim reads version {SCHEMA_VERSION})",
            path=path, field="schema_version",
        )
    return profile


def write_profile(profile: pb.Profile, path: str | Path) -> Path:
    """Write ``profile`` to ``path`` atomically (deterministic serialization).

    ``schema_version`` is set to :data:`SCHEMA_VERSION` when unset.

    Raises:
        ProfileError: the profile declares a different schema version, or the write failed.
    """
    path = Path(path)
    if profile.schema_version == 0:
        profile.schema_version = SCHEMA_VERSION
    if profile.schema_version != SCHEMA_VERSION:
        raise ProfileError(f"cannot write schema version {profile.schema_version}",
                           path=path, field="schema_version")
    data = profile.SerializeToString(deterministic=True)
    try:
        atomic_write_bytes(path, data)
    except OSError as exc:
        raise ProfileError(f"cannot write profile: {exc}", path=path) from exc
    return path


def load_profile(path: str | Path) -> pb.Profile:
    """Load a profile from a ``.pb`` file or an LLMServingSim bundle directory.

    Bundles are imported on the fly (see
    :func:`llmsim.profile.importers.llmservingsim.import_bundle`); the parsed result is cached
    per process by path and modification time, and every call returns a fresh message.

    Raises:
        ProfileError: missing or malformed input (file, line, field).
    """
    path = Path(path)
    if not path.exists():
        raise ProfileError("no such profile file or bundle directory", path=path)
    from llmsim.profile.importers.llmservingsim import import_bundle, is_bundle

    if path.is_dir():
        if not is_bundle(path):
            raise ProfileError("directory is not an LLMServingSim bundle (no meta.yaml)",
                               path=path)
        key_path = path / "meta.yaml"
    else:
        key_path = path
    st = key_path.stat()
    key = (str(path.resolve()), st.st_mtime_ns, st.st_size)
    data = _CACHE.get(key)
    if data is None:
        profile = import_bundle(path) if path.is_dir() else read_profile(path)
        data = profile.SerializeToString()
        if len(_CACHE) >= _CACHE_MAX:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = data
        return profile
    profile = pb.Profile()
    profile.ParseFromString(data)
    return profile
