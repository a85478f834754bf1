"""Close the loop on this CPU: profile -> replay vs. a real engine on the same trace.

Steps (all on this machine, 1 torch thread by default):

1. generate a seeded synthetic trace (Poisson arrivals, uniform prompt/output lengths,
   random token ids) and write it as an LLMServingSim workload JSONL;
2. profile the small Llama-style model (``tiny-llama-cl.json``) with
   :func:`profiler.sweep.run_sweep` on a grid covering the engine's limits, in-context
   timing by default (``--timing hot|cold|in-context``, :mod:`profiler.in_context`);
3. calibrate the engine's per-step CPU work on a separate calibration trace (other seed,
   never the compared one): serve it with every operator's span recorded, and fit
   ``engine iteration time - sum of operator spans`` (scheduling, input preparation, the
   forward pass's Python glue, bookkeeping: everything the per-op profile does not contain)
   as ``a + b x scheduled sequences`` by least squares. The same run gives a step-level
   check of the profile: each step's batch priced by the profile cost model vs the sum of
   its measured operator spans;
4. serve the trace on the engine in real time (no operator timing); write the measured run
   in the ``vllm bench serve --save-result --save-detailed`` JSON format;
5. replay the trace with ``llmsim.replay.run`` on the profile, twice: kernel time only, and
   with the calibrated CPU overheads (``async_scheduling: false``: the engine is
   synchronous; no CUDA graphs on a CPU, so no padding);
6. compare each replay with the measured run through ``llmsim.validate`` (the same
   comparison and report as ``llmsim validate``): the metric table is printed and a full
   report written to ``<out>/validation-<replay>/``, with the 1-minute load averages seen
   during profiling and serving.

Usage::

    python -m profiler.closed_loop.run --out out/closed-loop [--requests 60 --rate 3]
    python -m profiler.closed_loop.run --out out/cl2 --profile out/closed-loop/profile.pb \
        --extra-profile profiler/profiles/<other>.pb    # reuse a profile, compare another
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from llmsim.data.atomic import atomic_write_bytes
from llmsim.model.config import load_model_config
from llmsim.trace.record import Request
from llmsim.validate.compare import compare
from llmsim.validate.measured import load_measured
from llmsim.validate.report import format_table, report_dict, write_report
from profiler.closed_loop.engine import Engine, EngineConfig, EngineResult
from profiler.grid import GridSpec
from profiler.sweep import SweepConfig, run_sweep
from profiler.timing import TimingMode, llc_bytes

logger = logging.getLogger(__name__)
MODEL_CONFIG = Path(__file__).with_name("tiny-llama-cl.json")


def synthetic_trace(n: int, rate_per_s: float, *, seed: int, input_range: tuple[int, int],
                    output_range: tuple[int, int], vocab: int) -> list[Request]:
    """``n`` requests with Poisson arrivals at ``rate_per_s`` and uniform lengths."""
    rng = np.random.default_rng(seed)
    arrivals_s = np.cumsum(rng.exponential(1.0 / rate_per_s, n))
    arrivals_s -= arrivals_s[0]
    out = []
    for i in range(n):
        n_in = int(rng.integers(input_range[0], input_range[1] + 1))
        n_out = int(rng.integers(output_range[0], output_range[1] + 1))
        out.append(Request(request_id=str(i), arrival_ns=int(arrivals_s[i] * 1e9),
                           input_tokens=n_in, output_tokens=n_out,
                           input_token_ids=tuple(int(t) for t in rng.integers(0, vocab, n_in))))
    return out


def write_trace_jsonl(requests: list[Request], path: Path) -> None:
    """The trace as an LLMServingSim workload (``arrival_time_ns``, ``input_toks``, ...)."""
    lines = [json.dumps({"arrival_time_ns": r.arrival_ns, "input_toks": r.input_tokens,
                         "output_toks": r.output_tokens,
                         "input_tok_ids": list(r.input_token_ids or ())}) for r in requests]
    atomic_write_bytes(path, ("\n".join(lines) + "\n").encode())


def profile_grid(max_tokens: int, max_seqs: int, max_context: int) -> GridSpec:
    """Grid covering the engine's limits (published dense axis, powers of two elsewhere)."""
    toks = [t for t in list(range(1, 17)) + list(range(20, 65, 4)) + list(range(80, 2049, 16))
            if t <= max_tokens]
    p2 = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048]
    return GridSpec(
        name="closed_loop", tokens=tuple(toks), sequences=tuple(range(1, max_seqs + 1)),
        prefill_chunks=(0,) + tuple(v for v in p2 if 16 <= v <= max_tokens),
        kv_prefill=(0,) + tuple(v for v in (64, 256, max_context) if v <= max_context),
        n_decode=(0,) + tuple(v for v in p2 if v <= max_seqs),
        kv_decode=tuple(v for v in (16, 64, 256, max_context) if v <= max_context),
        max_context=max_context,
        moe_tokens=(), active_experts=(), skew_n_decode=(4, 16))


