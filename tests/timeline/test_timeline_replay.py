"""Timelines of real replays: read back, checked against the format rules, and counted
against the replay's own step log, request table and summary."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
from timeline_factories import TokenCost, make_experiment

from llmsim.cli.main import main
from llmsim.errors import ConfigError
from llmsim.experiment import load_experiment
from llmsim.replay import run, write_outputs
from llmsim.timeline import check_trace_events, timeline_from_replay, write_trace_events
from llmsim.timeline.from_replay import seconds_to_ns

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _replay(tmp_path: Path, **kw):
    return run(load_experiment(make_experiment(tmp_path, **kw)), cost_model=TokenCost(),
               keep_steps=True)


def _by_track(chk, cat: str) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for e in chk.events:
        if e.get("cat") == cat:
            out.setdefault(chk.thread_names[(e["pid"], e["tid"])], []).append(e)
    return out


def assert_timeline_matches(result, chk) -> None:
    """The checked trace ``chk`` holds exactly the replay ``result``'s events."""
    assert chk.problems == ()
    steps, req = result.steps, result.requests
    n_chunks = int((steps["num_seqs"] - steps["num_decodes"]).sum())
    with_prefill = int(((steps["num_seqs"] - steps["num_decodes"]) > 0).sum())
    finished = req["finish_s"].notna()
    counts = chk.counts_by_cat()
    assert counts["step"] == result.num_steps == len(steps)
    assert counts["schedule"] == result.num_steps
    assert counts["prefill"] == with_prefill
    assert chk.arg_sum("prefill", "num_prefill_chunks") == n_chunks
    assert chk.arg_sum("step", "num_prefill_tokens") == steps["num_prefill_tokens"].sum()
    assert chk.arg_sum("step", "num_decodes") == steps["num_decodes"].sum()
    assert counts.get("preemption", 0) == result.summary["num_preemptions"]
    assert counts.get("preemption", 0) == steps["num_preempted"].sum()
    assert counts["queued"] == counts["request_prefill"] == int(finished.sum())
    assert counts["decode"] == int((finished & (req["output_tokens"] > 1)).sum())
    assert counts["counter"] == 2 * result.num_steps
    # one row per request, named by its id, in trace order under one "requests" process
    req_tracks = {k: v for k, v in chk.thread_names.items() if v.startswith("req ")}
    assert sorted(req_tracks.values()) == sorted(f"req {r}" for r in req["request_id"])
    assert {chk.process_names[pid] for pid, _tid in req_tracks} == {"requests"}
    # three rows per instance
    n_inst = result.summary["num_instances"]
    inst_rows = [v for v in chk.thread_names.values() if not v.startswith("req ")]
    assert sorted(inst_rows) == sorted(["GPU steps", "CPU schedule", "prefill chunks"] * n_inst)
    # step slices sit exactly where the step log says, in integer ns
    ts = np.array([round(e["ts"] * 1000) for e in chk.events if e.get("cat") == "step"])
    dur = np.array([round(e["dur"] * 1000) for e in chk.events if e.get("cat") == "step"])
    start = seconds_to_ns(steps["start_s"])
    end = seconds_to_ns(steps["end_s"])
    assert sorted(zip(ts.tolist(), (ts + dur).tolist(), strict=True)) == sorted(zip(start.tolist(),
                                                                      end.tolist(), strict=True))
    assert dur.sum() == seconds_to_ns(steps["gpu_ms"], 1_000_000).sum()


def test_multi_instance_replay_with_preemptions(tmp_path):
    result = _replay(tmp_path, instances=2, blocks=12, gap_ms=1)
    assert result.summary["num_preemptions"] > 0  # the scenario exercises preemptions
    path = write_trace_events(timeline_from_replay(result), tmp_path / "t.json")
    chk = check_trace_events(path)
    assert_timeline_matches(result, chk)
    # each instance's steps are on its own GPU row and never overlap there (checked above);
    # both instances worked
    per_row = _by_track(chk, "step")
    assert len(per_row["GPU steps"]) == result.num_steps  # same row name in two processes
    pids = {e["pid"] for e in chk.events if e.get("cat") == "step"}
    assert len(pids) == 2
    # a preempted request says so on its row
    preempted = result.requests.loc[result.requests["num_preemptions"] > 0, "request_id"]
    for e in chk.events:
        if e.get("cat") == "decode" and e["args"]["request_id"] in set(preempted):
            assert e["args"]["num_preemptions"] > 0


