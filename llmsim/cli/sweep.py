"""``llmsim sweep SWEEP.yaml [--out DIR] [--set KEY=VALUE ...] [--backend local|ray|serial]
[--workers N] [--address ADDR] [--no-plots]``: run a grid or list of overrides over one experiment and
write one results table (:mod:`llmsim.sweep`)."""

from __future__ import annotations

import argparse
from typing import Any


def add_backend_args(p: argparse.ArgumentParser) -> None:
    """``--set``, ``--backend``, ``--workers``, ``--address`` (shared with ``llmsim search``)."""
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="an override of every point, after the file's set: (as replay --set; "
                   "repeatable)")
    p.add_argument("--backend", choices=("local", "ray", "serial"), default="local",
                   help="local: a process pool on this machine (default); ray: Ray tasks on a "
                   "local Ray instance or the cluster at --address; serial: in this process")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="parallel workers (default: the CPUs available)")
    p.add_argument("--address", default=None, metavar="ADDR",
                   help="an existing Ray cluster (ray://host:10001, host:6379 or auto)")


def with_overrides(spec: Any, overrides: list[str]) -> Any:
    """``spec`` with ``--set`` values added to its ``set:`` (the command line wins)."""
    if not overrides:
        return spec
    import dataclasses

    from llmsim.experiment import parse_override

    return dataclasses.replace(spec, common={**spec.common,
                                             **dict(parse_override(o) for o in overrides)})


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "sweep", help="run a grid of overrides over one experiment into one results table",
        description="Run every point of SWEEP.yaml (points already stored are reused) and "
        "write results/results.parquet, results.csv and plots/ under the sweep directory.")
    p.add_argument("sweep", help="sweep YAML file")
    p.add_argument("--out", default=None, help="sweep directory (default: output_dir, else "
                   "out/sweeps/<name>)")
    add_backend_args(p)
    p.add_argument("--no-plots", action="store_true", help="no PNG plots")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    import sys

    from llmsim.sweep import load_sweep, run_sweep

    spec = with_overrides(load_sweep(args.sweep), args.overrides)
    done = [0]

    def progress(task: object, record: dict[str, object]) -> None:
        done[0] += 1
        if sys.stderr.isatty():
            print(f"\r  {done[0]} points run", end="", file=sys.stderr, flush=True)

    res = run_sweep(spec, out_dir=args.out, backend=args.backend, workers=args.workers,
                    address=args.address, plots=not args.no_plots, on_record=progress)
    if done[0] and sys.stderr.isatty():
        print(file=sys.stderr)
    rate = 60.0 * res.num_run / res.wall_s if res.wall_s > 0 else 0.0
    print(f"{spec.name}: {res.num_points} points ({res.num_run} run, {res.num_reused} reused, "
          f"{res.num_failed} failed) in {res.wall_s:.1f} s wall on {res.backend} x"
          f"{res.workers} ({rate:.1f} points/min)")
    print(f"  wrote {res.out_dir / 'results'}")
    return 0