def fit_cpu_overheads(result: EngineResult) -> tuple[int, int]:
    """Least-squares ``(step_ns - op_ns) = a + b x scheduled sequences`` over the steps of
    a run taken with ``time_ops=True``: the engine's per-step time outside the profiled
    operators, as ``(cpu_step_ns, cpu_per_seq_ns)`` (each floored at 0).

    Steps during which the OS ran another process (thread CPU time below the wall time by
    more than ``10 us + 5 %``, :func:`profiler.in_context.preempted`) are left out, as the
    profiler leaves out preempted operator calls, unless fewer than 10 steps remain.

    Raises:
        ValueError: the run did not time its operators.
    """
    from profiler.in_context import preempted

    if not result.steps or any(s.op_ns <= 0 for s in result.steps):
        raise ValueError("calibration needs a run with time_ops=True")
    steps = [s for s in result.steps if not preempted(s.step_ns, s.step_cpu_ns)]
    if len(steps) < 10:
        steps = result.steps
    n = np.array([s.num_prefills + s.num_decodes for s in steps], dtype=float)
    y = np.array([s.step_ns - s.op_ns for s in steps], dtype=float)
    a_mat = np.stack([np.ones_like(n), n], axis=1)
    (a, b), *_ = np.linalg.lstsq(a_mat, y, rcond=None)
    return max(0, int(a)), max(0, int(b))


def step_pricing_errors(result: EngineResult, profile: Path, model: Any, *,
                        overheads: tuple[int, int] | None = None) -> dict[str, float]:
    """Price each step the engine ran with the profile cost model, without queueing.

    With ``overheads`` None the priced kernel time is compared with the sum of the step's
    measured operator spans (a ``time_ops`` run); otherwise kernel time plus
    ``cpu_step_ns + cpu_per_seq_ns x sequences`` is compared with the whole measured engine
    iteration (``step_ns``).

    Returns:
        ``steps``, ``measured_ms`` and ``priced_ms`` (means), the relative error of the
        mean, and the median and p90 of the per-step absolute relative error (%); with
        ``overheads``, also ``cpu_ms`` (mean engine-thread CPU time per step) and
        ``cpu_mean_error_pct`` (priced vs that CPU time: what the error would be if the
        engine had not been preempted by other processes).
    """
    from llmsim.costmodel.base import PrefillChunk, StepBatch
    from llmsim.costmodel.profile_model import ProfileCostModel

    cm = ProfileCostModel.from_path(profile, model=model)
    meas, priced = [], []
    for s in result.steps:
        batch = StepBatch(prefills=tuple(PrefillChunk(num_new_tokens=n, num_cached_tokens=c,
                                                      emits_token=e) for n, c, e in s.prefills),
                          decode_context_lens=s.decode_lens)
        cost = cm.step_cost(batch).duration_ns
        if overheads is None:
            meas.append(s.op_ns)
            priced.append(cost)
        else:
            meas.append(s.step_ns)
            nseq = len(s.decode_lens) + len(s.prefills)
            priced.append(cost + overheads[0] + overheads[1] * nseq)
    m, p = np.array(meas, dtype=float), np.array(priced, dtype=float)
    rel = np.abs(p - m) / m * 100.0
    extra = {}
    if overheads is not None:
        cpu = np.array([s.step_cpu_ns for s in result.steps], dtype=float)
        extra = {"cpu_ms": float(cpu.mean() * 1e-6),
                 "cpu_mean_error_pct": float((p.mean() - cpu.mean()) / cpu.mean() * 100.0)}
    return {**extra, "steps": float(len(m)), "measured_ms": float(m.mean() * 1e-6),
            "priced_ms": float(p.mean() * 1e-6),
            "mean_error_pct": float((p.mean() - m.mean()) / m.mean() * 100.0),
            "median_abs_error_pct": float(np.median(rel)),
            "p90_abs_error_pct": float(np.percentile(rel, 90))}


def _pct(vals: np.ndarray, q: float) -> float:
    return float(np.percentile(vals, q)) if len(vals) else float("nan")


