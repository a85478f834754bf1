"""``llmsim cluster``: cluster descriptions of other simulators as llmsim experiments.

``llmsim cluster import llmservingsim CONFIG.json [--out FILE.yaml]`` writes the experiment
YAML of one LLMServingSim cluster config; ``llmsim cluster import llmservingsim DIR --out
OUTDIR`` converts every ``*.json`` of a directory into ``OUTDIR/<stem>.yaml``
(:mod:`llmsim.cluster.importers.llmservingsim`). ``--check`` also loads each written file
and prints whether it would run or the first "not supported yet" it stops at.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``cluster import llmservingsim``."""
    parser = subparsers.add_parser("cluster", help="import cluster descriptions of other "
                                   "simulators")
    sub = parser.add_subparsers(dest="cluster_command", metavar="ACTION", required=True)
    imp = sub.add_parser("import", help="convert a cluster config into an llmsim experiment")
    kinds = imp.add_subparsers(dest="cluster_format", metavar="FORMAT", required=True)
    lss = kinds.add_parser("llmservingsim", help="LLMServingSim 2.0 configs/cluster/*.json")
    lss.add_argument("config", type=Path, help="a cluster config .json, or a directory of them")
    lss.add_argument("--out", type=Path, default=None,
                     help="the YAML file to write (a directory when CONFIG is one); default: "
                     "<stem>.yaml in the current directory")
    lss.add_argument("--trace", default=None,
                     help="trace of the experiment (llmservingsim JSONL); default: the "
                     "ShareGPT workload of the served model in the data")
    lss.add_argument("--router", default=None,
                     help="llmsim routing policy (round_robin, least_loaded, vllm_dp); "
                     "LLMServingSim's comes from its command line, not the JSON")
    lss.add_argument("--profile", action="append", default=[], metavar="HARDWARE[/MODEL]=PATH",
                     help="cost source for instances of that hardware (and model) instead of "
                     "the data's LLMServingSim bundle (repeatable)")
    lss.add_argument("--llmservingsim-defaults", action="store_true",
                     help="write LLMServingSim's command-line defaults (max_num_seqs 128, ...) "
                     "for engine settings the JSON leaves out, instead of vLLM's")
    lss.add_argument("--check", action="store_true",
                     help="load each written experiment and say whether it runs or what "
                     "it refuses (not supported yet)")
    lss.set_defaults(func=run_import)


def run_import(args: argparse.Namespace) -> int:
    """Convert one config or a directory of them; exit 0 when every file was written."""
    from llmsim.cluster.importers.llmservingsim import (
        import_config,
        import_directory,
        write_imported,
    )
    from llmsim.errors import ConfigError

    profiles = {}
    for item in args.profile:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise ConfigError(f"expected HARDWARE[/MODEL]=PATH, got {item!r}", field="--profile")
        path = Path(value).expanduser()
        profiles[key] = str(path.resolve()) if path.exists() else value
    options = {"trace": args.trace, "router": args.router, "profiles": profiles,
               "cli_defaults": args.llmservingsim_defaults}
    if args.config.is_dir():
        results = import_directory(args.config, **options)
        out_dir = args.out or Path.cwd()
        targets = [out_dir / f"{r.source.stem}.yaml" for r in results]
    else:
        results = [import_config(args.config, **options)]
        targets = [args.out or Path.cwd() / f"{args.config.stem}.yaml"]
    for result, target in zip(results, targets, strict=True):
        write_imported(result, target)
        status = ""
        if args.check:
            found = check_imported(target)
            if found == "runs" and result.data_gaps:
                found = "refused: " + "; ".join(what for _, what in result.data_gaps)
            status = f"  [{found}]"
        elif not result.runnable:
            status = "  [stops at: " + "; ".join(
                what for _, what in result.unsupported + result.data_gaps) + "]"
        print(f"{result.source.name} -> {target}{status}")
        for text in result.warnings:
            print(f"warning: {result.source.name}: {text}", file=sys.stderr)
    return 0


def check_imported(path: Path) -> str:
    """``"runs"`` when the experiment loads and its layout is modelled, else ``"refused:
    <message>"`` (the located error's reason and field)."""
    from llmsim.errors import LlmsimError

    try:
        refusal = first_refusal(path)
    except LlmsimError as exc:
        return f"refused: {exc}"
    return "runs" if refusal is None else f"refused: {refusal}"


def first_refusal(path: Path) -> str | None:
    """The first "not supported yet" of an experiment file found without replaying it
    (loading, then :func:`llmsim.replay.check_parallel_supported`), or None.

    Raises:
        LlmsimError: the file does not load (the located error).
    """
    from llmsim.errors import ConfigError
    from llmsim.experiment import load_experiment
    from llmsim.model.config import load_model_config
    from llmsim.replay import check_parallel_supported

    exp = load_experiment(path)
    models = [load_model_config(g.model_path) for g in exp.groups()]
    try:
        check_parallel_supported(exp, models)
    except ConfigError as exc:
        return str(exc)
    return None
