"""``llmsim search capacity SEARCH.yaml [--out DIR] [--set KEY=VALUE ...]
[--backend local|ray|serial] [--workers N] [--address ADDR]``: the highest request rate (or the fewest instances) that
meets an SLO, by bisection over sweep points (:mod:`llmsim.sweep.search`)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from llmsim.cli.sweep import add_backend_args

    p = subparsers.add_parser("search", help="capacity search: highest rate / fewest "
                              "instances meeting SLOs")
    sub = p.add_subparsers(dest="search_kind", metavar="KIND", required=True)
    c = sub.add_parser("capacity", help="highest request rate (find: max_rate) or fewest "
                       "instances (find: min_instances) that meets the SLO",
                       description="Bisection on the request rate (scaling the trace's "
                       "arrival times) or on the instance count; each probe is a sweep point "
                       "(stored, so an interrupted search resumes).")
    c.add_argument("search", help="search YAML file")
    c.add_argument("--out", default=None, help="search directory (default: output_dir, else "
                   "out/searches/<name>)")
    add_backend_args(c)
    c.add_argument("--no-plots", action="store_true", help="no PNG plots")
    c.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from llmsim.cli.sweep import with_overrides
    from llmsim.sweep.search import SearchGoal, load_search, run_search

    spec = with_overrides(load_search(args.search), args.overrides)
    res = run_search(spec, out_dir=args.out, backend=args.backend, workers=args.workers,
                     address=args.address, plots=not args.no_plots)
    n = len(res.evaluations)
    slo = spec.slo
    bounds = ", ".join(f"{k} {v:g} s" for k, v in (("TTFT", slo.ttft_s), ("TPOT", slo.tpot_s))
                       if v is not None)
    what = f"{bounds}, attainment >= {slo.attainment:g}"
    if res.find == SearchGoal.MAX_RATE:
        if res.answer is None:
            print(f"{spec.name}: the SLO ({what}) is not met even at {spec.rate and spec.rate.low_per_s} req/s")
        else:
            more = "" if res.bounded else " (the upper bound: the capacity is at least this)"
            print(f"{spec.name}: highest rate meeting the SLO ({what}): {res.answer:g} req/s"
                  f"{more} (trace's own rate {res.base_rate_per_s:.3f} req/s)")
    elif res.answer is None:
        print(f"{spec.name}: the SLO ({what}) is not met even with {spec.instances and spec.instances.high} instances")
    else:
        print(f"{spec.name}: fewest instances meeting the SLO ({what}): {res.answer}")
    if not res.monotone:
        print("  warning: the evaluations are not monotone in the searched value; see the table")
    print(f"  {n} points evaluated ({res.num_run} run now) in {res.rounds} rounds, "
          f"{res.wall_s:.1f} s wall; wrote {res.out_dir / 'results'}")
    return 0