def bench_json(result: EngineResult, *, model_id: str, rate: float) -> dict[str, Any]:
    """The measured run as ``vllm bench serve --save-result --save-detailed`` JSON."""
    ttfts, itls, e2e, tpots = [], [], [], []
    for arr, times in zip(result.arrival_s, result.token_times_s, strict=True):
        ttfts.append(times[0] - arr)
        gaps = list(np.diff(times))
        itls.append(gaps)
        e2e.append(times[-1] - arr)
        if len(times) > 1:
            tpots.append((times[-1] - times[0]) / (len(times) - 1))
    all_itl = np.array([g for gs in itls for g in gs])
    out_tokens = sum(result.output_lens)
    summary: dict[str, Any] = {
        "date": dt.datetime.now().strftime("%Y%m%d-%H%M%S"),
        "backend": "llmsim-closed-loop-cpu", "model_id": model_id, "tokenizer_id": model_id,
        "num_prompts": len(ttfts), "request_rate": rate, "burstiness": 1.0,
        "max_concurrency": None, "duration": result.duration_s, "completed": len(ttfts),
        "total_input_tokens": sum(result.input_lens), "total_output_tokens": out_tokens,
        "request_throughput": len(ttfts) / result.duration_s,
        "output_throughput": out_tokens / result.duration_s,
        "total_token_throughput": (out_tokens + sum(result.input_lens)) / result.duration_s,
    }
    for name, vals in (("ttft", np.array(ttfts)), ("tpot", np.array(tpots)), ("itl", all_itl),
                       ("e2el", np.array(e2e))):
        ms = vals * 1e3
        summary.update({f"mean_{name}_ms": float(ms.mean()), f"median_{name}_ms": _pct(ms, 50),
                        f"std_{name}_ms": float(ms.std()), f"p90_{name}_ms": _pct(ms, 90),
                        f"p99_{name}_ms": _pct(ms, 99)})
    summary.update({"input_lens": result.input_lens, "output_lens": result.output_lens,
                    "ttfts": ttfts, "itls": itls, "start_times": result.arrival_s,
                    "generated_texts": [""] * len(ttfts), "errors": [""] * len(ttfts)})
    return summary


def replay(out: Path, profile: Path, trace_path: Path, ecfg: EngineConfig,
           overheads: tuple[int, int]) -> Any:
    """Replay the trace with ``llmsim.replay.run``; returns its ``ReplayResult``."""
    from llmsim.experiment import experiment_from_dict
    from llmsim.replay import run

    exp = experiment_from_dict({
        "name": "closed-loop-cpu", "model": str(MODEL_CONFIG), "profile": str(profile),
        "cost_model": "profile", "hardware": {"name": "cpu"},
        "engine": {"tensor_parallel_size": 1, "max_num_seqs": ecfg.max_num_seqs,
                   "max_num_batched_tokens": ecfg.max_num_batched_tokens,
                   "block_size": ecfg.block_size, "enable_prefix_caching": False,
                   "num_gpu_blocks_override": ecfg.num_blocks, "cudagraph_capture_sizes": [],
                   "async_scheduling": False},
        "overheads": {"cpu_step_ns": overheads[0], "cpu_per_seq_ns": overheads[1],
                      "cudagraph_padding": False},
        "trace": {"format": "llmservingsim", "path": str(trace_path)},
        "output_dir": str(out / "replay"),
    })
    return run(exp)


