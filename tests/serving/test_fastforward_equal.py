"""Decode fast-forward changes nothing: requests.csv, timeseries.csv and the summary (a kept
step log is written step by step, so it turns fast-forward off; the
summary, but for its ``fast_forward`` block) are byte-identical to ``--exact-steps``, on the
two measured runs (the RTX4090 one preempts), a prefix-caching Mooncake window, the Azure
conv hour on 4 instances (slow) and randomized small traces (hypothesis) that cover async
and synchronous scheduling, prefix caching on and off, KV pools small enough to preempt,
CPU-bound steps, CUDA-graph padding, several instances and session turns."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmsim.experiment import EngineConfig, Experiment, HardwareConfig, load_experiment
from llmsim.instance.step_time import StepOverheads
from llmsim.replay import ReplayResult, run
from llmsim.trace.record import Request, Trace

ROOT = Path(__file__).resolve().parents[2]
MODEL = "llmservingsim/configs/model/meta-llama/Llama-3.1-8B.json"
PROFILE = "llmservingsim/profiles/RTXPRO6000/meta-llama/Llama-3.1-8B/bf16"  # embedded too


def _files(result: ReplayResult) -> dict[str, str]:
    summary = {k: v for k, v in result.summary.items() if k != "fast_forward"}
    out = {"requests.csv": result.requests.to_csv(index=False),
           "timeseries.csv": result.timeseries.to_csv(index=False),
           "summary.json": json.dumps(summary, sort_keys=True, default=str)}
    if result.steps is not None:
        out["steps.csv"] = result.steps.to_csv(index=False)
    return out


def assert_same(exp: Experiment, *, min_runs: int = 1, **kw) -> dict:
    """Replay ``exp`` both ways; every output equal; returns the fast-forward summary."""
    if exp.trace.requests is not None:
        kw.setdefault("trace", exp.trace.requests)
    ff = run(exp, **kw)
    exact = run(exp, exact_steps=True, **kw)
    logged = run(exp, keep_steps=True, **kw)  # a kept step log turns fast-forward off
    assert not logged.summary["fast_forward"]["enabled"]
    assert _files(logged)["requests.csv"] == _files(exact)["requests.csv"]
    a, b = _files(ff), _files(exact)
    assert a.keys() == b.keys()
    for name in a:
        assert a[name] == b[name], name
    assert ff.num_steps == exact.num_steps
    stats = ff.summary["fast_forward"]
    assert stats["enabled"] and not exact.summary["fast_forward"]["enabled"]
    assert stats["runs"] >= min_runs, stats
    return {**stats, "num_steps": ff.num_steps}


@pytest.mark.realdata
@pytest.mark.parametrize("example", ["rtxpro6000-llama-3.1-8b", "rtx4090-llama-3.1-8b"])
def test_measured_runs_identical(example, data_path):
    data_path("llmservingsim/workloads/sharegpt-llama-3.1-8b-300-sps10.jsonl")
    stats = assert_same(load_experiment(ROOT / "examples" / f"{example}.yaml"), min_runs=20)
    assert stats["steps_fast_forwarded"] > 100


@pytest.mark.realdata
def test_mooncake_prefix_caching_window_identical(data_path):
    path = data_path("mooncake/conversation_trace.jsonl")
    exp = load_experiment(ROOT / "examples" / "rtxpro6000-llama-3.1-8b.yaml", {
        "trace": {"format": "mooncake", "path": str(path),
                  "transforms": [{"window": {"start_s": 0, "end_s": 60}}]},
        "engine.max_num_batched_tokens": 8192})
    ff = run(exp)
    assert ff.summary["prefix_cache"]["hit_rate"] > 0.02  # the window shares prefixes (4%)
    assert_same(exp, min_runs=10)


@pytest.mark.realdata
@pytest.mark.slow
def test_azure_conv_hour_4_instances_identical(data_path):
    data_path("azure-llm-2023/AzureLLMInferenceTrace_conv.csv")
    exp = load_experiment(ROOT / "benchmarks" / "serving" / "azure-conv-4x-rtxpro6000.yaml")
    stats = assert_same(exp, min_runs=1000)
    assert stats["steps_fast_forwarded"] > 100_000


# ------------------------------------------------------------------ randomized
def _trace(draw_reqs: list[tuple[int, int, int, int, int]]) -> Trace:
    reqs = []
    t = 0
    for i, (gap_ms, prompt, output, family, parent) in enumerate(draw_reqs):
        t += gap_ms * 1_000_000
        ids = tuple((family * 7919 + j) % 32000 for j in range(prompt))  # shared prefixes
        par = f"r{i - parent}" if 0 < parent <= i and i % 5 == 4 else None
        reqs.append(Request(request_id=f"r{i}", arrival_ns=t, input_tokens=prompt,
                            output_tokens=output, input_token_ids=ids, parent_id=par,
                            think_time_ns=3_000_000 if par else 0))
    return Trace(requests=reqs, source="random")


REQS = st.lists(st.tuples(st.integers(0, 40), st.integers(1, 300), st.integers(1, 80),
                          st.integers(0, 3), st.integers(0, 3)), min_size=1, max_size=25)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(reqs=REQS, max_num_seqs=st.sampled_from([1, 3, 8, 64]),
       budget=st.sampled_from([16, 48, 512]), block_size=st.sampled_from([4, 16]),
       blocks=st.sampled_from([None, 40, 120]), async_scheduling=st.booleans(),
       prefix=st.booleans(), cpu=st.sampled_from([(0, 0), (1_000_000, 5_000), (30_000_000, 0)]),
       instances=st.integers(1, 3), padding=st.booleans())
def test_random_traces_identical(reqs, max_num_seqs, budget, block_size, blocks,
                                 async_scheduling, prefix, cpu, instances, padding):
    trace = _trace(reqs)
    longest = max(r.input_tokens + r.output_tokens for r in trace.requests)
    if blocks is not None:
        blocks = max(blocks, longest // block_size + 3)
    exp = Experiment(
        model_path=MODEL, profile_path=PROFILE, trace=trace, num_instances=instances,
        hardware=HardwareConfig(name="RTXPRO6000", gpu_memory_bytes=96 * 2**30),
        engine=EngineConfig(max_num_seqs=max_num_seqs, max_num_batched_tokens=budget,
                            block_size=block_size, enable_prefix_caching=prefix,
                            num_gpu_blocks_override=blocks,
                            async_scheduling=async_scheduling),
        overheads=StepOverheads(cpu_step_ns=cpu[0], cpu_per_seq_ns=cpu[1],
                                cudagraph_padding=padding))
    assert_same(exp, min_runs=0)


def test_session_turn_released_by_another_instance_mid_stretch():
    """Found by the randomized test: r3 finishes on instance 0 while instance 2 decodes r2;
    its turn r4 arrives 3 ms later and is routed to instance 2, whose stretch must end
    before it (a turn released later is bounded by the other instances' step ends plus
    the shortest think time)."""
    trace = _trace([(0, 1, 1, 0, 0), (0, 1, 1, 0, 0), (0, 1, 80, 0, 0), (0, 1, 1, 0, 0),
                    (0, 1, 1, 0, 1), (0, 1, 1, 0, 0)])
    assert trace.requests[4].parent_id == "r3"
    exp = Experiment(model_path=MODEL, profile_path=PROFILE, trace=trace, num_instances=3,
                     hardware=HardwareConfig(name="RTXPRO6000", gpu_memory_bytes=96 * 2**30),
                     engine=EngineConfig(max_num_seqs=3, max_num_batched_tokens=16,
                                         block_size=4, enable_prefix_caching=False,
                                         async_scheduling=False),
                     overheads=StepOverheads(cpu_step_ns=0, cpu_per_seq_ns=0))
    stats = assert_same(exp, min_runs=1)
    assert stats["steps_fast_forwarded"] > 40, stats


def test_random_traces_fast_forward_something():
    """The randomized test above would pass with fast-forward never firing; here a plain
    decode-heavy trace must fast-forward most of its steps, with identical outputs."""
    trace = _trace([(5, 64, 200, i, 0) for i in range(12)])
    exp = Experiment(model_path=MODEL, profile_path=PROFILE, trace=trace,
                     hardware=HardwareConfig(name="RTXPRO6000", gpu_memory_bytes=96 * 2**30),
                     engine=EngineConfig(max_num_seqs=16, block_size=16))
    for e in (exp, dataclasses.replace(exp, engine=dataclasses.replace(
            exp.engine, async_scheduling=False))):
        stats = assert_same(e)
        assert stats["steps_fast_forwarded"] > 0.7 * stats["num_steps"], stats
