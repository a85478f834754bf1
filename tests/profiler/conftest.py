"""Profiler tests import helpers from this directory and need the ``profiler`` extra.

Without PyTorch (a core install: ``pip install -e .``) every test here is skipped with the
reason, except under ``LLMSIM_REQUIRE_EXTRAS=1`` (set by ``.ci/run``), where a missing extra
fails the run so CI can never pass by skipping.
"""

import importlib.util
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

HAVE_TORCH = importlib.util.find_spec("torch") is not None
REQUIRE_EXTRAS = os.environ.get("LLMSIM_REQUIRE_EXTRAS", "") not in ("", "0", "false", "no")
SKIP_REASON = "needs the profiler extra (PyTorch): pip install -e '.[profiler]'"

if not HAVE_TORCH and not REQUIRE_EXTRAS:
    # The modules import torch at the top, so they cannot even be collected without it.
    collect_ignore_glob = ["test_profiler_*.py"]


@pytest.fixture
def torch_required() -> None:
    """Fail (CI) or skip (elsewhere) when PyTorch is missing."""
    if not HAVE_TORCH:
        if REQUIRE_EXTRAS:
            pytest.fail("LLMSIM_REQUIRE_EXTRAS=1 but PyTorch is not installed")
        pytest.skip(SKIP_REASON)
