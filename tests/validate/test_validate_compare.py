"""Metric definitions on hand-made runs with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
from validate_factories import FakeReplay, make_measured, make_requests, make_timeseries

from llmsim.errors import MeasuredRunError
from llmsim.validate import compare
from llmsim.validate.measured import ReferenceMetric


def _fake(requests, timeseries=None, itls=None):
    if itls is None:
        itls = [np.full(max(k - 1, 0), 0.01) for k in requests["output_tokens"]]
    return FakeReplay(requests=requests, itls_s=itls, timeseries=timeseries, num_steps=7, wall_time_s=0.25)


def test_latency_stats_and_signed_errors_known_answers():
    # measured TTFT 100..400 ms; simulation 10% slower on every request
    meas = make_requests([0.1, 0.2, 0.3, 0.4], [1.1, 2.2, 0.3, 2.4], [11, 21, 1, 5])
    sim = make_requests([0.11, 0.22, 0.33, 0.44], [1.1, 2.2, 0.33, 2.4], [11, 21, 1, 5])
    comp = compare(make_measured(meas), _fake(sim))
    rows = {r.key: r for r in comp.latency}
    assert [r.key for r in comp.latency] == [
        f"{m}_{s}" for m in ("ttft", "tpot", "e2e") for s in ("mean", "p50", "p90", "p95", "p99")
    ]
    assert rows["ttft_mean"].measured_ms == pytest.approx(250.0)
    assert rows["ttft_mean"].simulated_ms == pytest.approx(275.0)
    assert rows["ttft_p90"].measured_ms == pytest.approx(370.0)  # linear interpolation
    for stat in ("mean", "p50", "p90", "p95", "p99"):
        assert rows[f"ttft_{stat}"].error_pct == pytest.approx(10.0)
    # TPOT excludes the 1-token request: measured [0.1, 0.1, 0.5] s; sim decodes shorter
    assert rows["tpot_mean"].measured_ms == pytest.approx(700 / 3)
    assert rows["tpot_mean"].simulated_ms == pytest.approx((99 + 99 + 490) / 3)
    # E2E: only the 1-token request changed (0.3 -> 0.33 s)
    assert rows["e2e_mean"].error_pct == pytest.approx(0.03 / 6.0 * 100)
    expected_mae = np.mean([abs(r.error_pct) for r in comp.latency])
    assert comp.mean_abs_error_pct == pytest.approx(expected_mae)
    assert comp.reference_mean_abs_error_pct is None and comp.all_no_worse_than_reference is None
    assert comp.itl == ()


def test_paired_errors_median_and_p90():
    meas = make_requests([1.0, 1.0, 1.0, 1.0, 1.0], [2.0] * 5, [2] * 5)
    sim = make_requests([1.0, 1.1, 0.8, 1.3, 1.0], [2.0, 2.0, 2.0, 2.0, 2.5], [2] * 5)
    comp = compare(make_measured(meas), _fake(sim))
    ttft = next(p for p in comp.paired if p.metric == "ttft")
    # |errors| ms = 0, 100, 200, 300, 0 -> median 100, p90 = 200 + 0.6*100
    assert ttft.num_pairs == 5
    assert ttft.median_abs_error_ms == pytest.approx(100.0)
    assert ttft.p90_abs_error_ms == pytest.approx(260.0)
    assert ttft.median_abs_error_pct == pytest.approx(10.0)
    assert ttft.mean_signed_error_ms == pytest.approx(40.0)
    e2e = next(p for p in comp.paired if p.metric == "e2e")
    assert e2e.median_abs_error_ms == 0.0 and e2e.p90_abs_error_ms == pytest.approx(300.0)


def test_pairs_by_id_when_ids_match_else_by_position():
    meas = make_requests([0.1, 0.2, 0.3], [1.0, 1.0, 1.0], [2, 2, 2], ids=["a", "b", "c"])
    sim = make_requests([0.3, 0.1, 0.2], [1.0, 1.0, 1.0], [2, 2, 2], ids=["c", "a", "b"])
    comp = compare(make_measured(meas), _fake(sim))
    assert comp.paired[0].median_abs_error_ms == 0.0
    assert "requests paired by request_id" in comp.notes
    sim_other_ids = make_requests([0.1, 0.2, 0.3], [1.0, 1.0, 1.0], [2, 2, 2], ids=["0", "1", "2"])
    comp = compare(make_measured(meas), _fake(sim_other_ids))
    assert comp.paired[0].median_abs_error_ms == 0.0
    assert "requests paired by position (workload order)" in comp.notes


def test_token_count_mismatch_is_refused():
    meas = make_requests([0.1, 0.2], [1.0, 1.0], [2, 2])
    sim = make_requests([0.1, 0.2], [1.0, 1.0], [2, 3])
    with pytest.raises(MeasuredRunError, match="request '1' .* output_tokens=2 measured but 3") as exc:
        compare(make_measured(meas), _fake(sim))
    assert exc.value.field == "output_tokens"


def test_mismatched_request_count_is_a_clear_error():
    meas = make_requests([0.1, 0.2, 0.3], [1.0] * 3, [2] * 3)
    sim = make_requests([0.1, 0.2], [1.0] * 2, [2] * 2)
    with pytest.raises(MeasuredRunError,
                       match="measured run has 3 requests but the experiment's workload has 2") as exc:
        compare(make_measured(meas), _fake(sim))
    assert exc.value.field == "requests"


def test_failed_measured_requests_excluded_from_both_sides():
    meas = make_requests([0.1, 9.9, 0.3], [1.0, 9.9, 1.0], [2, 2, 2], success=[True, False, True])
    sim = make_requests([0.1, 0.2, 0.3], [1.0, 1.0, 1.0], [2, 2, 2])
    comp = compare(make_measured(meas), _fake(sim))
    assert comp.paired[0].num_pairs == 2
    assert next(r for r in comp.latency if r.key == "ttft_mean").error_pct == pytest.approx(0.0)


def test_itl_rows_when_measured():
    meas = make_requests([0.1, 0.1], [0.4, 0.3], [4, 3])
    sim = make_requests([0.1, 0.1], [0.4, 0.3], [4, 3])
    m_itls = [np.array([0.1, 0.1, 0.1]), np.array([0.1, 0.1])]
    s_itls = [np.array([0.1, 0.1, 0.11]), np.array([0.1, 0.1])]
    comp = compare(make_measured(meas, itls=m_itls), _fake(sim, itls=s_itls))
    rows = {r.key: r for r in comp.itl}
    assert rows["itl_mean"].measured_ms == pytest.approx(100.0)
    assert rows["itl_mean"].simulated_ms == pytest.approx(102.0)
    assert rows["itl_p99"].simulated_ms == pytest.approx(100 + 0.96 * 10)
    assert len(comp.latency) == 15  # ITL is not part of the 15-metric mean


def test_reference_side_by_side_and_no_worse_flag():
    meas = make_requests([0.1, 0.2, 0.3, 0.4], [1.0] * 4, [2] * 4)
    sim = make_requests([0.102, 0.204, 0.306, 0.408], [1.0] * 4, [2] * 4)  # +2% on TTFT
    keys = [f"{m}_{s}" for m in ("ttft", "tpot", "e2e") for s in ("mean", "p50", "p90", "p95", "p99")]
    ref = {k: ReferenceMetric(key=k, measured_ms=1.0, simulated_ms=1.0, error_pct=-3.0) for k in keys}
    ref["ttft_p99"] = ReferenceMetric(key="ttft_p99", measured_ms=1.0, simulated_ms=1.0, error_pct=1.0)
    comp = compare(make_measured(meas, reference=ref), _fake(sim))
    rows = {r.key: r for r in comp.latency}
    assert rows["ttft_mean"].no_worse_than_reference is True
    assert rows["ttft_p99"].no_worse_than_reference is False  # 2% vs its 1%
    assert comp.all_no_worse_than_reference is False
    assert comp.reference_mean_abs_error_pct == pytest.approx((14 * 3.0 + 1.0) / 15)


def test_timeseries_nmae_correlation_and_idle_tail():
    meas_ts = make_timeseries(running=[2, 4, 2, 0], kv_cache_pct=[10, 20, 10, 0])
    sim_ts = make_timeseries(running=[2, 3, 3, 1, 1], kv_cache_pct=[10, 20, 10, 0, 0])
    meas = make_requests([0.1], [1.0], [2])
    comp = compare(make_measured(meas, timeseries=meas_ts), _fake(meas.copy(), timeseries=sim_ts))
    s = {x.name: x for x in comp.series}
    # grid = 5 ticks (measured idle in tick 5); |diff| = 0,1,1,1,1 over sum|meas| = 8
    assert s["running"].num_ticks == 5
    assert s["running"].nmae_pct == pytest.approx(50.0)
    assert s["running"].measured_mean == pytest.approx(8 / 5)
    assert s["running"].simulated_mean == pytest.approx(10 / 5)
    assert s["running"].error_pct == pytest.approx(25.0)
    assert s["running"].pearson_r == pytest.approx(np.corrcoef([2, 4, 2, 0, 0], [2, 3, 3, 1, 1])[0, 1])
    assert s["kv_cache_pct"].nmae_pct == pytest.approx(0.0)
    assert math.isnan(s["waiting"].nmae_pct)  # nothing measured waiting: relative error undefined
    assert list(comp.grid["running_measured"]) == [2, 4, 2, 0, 0]


def test_kv_not_recorded_is_not_compared():
    meas_ts = make_timeseries(running=[2, 1], kv_cache_pct=[0, 0])
    sim_ts = make_timeseries(running=[2, 1], kv_cache_pct=[5, 3])
    meas = make_requests([0.1], [1.0], [2])
    comp = compare(make_measured(meas, timeseries=meas_ts), _fake(meas.copy(), timeseries=sim_ts))
    kv = next(x for x in comp.series if x.name == "kv_cache_pct")
    assert kv.measured is False and math.isnan(kv.nmae_pct) and kv.simulated_mean == pytest.approx(4.0)


def test_run_totals_and_timeline_shift():
    meas = make_requests([0.1, 0.2], [1.0, 2.0], [2, 4], arrival_s=[0.0, 1.0], input_tokens=[10, 20])
    sim = make_requests([0.1, 0.2], [1.0, 2.5], [2, 4], arrival_s=[0.05, 1.05], input_tokens=[10, 20])
    sim.loc[1, "num_preemptions"] = 3
    comp = compare(make_measured(meas), _fake(sim))
    t = {x.key: x for x in comp.totals}
    assert comp.timeline_shift_s == pytest.approx(0.05)
    assert t["makespan_s"].measured == pytest.approx(3.0)
    assert t["makespan_s"].simulated == pytest.approx(3.5)
    assert t["total_token_throughput_tok_per_s"].measured == pytest.approx(36 / 3.0)
    assert t["output_throughput_tok_per_s"].error_pct == pytest.approx((6 / 3.5 - 6 / 3.0) / (6 / 3.0) * 100)
    assert t["num_preemptions"].simulated == 3 and t["num_preemptions"].measured is None
    assert comp.pairs["arrival_measured_s"].tolist() == pytest.approx([0.05, 1.05])
    assert comp.sim_num_steps == 7 and comp.sim_wall_time_s == 0.25


def test_bench_json_end_to_end_against_itself(tmp_path):
    from validate_factories import FIXTURES

    from llmsim.validate import load_measured

    run = load_measured(FIXTURES / "bench_result.json")
    sim = run.requests.copy()
    comp = compare(run, _fake(sim, itls=run.itls_s))
    assert comp.mean_abs_error_pct == 0.0
    assert all(r.error_pct == 0.0 for r in comp.itl) and len(comp.itl) == 5
    t = {x.key: x for x in comp.totals}
    assert t["makespan_s"].measured == 1.0  # bench 'duration' stands in for the timeline
    assert t["makespan_s"].simulated is None


def test_engine_pickup_origin_from_step_log():
    """vLLM-dir latencies start at queued_ts: the simulated side starts at the next schedule()."""
    import pandas as pd

    meas = make_requests([0.1, 0.2], [1.0, 2.0], [2, 3], arrival_s=[0.5, 1.0])
    sim = make_requests([0.2, 0.2], [1.1, 2.0], [2, 3], arrival_s=[0.5, 1.0])
    sim["instance_id"] = 0
    steps = pd.DataFrame({"instance_id": [0, 0, 0, 0], "scheduled_s": [0.0, 0.4, 0.6, 1.0]})
    fake = FakeReplay(requests=sim, itls_s=[np.zeros(1), np.zeros(2)], steps=steps)
    comp = compare(make_measured(meas), fake)
    # request 0 arrives at 0.5, picked up at 0.6: TTFT 0.2 - 0.1 = 0.1 s; request 1 at once
    assert comp.pairs["ttft_simulated_s"].tolist() == pytest.approx([0.1, 0.2])
    assert comp.pairs["e2e_simulated_s"].tolist() == pytest.approx([1.0, 2.0])
    assert comp.pairs["pickup_wait_simulated_s"].tolist() == pytest.approx([0.1, 0.0])
    assert comp.mean_abs_error_pct == pytest.approx(0.0)
    # a client-side measured run (bench JSON) keeps the arrival as origin
    from dataclasses import replace

    from llmsim.validate.measured import LatencyOrigin

    client = replace(make_measured(meas), latency_origin=LatencyOrigin.CLIENT)
    comp = compare(client, fake)
    assert comp.pairs["ttft_simulated_s"].tolist() == pytest.approx([0.2, 0.2])
