"""Child process for the replay-at-scale benchmarks: one replay, its wall time and peak RSS.

Run as ``python benchmarks/traces/replay_child.py EXPERIMENT FORMAT TRACE`` (LLMSIM_DATA_DIR
set); prints one JSON line. A separate process gives a clean peak-RSS figure: ``VmHWM`` from
``/proc/self/status`` (reset by exec, unlike ``ru_maxrss``, which Linux carries over from the
parent), falling back to ``ru_maxrss`` elsewhere.
"""

from __future__ import annotations

import json
import resource
import sys
import time


def peak_rss_mib() -> float:
    """Peak resident set size of this process, MiB."""
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    experiment_path, fmt, trace_path = sys.argv[1:4]
    from llmsim.experiment import load_experiment
    from llmsim.replay import run
    from llmsim.trace import load_trace

    rss_before = peak_rss_mib()
    t0 = time.perf_counter()
    trace = load_trace(fmt, trace_path)
    t1 = time.perf_counter()
    result = run(load_experiment(experiment_path), trace=trace)
    t2 = time.perf_counter()
    summary = result.summary
    print(json.dumps({
        "requests": len(trace),
        "load_s": t1 - t0,
        "replay_s": t2 - t1,
        "sim_wall_s": result.wall_time_s,
        "num_steps": result.num_steps,
        "peak_rss_mib": peak_rss_mib(),
        "rss_after_imports_mib": rss_before,
        "finished": summary.get("num_finished"),
        "prefix_hit_rate": (summary.get("prefix_cache") or {}).get("hit_rate"),
        "simulated_duration_s": summary.get("duration_s"),
    }))


if __name__ == "__main__":
    main()
