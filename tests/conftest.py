"""Shared test helpers.

Real-data tests use the ``data_path`` fixture. When a dataset is missing they are skipped,
unless ``LLMSIM_REQUIRE_DATA=1`` (set by ``.ci/run``), which turns the skip into a failure
so CI can never pass by skipping.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from llmsim.data import dataset_path
from llmsim.errors import DataNotFoundError

REQUIRE_DATA = os.environ.get("LLMSIM_REQUIRE_DATA", "") not in ("", "0", "false", "no")


def require_data(relpath: str) -> Path:
    """Resolve a dataset path, skipping (or failing under LLMSIM_REQUIRE_DATA=1) if absent."""
    try:
        return dataset_path(relpath)
    except DataNotFoundError as exc:
        if REQUIRE_DATA:
            pytest.fail(f"real data required but missing: {exc}")
        pytest.skip(str(exc))


@pytest.fixture
def data_path() -> Callable[[str], Path]:
    """``data_path("llmservingsim/workloads/...")`` -> absolute path (skip/fail if missing)."""
    return require_data
