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
from llmsim.data.paths import EMBEDDED_DIR
from llmsim.errors import DataNotFoundError, MissingDataError

REQUIRE_DATA = os.environ.get("LLMSIM_REQUIRE_DATA", "") not in ("", "0", "false", "no")


def require_data(relpath: str) -> Path:
    """Resolve a dataset path, skipping (or failing under LLMSIM_REQUIRE_DATA=1) if absent.

    The embedded default (``llmsim/data/embedded``) does not count: it holds some paths in
    another form (a ``.pb`` for a bundle directory, a ``.gz`` for a trace), and real-data
    tests read the published files. Tests of the embedded default use it explicitly.
    """
    try:
        path = dataset_path(relpath)
    except DataNotFoundError as exc:
        if REQUIRE_DATA:
            pytest.fail(f"real data required but missing: {exc}")
        pytest.skip(str(exc))
    if path.is_relative_to(EMBEDDED_DIR):
        message = f"real data required: only the embedded default holds {relpath}"
        if REQUIRE_DATA:
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item):
    """A test that stops on missing real data is skipped (failed under LLMSIM_REQUIRE_DATA=1),
    whether the data was asked for directly or through an experiment file."""
    try:
        return (yield)
    except (DataNotFoundError, MissingDataError) as exc:
        if REQUIRE_DATA:
            raise
        pytest.skip(f"real data missing: {exc}")


@pytest.fixture
def data_path() -> Callable[[str], Path]:
    """``data_path("llmservingsim/workloads/...")`` -> absolute path (skip/fail if missing)."""
    return require_data
