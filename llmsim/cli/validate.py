"""``llmsim validate EXP.yaml [--measured DIR_OR_JSON] [--out DIR] [--set KEY=VALUE ...]
[--bands [N]] [--sensitivity] [--seed S]`` and ``llmsim validate --suite SUITE.yaml [--out DIR]``.

Replays the experiment's workload, compares it with a measured run and writes the report
(``report.md``, ``report.json``, plots). ``--measured`` defaults to the experiment's
``measured:``. The measured path is used as given when it exists, else resolved inside the
data directories (``LLMSIM_DATA_DIR`` or the user cache), so
``--measured llmservingsim/measured/RTXPRO6000/Llama-3.1-8B`` works from anywhere. A measured
run of another model or another workload (request count, per-request token counts) is
refused before the replay (exit code 2, no report written).

``--bands N`` adds 90% bands from N Monte Carlo replays over the profile's measurement
spread, ``--sensitivity`` the one-at-a-time sensitivity replays
(:mod:`llmsim.validate.uncertainty`). ``--suite`` validates every pair of a suite file
(:mod:`llmsim.validate.suite`) into one table (Markdown, JSON, self-contained HTML).
"""

from __future__ import annotations

import argparse

#: Monte Carlo replays of ``--bands`` given without a number.
DEFAULT_BANDS = 20


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``validate`` sub-command."""
    parser = subparsers.add_parser(
        "validate",
        help="replay a measured workload and report the error",
        description="Replay EXPERIMENT's workload and compare it, metric by metric, with a measured run.",
    )
    parser.add_argument("experiment", nargs="?", help="experiment YAML file (omit with --suite)")
    parser.add_argument(
        "--measured",
        help="measured run: a vLLM run directory (measured/<HW>/<model>) or a "
        "`vllm bench serve --save-result --save-detailed` JSON; relative paths that do not "
        "exist are looked up in LLMSIM_DATA_DIR / the user cache (default: the experiment's measured:)",
    )
    parser.add_argument("--suite", metavar="SUITE.yaml",
                        help="validate every (experiment, measured run) pair of a suite file into one table")
    parser.add_argument("--out", help="report directory (default: <experiment output_dir>/validation; "
                        "suite: out/suite-<name>)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override an experiment field, e.g. --set overheads.cpu_step_ns=0 (repeatable)",
    )
    parser.add_argument("--bands", nargs="?", type=int, const=DEFAULT_BANDS, default=None, metavar="N",
                        help=f"90%% bands from N Monte Carlo replays (default N {DEFAULT_BANDS}; "
                        "suite: the file's bands)")
    parser.add_argument("--sensitivity", action="store_true", default=None,
                        help="one-at-a-time sensitivity of every metric to each modelled parameter")
    parser.add_argument("--seed", type=int, default=0, help="seed of the Monte Carlo replays (default 0)")
    parser.add_argument("--progress", action="store_true", help="show a progress bar during the replay")
    parser.add_argument("--trace-events", metavar="FILE",
                        help="also write the replay's Chrome/Perfetto timeline (.gz: gzipped)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Replay, compare, write the report, print the table; returns the exit code."""
    from llmsim.errors import ConfigError

    if args.bands is not None and args.bands < 0:
        raise ConfigError(f"--bands expects a non-negative number of replays, got {args.bands}", field="bands")
    if args.suite:
        if args.experiment or args.measured or args.set or args.trace_events:
            raise ConfigError("--suite takes no EXPERIMENT, --measured, --set or --trace-events "
                              "(the suite file names the pairs)", field="suite")
        return _run_suite(args)
    if not args.experiment:
        raise ConfigError("give an EXPERIMENT file or --suite SUITE.yaml", field="experiment")
    from llmsim.validate import format_table
    from llmsim.validate.pipeline import validate_experiment
    from llmsim.validate.report import format_uncertainty

    overrides = None
    if args.set:
        from llmsim.experiment import parse_override

        overrides = dict(parse_override(s) for s in args.set)
    done = validate_experiment(args.experiment, args.measured, out_dir=args.out, overrides=overrides,
                               progress=args.progress, bands=args.bands or 0,
                               sensitivity=bool(args.sensitivity), seed=args.seed)
    print(format_table(done.comparison))
    if done.uncertainty is not None:
        print(format_uncertainty(done.uncertainty))
    files = done.files
    if files is not None:
        print(f"report: {files.markdown}  (data: {files.json}; plots in {files.out_dir})")
    if args.trace_events:
        from llmsim.timeline import timeline_from_replay, write_trace_events

        print(f"timeline: {write_trace_events(timeline_from_replay(done.result), args.trace_events)}")
    return 0


def _run_suite(args: argparse.Namespace) -> int:
    from pathlib import Path

    from llmsim.data.atomic import check_output_target
    from llmsim.validate.suite import load_suite, run_suite, write_suite

    suite = load_suite(args.suite)
    out = Path(args.out) if args.out else Path("out") / f"suite-{suite.name}"
    check_output_target(out)
    results = run_suite(suite, bands=args.bands, sensitivity=args.sensitivity)
    files = write_suite(suite, results, out)
    print(files.markdown.read_text(), end="")
    print(f"suite: {files.markdown}  (data: {files.json}; page: {files.html})")
    return 0
