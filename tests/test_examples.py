"""Every shipped example experiment loads and replays end to end on the real data."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmsim.errors import DataNotFoundError
from llmsim.experiment import load_experiment
from llmsim.replay import run
from tests.conftest import REQUIRE_DATA

EXAMPLES = sorted((Path(__file__).resolve().parent.parent / "examples").glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_replays(path: Path) -> None:
    try:
        result = run(load_experiment(path))
    except DataNotFoundError as exc:
        if REQUIRE_DATA:
            pytest.fail(f"real data required but missing: {exc}")
        pytest.skip(str(exc))
    req = result.requests
    assert len(req) == 300
    assert (req["ttft_s"] > 0).all()
    assert (req["finish_s"] >= req["first_token_s"]).all()
    assert (req["e2e_s"] >= req["ttft_s"]).all()
    assert result.num_steps > 0
    assert result.timeseries["gen_throughput"].sum() > 0
