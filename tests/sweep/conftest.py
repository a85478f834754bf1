"""Sweep tests: the Ray backend needs the ``ray`` package (the ``sweep`` extra, in ``dev``).

Without it the Ray tests are skipped with the reason, except under
``LLMSIM_REQUIRE_EXTRAS=1`` (set by ``.ci/run``), where a missing ``ray`` fails them, so CI
can never pass by skipping (as the profiler tests treat PyTorch).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from sweep_helpers import GRID, write_sweep  # noqa: E402

HAVE_RAY = importlib.util.find_spec("ray") is not None
REQUIRE_EXTRAS = os.environ.get("LLMSIM_REQUIRE_EXTRAS", "") not in ("", "0", "false", "no")


@pytest.fixture
def ray_required() -> None:
    """Fail (CI) or skip (elsewhere) when ray is missing."""
    if not HAVE_RAY:
        if REQUIRE_EXTRAS:
            pytest.fail("LLMSIM_REQUIRE_EXTRAS=1 but ray is not installed (pip install -e '.[dev]')")
        pytest.skip("needs the sweep extra (ray): pip install -e '.[sweep]'")


@pytest.fixture(scope="session")
def reference(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    """The 4-point grid (GRID) run serially from scratch: the rows every backend must give."""
    from llmsim.sweep import load_sweep, run_sweep

    tmp = tmp_path_factory.mktemp("ref")
    res = run_sweep(load_sweep(write_sweep(tmp, GRID)), out_dir=tmp / "out", backend="serial")
    return res.table
