"""``llmsim replay EXP.yaml [--set KEY=VALUE ...] [--out DIR] [--steps-log] [--exact-steps]
[--trace-events FILE] [--format llmsim|vllm-bench]``.

``--format vllm-bench`` writes the run as one ``vllm bench serve --save-result
--save-detailed`` JSON (:mod:`llmsim.metrics.vllm_bench`) at ``--out`` (default
``<output_dir>.json``) instead of the output directory."""

from __future__ import annotations

import argparse
import sys


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("replay", help="replay a trace through the simulated serving loop",
                              description="Replay an experiment's trace and write requests.csv/"
                              ".parquet, itls.parquet, timeseries.csv, summary.json.")
    p.add_argument("experiment", help="experiment YAML file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a field, e.g. --set engine.max_num_seqs=64 (repeatable)")
    p.add_argument("--out", default=None, help="output directory (default: output_dir)")
    p.add_argument("--steps-log", action="store_true", help="also write steps.csv")
    p.add_argument("--exact-steps", action="store_true",
                   help="simulate every engine step one by one (no decode fast-forward; "
                   "the outputs are identical, only slower)")
    p.add_argument("--trace-events", default=None, metavar="FILE",
                   help="also write a Chrome/Perfetto timeline (open it in ui.perfetto.dev); "
                   "gzip-compressed when FILE ends in .gz")
    p.add_argument("--format", dest="out_format", choices=("llmsim", "vllm-bench"), default="llmsim",
                   help="llmsim: the output directory (default); vllm-bench: one vLLM bench "
                   "result JSON at --out (default <output_dir>.json)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--energy", default=None, metavar="DIR",
                   help="also write energy.json (summary.json's energy entry) and power.csv "
                   "to DIR, a directory of its own (both are in every output directory too)")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from llmsim.experiment import load_experiment, parse_override
    from llmsim.replay import run, write_outputs

    overrides = dict(parse_override(o) for o in args.overrides)
    exp = load_experiment(args.experiment, overrides)
    from llmsim.data.atomic import check_output_target

    bench = args.out_format == "vllm-bench"
    if not bench:
        check_output_target(args.out or exp.output_dir)  # refuse a file / foreign dir before the run
    trace = None
    if bench:
        from llmsim.api import experiment_trace

        trace = experiment_trace(exp)
    # the step log is kept only for what reads it: steps.csv, the timeline, the energy report
    keep_steps = bool(args.steps_log or args.trace_events or args.energy)
    result = run(exp, trace=trace, progress=not args.no_progress and sys.stderr.isatty(),
                 keep_steps=keep_steps, exact_steps=args.exact_steps)
    timeline = None
    if args.trace_events:
        from llmsim.timeline import timeline_from_replay

        timeline = timeline_from_replay(result)
    if bench:
        from pathlib import Path

        from llmsim.metrics.vllm_bench import write_vllm_bench
        from llmsim.model.config import load_model_config

        out = write_vllm_bench(result, args.out or Path(str(exp.output_dir).rstrip("/") + ".json"),
                               model_id=load_model_config(exp.model_path).name,
                               metadata=trace.metadata if trace is not None else None)
    else:
        out = write_outputs(result, args.out or exp.output_dir, steps_log=args.steps_log)
    s = result.summary
    print(f"{exp.name}: {s['num_finished']}/{s['num_requests']} requests, "
          f"{result.num_steps} steps, {s['num_preemptions']} preemptions, "
          f"simulated {s['duration_s']:.2f} s in {result.wall_time_s:.3f} s wall")
    for key, label in (("ttft_s", "TTFT"), ("tpot_s", "TPOT"), ("e2e_s", "E2E")):
        d = s[key]
        if d["mean"] is None:
            continue
        print(f"  {label:4s} ms: mean {d['mean'] * 1e3:9.1f}  p50 {d['p50'] * 1e3:9.1f}  "
              f"p90 {d['p90'] * 1e3:9.1f}  p99 {d['p99'] * 1e3:9.1f}")
    print(f"  prefix-cache hit rate {s['prefix_cache']['hit_rate']:.3f}, "
          f"peak KV usage {s['kv_cache']['peak_usage_pct']:.1f}% of "
          f"{s['kv_cache']['num_gpu_blocks']} blocks ({s['kv_cache']['source']})")
    tiers = s.get("kv_tiers")
    if tiers is not None:
        rates = "".join(f", {name} {t['hit_rate']:.3f}" for name, t in tiers["tiers"].items())
        print(f"  prefix hits by tier: gpu {tiers['gpu_hit_rate']:.3f}{rates}")
    print(f"  wrote {out}")
    en = s.get("energy", {})
    if en.get("available"):
        print(f"  energy {en['energy_j']:.1f} J ({', '.join(en['covers'])}), avg power "
              f"{en['avg_power_w']:.1f} W, peak {en['peak_power_w']:.1f} W, "
              f"{_fmt(en['j_per_output_token'])} J/output token")
    elif en:
        print(f"  energy unavailable: {en['reason']}")
    if args.energy:
        from llmsim.power import write_replay_energy

        print(f"  wrote {', '.join(str(p) for p in write_replay_energy(result, args.energy))}")
    if timeline is not None:
        from llmsim.timeline import write_trace_events

        print(f"  wrote timeline {write_trace_events(timeline, args.trace_events)}")
    return 0


def _fmt(x: object) -> str:
    """A figure to 4 decimals, or the text it is ("unavailable")."""
    return f"{x:.4f}" if isinstance(x, float) else str(x)