def main(argv: list[str] | None = None) -> int:
    """Run the closed loop; prints the error tables; returns 0."""
    ap = argparse.ArgumentParser(prog="python -m profiler.closed_loop.run")
    ap.add_argument("--out", default="out/closed-loop")
    ap.add_argument("--requests", type=int, default=60)
    ap.add_argument("--rate", type=float, default=3.0, help="requests per second")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repetitions", type=int, default=7)
    ap.add_argument("--timing", choices=[m.value for m in TimingMode],
                    default=TimingMode.IN_CONTEXT.value,
                    help="profile timing mode (default in-context)")
    ap.add_argument("--profile", default=None,
                    help="use this existing profile instead of measuring one")
    ap.add_argument("--extra-profile", action="append", default=[],
                    help="also replay this profile (e.g. another timing mode) against the "
                         "same measured run; repeatable")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = load_model_config(MODEL_CONFIG, name="closed-loop/tiny-llama-cl")
    ecfg = EngineConfig(max_num_seqs=16, max_num_batched_tokens=256, block_size=16,
                        num_blocks=16 * 32 + 64, num_threads=args.threads)
    in_rng, out_rng, max_ctx = (32, 384), (16, 128), 512
    trace = synthetic_trace(args.requests, args.rate, seed=args.seed, input_range=in_rng,
                            output_range=out_rng, vocab=model.vocab_size)
    trace_path = out / "trace.jsonl"
    write_trace_jsonl(trace, trace_path)

    load = {"profile_start": os.getloadavg()[0]}
    t0 = time.perf_counter()
    if args.profile:
        prof_path = Path(args.profile)
    else:
        prof_path = out / "profile.pb"
        timing = TimingMode(args.timing)
        cfg = SweepConfig(
            model=model, model_path=str(MODEL_CONFIG),
            grid=profile_grid(ecfg.max_num_batched_tokens, ecfg.max_num_seqs, max_ctx),
            warmup=3, repetitions=args.repetitions, num_threads=args.threads,
            hardware="cpu", timing=timing,
            flush_cache_bytes=(llc_bytes() or 32 * 2 ** 20) if timing == TimingMode.COLD else 0)
        run_sweep(cfg, prof_path, progress=False, resume=(prof_path.parent /
                  (prof_path.name + ".journal.jsonl")).exists())
    t_prof = time.perf_counter() - t0
    load["profile_end"] = os.getloadavg()[0]

    engine = Engine(model, ecfg, max_positions=max_ctx + 1, seed=args.seed)
    calib = synthetic_trace(16, args.rate * 2, seed=args.seed + 1000, input_range=in_rng,
                            output_range=(8, 32), vocab=model.vocab_size)
    calib_result = engine.run(calib, time_ops=True)
    overheads = fit_cpu_overheads(calib_result)
    pricing = step_pricing_errors(calib_result, prof_path, model)
    t1 = time.perf_counter()
    load["engine_start"] = os.getloadavg()[0]
    result = engine.run(trace)
    load["engine_end"] = os.getloadavg()[0]
    t_engine = time.perf_counter() - t1
    step_check = step_pricing_errors(result, prof_path, model, overheads=overheads)
    bench = bench_json(result, model_id=model.name, rate=args.rate)
    atomic_write_bytes(out / "measured-bench.json", json.dumps(bench, indent=1).encode())
    measured = load_measured(out / "measured-bench.json")
    fwd = np.array([s.forward_ns for s in result.steps]) * 1e-6
    cpu = np.array([s.step_ns - s.forward_ns for s in result.steps]) * 1e-6
    print(f"profile ({prof_path}): {t_prof:.1f} s; engine run: {t_engine:.1f} s, "
          f"{len(result.steps)} steps, forward mean {fwd.mean():.2f} ms, rest of the step "
          f"mean {cpu.mean():.3f} ms; calibrated overheads (step - op spans, calibration "
          f"trace): {overheads[0] / 1e3:.0f} us/step + {overheads[1] / 1e3:.1f} us/seq")
    print(f"step pricing on the calibration run ({pricing['steps']:.0f} steps): sum of op "
          f"spans {pricing['measured_ms']:.2f} ms/step, profile {pricing['priced_ms']:.2f} "
          f"ms/step ({pricing['mean_error_pct']:+.1f}%), per-step |error| median "
          f"{pricing['median_abs_error_pct']:.1f}%, p90 {pricing['p90_abs_error_pct']:.1f}%")
    print(f"step pricing on the compared run ({step_check['steps']:.0f} steps, profile + "
          f"calibrated overheads vs engine iteration): measured {step_check['measured_ms']:.2f}"
          f" ms/step, priced {step_check['priced_ms']:.2f} ms/step "
          f"({step_check['mean_error_pct']:+.1f}%), per-step |error| median "
          f"{step_check['median_abs_error_pct']:.1f}%, p90 {step_check['p90_abs_error_pct']:.1f}%;"
          f" vs the engine thread's CPU time {step_check['cpu_ms']:.2f} ms/step: "
          f"{step_check['cpu_mean_error_pct']:+.1f}%")
    print(f"measured run: {out / 'measured-bench.json'}")
    print("1-min load average (2 shared cores): "
          + ", ".join(f"{k} {v:.2f}" for k, v in load.items())
          + f"; engine CPU share (thread CPU / wall over steps): calibration "
            f"{calib_result.cpu_share():.2f}, compared run {result.cpu_share():.2f}")
    tables = {}
    runs = [("kernel-time-only", prof_path, (0, 0)),
            ("with-cpu-overheads", prof_path, overheads)]
    runs += [(f"{Path(p).stem}-with-cpu-overheads", Path(p), overheads)
             for p in args.extra_profile]
    for label, path, oh in runs:
        t2 = time.perf_counter()
        comparison = compare(measured, replay(out, path, trace_path, ecfg, oh), name=label)
        files = write_report(comparison, out / f"validation-{label}")
        tables[label] = report_dict(comparison)
        print(f"\nreplay {label} ({time.perf_counter() - t2:.2f} s):")
        print(format_table(comparison))
        print(f"report: {files.markdown}")
    atomic_write_bytes(out / "errors.json", json.dumps(
        {"overheads_ns": {"cpu_step_ns": overheads[0], "cpu_per_seq_ns": overheads[1]},
         "profile": str(prof_path), "step_pricing_calibration_ops": pricing,
         "step_pricing_compared_run": step_check,
         "load_average_1min": load,
         "engine_cpu_share": {"calibration": calib_result.cpu_share(),
                              "compared_run": result.cpu_share()},
         "profile_s": t_prof, "engine_s": t_engine, "tables": tables}, indent=1).encode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
