"""``llmsim validate EXP.yaml --measured DIR_OR_JSON [--out DIR] [--set KEY=VALUE ...]``.

Replays the experiment's workload, compares it with a measured run and writes the report
(``report.md``, ``report.json``, plots). The measured path is used as given when it exists,
else resolved inside the data directories (``LLMSIM_DATA_DIR`` or the user cache), so
``--measured llmservingsim/measured/RTXPRO6000/Llama-3.1-8B`` works from anywhere.
"""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``validate`` sub-command."""
    parser = subparsers.add_parser(
        "validate",
        help="replay a measured workload and report the error",
        description="Replay EXPERIMENT's workload and compare it, metric by metric, with a measured run.",
    )
    parser.add_argument("experiment", help="experiment YAML file")
    parser.add_argument(
        "--measured",
        required=True,
        help="measured run: a vLLM run directory (measured/<HW>/<model>) or a "
        "`vllm bench serve --save-result --save-detailed` JSON; relative paths that do not "
        "exist are looked up in LLMSIM_DATA_DIR / the user cache",
    )
    parser.add_argument("--out", help="report directory (default: <experiment output_dir>/validation)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override an experiment field, e.g. --set overheads.cpu_step_ns=0 (repeatable)",
    )
    parser.add_argument("--progress", action="store_true", help="show a progress bar during the replay")
    parser.add_argument("--trace-events", metavar="FILE",
                        help="also write the replay's Chrome/Perfetto timeline (.gz: gzipped)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Replay, compare, write the report, print the table; returns the exit code."""
    from llmsim.validate import format_table, load_measured
    from llmsim.validate.pipeline import resolve_measured, validate_experiment

    measured = load_measured(resolve_measured(args.measured))  # data problems first, clearly
    overrides = None
    if args.set:
        from llmsim.experiment import parse_override

        overrides = dict(parse_override(s) for s in args.set)
    done = validate_experiment(args.experiment, measured, out_dir=args.out, overrides=overrides, progress=args.progress)
    print(format_table(done.comparison))
    files = done.files
    print(f"report: {files.markdown}  (data: {files.json}; plots in {files.out_dir})")
    if args.trace_events:
        from llmsim.timeline import timeline_from_replay, write_trace_events

        print(f"timeline: {write_trace_events(timeline_from_replay(done.result), args.trace_events)}")
    return 0
