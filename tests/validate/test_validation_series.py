"""Time series are compared on the requests' shifted timeline (series origin + arrival shift)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from validate_factories import FakeReplay, make_measured, make_requests, make_timeseries

from llmsim.validate import compare

MEAS = dict(prompt_throughput=[300, 120, 0, 60, 0], gen_throughput=[10, 40, 30, 20, 5],
            running=[2, 3, 3, 1, 0], waiting=[1, 0, 0, 0, 0])


def _runs(sim_arrival, sim_series, origin_s):
    meas_req = make_requests([0.1, 0.2, 0.3], [1.0] * 3, [5, 6, 7], arrival_s=[0.0, 0.4, 0.8])
    measured = dataclasses.replace(make_measured(meas_req, timeseries=make_timeseries(**MEAS)),
                                   timeseries_origin_s=origin_s)
    sim_req = make_requests([0.1, 0.2, 0.3], [1.0] * 3, [5, 6, 7], arrival_s=sim_arrival)
    return measured, FakeReplay(requests=sim_req, itls_s=[np.zeros(4)] * 3,
                                timeseries=make_timeseries(**sim_series))


def _padded(n):
    return {k: [0] * n + v for k, v in MEAS.items()}


@pytest.mark.parametrize("origin,arrival_shift", [(2.0, 0.0), (0.0, 2.0), (1.5, 0.5), (3.0, -1.0)])
def test_a_series_moved_by_whole_ticks_matches_exactly(origin, arrival_shift):
    measured, sim = _runs([0.0 + arrival_shift, 0.4 + arrival_shift, 0.8 + arrival_shift], _padded(2), origin)
    comp = compare(measured, sim)
    assert comp.timeline_shift_s == pytest.approx(arrival_shift)
    for s in comp.series:
        if s.name != "kv_cache_pct":
            assert s.nmae_pct == pytest.approx(0.0, abs=1e-9), s.name
            assert s.pearson_r == pytest.approx(1.0), s.name
    assert any("moved by +2000.0 ms" in n for n in comp.notes)


def test_without_the_shift_the_same_series_disagree():
    measured, sim = _runs([0.0, 0.4, 0.8], _padded(2), 0.0)  # origin unknown and no shift
    comp = compare(measured, sim)
    assert next(s for s in comp.series if s.name == "prompt_throughput").nmae_pct > 50


def test_half_tick_shift_conserves_tokens_and_splits_them():
    measured, sim = _runs([0.5, 0.9, 1.3], _padded(0), 0.0)
    comp = compare(measured, sim)
    grid = comp.grid
    for name in ("prompt_throughput", "gen_throughput"):
        assert grid[f"{name}_measured"].sum() == pytest.approx(sum(MEAS[name]))
    # measured tick 1 (300 tok/s over (0, 1]) now covers (0.5, 1.5]: half in sim tick 1, half in 2
    assert list(grid["prompt_throughput_measured"][:3]) == pytest.approx([150, 210, 60])
    # gauges read between samples: running at t = 1 s lies halfway between the 0.5 s and 1.5 s samples
    assert grid["running_measured"].iloc[0] == pytest.approx(2.0)  # held within half a tick
    assert grid["running_measured"].iloc[1] == pytest.approx(2.5)


@pytest.mark.realdata
def test_series_origin_of_the_given_runs(data_path):
    from llmsim.validate import load_measured

    for hw, origin in (("RTXPRO6000", -0.0653), ("RTX4090", -0.0902)):
        run = load_measured(data_path(f"llmservingsim/measured/{hw}/Llama-3.1-8B"))
        assert run.timeseries_origin_s == pytest.approx(origin, abs=0.0005), hw