def test_request_rows_follow_the_request_table(tmp_path):
    result = _replay(tmp_path, instances=1, blocks=40)
    chk = check_trace_events(write_trace_events(timeline_from_replay(result), tmp_path / "t.json"))
    assert chk.problems == ()
    row = result.requests.iloc[7]
    rid = str(row["request_id"])
    spans = {e["name"]: e for e in chk.events
             if e.get("args", {}).get("request_id") == rid and e["ph"] == "X"}
    assert set(spans) == {"queued", "prefill", "decode"}
    ns = {k: int(seconds_to_ns([row[k]])[0]) for k in
          ("arrival_s", "first_scheduled_s", "first_token_s", "finish_s")}
    assert round(spans["queued"]["ts"] * 1000) == ns["arrival_s"]
    assert round(spans["prefill"]["ts"] * 1000) == ns["first_scheduled_s"]
    assert round(spans["decode"]["ts"] * 1000) == ns["first_token_s"]
    assert round((spans["decode"]["ts"] + spans["decode"]["dur"]) * 1000) == ns["finish_s"]
    assert spans["prefill"]["args"]["input_tokens"] == row["input_tokens"]


def test_same_replay_gives_byte_identical_traces(tmp_path):
    paths = []
    for k in range(2):
        result = _replay(tmp_path / f"r{k}", instances=2, blocks=12, gap_ms=1)
        paths.append(write_trace_events(timeline_from_replay(result), tmp_path / f"t{k}.json.gz"))
    assert paths[0].read_bytes() == paths[1].read_bytes()
    assert check_trace_events(paths[0]).problems == ()


def test_result_without_step_log_is_refused(tmp_path):
    result = _replay(tmp_path, num_requests=3)

    class NoSteps:
        steps = None
        requests = result.requests
        summary = result.summary

    with pytest.raises(ConfigError, match="per-step log"):
        timeline_from_replay(NoSteps())


# ---------------------------------------------------------------- CLI, real data
@pytest.mark.realdata
def test_cli_replay_writes_a_checked_timeline_and_leaves_outputs_unchanged(
        tmp_path, data_path, capsys):
    exp = EXAMPLES / "rtx4090-llama-3.1-8b.yaml"
    for rel in ("llmservingsim/workloads/sharegpt-llama-3.1-8b-300-sps10.jsonl",
                "llmservingsim/profiles/RTX4090/meta-llama/Llama-3.1-8B/bf16"):
        data_path(rel)  # skip (or fail under LLMSIM_REQUIRE_DATA=1) without the real data
    trace = tmp_path / "timeline.json.gz"
    assert main(["replay", str(exp), "--out", str(tmp_path / "with"), "--no-progress",
                 "--trace-events", str(trace)]) == 0
    assert f"wrote timeline {trace}" in capsys.readouterr().out
    result = run(load_experiment(exp), keep_steps=True)
    write_outputs(result, tmp_path / "without")
    for name in ("requests.csv", "timeseries.csv", "summary.json"):
        assert (tmp_path / "with" / name).read_bytes() == \
            (tmp_path / "without" / name).read_bytes()
    assert gzip.decompress(trace.read_bytes())[:16] == b'{"traceEvents":['
    assert_timeline_matches(result, check_trace_events(trace))


@pytest.mark.realdata
def test_cli_validate_writes_the_replays_timeline(tmp_path, data_path, capsys):
    measured = data_path("llmservingsim/measured/RTXPRO6000/Llama-3.1-8B")
    data_path("llmservingsim/profiles/RTXPRO6000/meta-llama/Llama-3.1-8B/bf16")
    exp = EXAMPLES / "rtxpro6000-llama-3.1-8b.yaml"
    trace = tmp_path / "validate.json"
    assert main(["validate", str(exp), "--measured", str(measured), "--out",
                 str(tmp_path / "rep"), "--trace-events", str(trace)]) == 0
    assert f"timeline: {trace}" in capsys.readouterr().out
    chk = check_trace_events(trace)
    assert chk.problems == ()
    report = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert chk.counts_by_cat()["queued"] == report["num_requests"] == 300
