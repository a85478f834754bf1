"""Operator profiles: ``llmsim.v1.Profile`` files, importers and inspection.

* :func:`load_profile` — a ``.pb`` file or an LLMServingSim bundle directory.
* :func:`read_profile` / :func:`write_profile` — binary ``.pb`` (atomic writes, schema check).
* ``llmsim.profile.importers.llmservingsim`` — LLMServingSim bundles (and export back).
* ``llmsim.profile.importers.vidur`` — Vidur's measured NCCL collectives.
* ``llmsim.profile.show`` — a readable summary (``llmsim profile show``).
"""

from llmsim.profile.io import (
    SCHEMA_VERSION,
    load_profile,
    read_profile,
    validate_profile,
    write_profile,
)

__all__ = ["SCHEMA_VERSION", "load_profile", "read_profile", "validate_profile", "write_profile"]
