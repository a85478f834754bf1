"""Child process of the burst benchmark: N requests arriving at t = 0, one replay.

Run as ``python benchmarks/serving/bounds_burst_child.py EXPERIMENT N INPUT OUTPUT``
(LLMSIM_DATA_DIR set); prints one JSON line: trace build time, replay wall and CPU time,
simulation wall time, engine steps, peak RSS (``VmHWM``, clean in a fresh process).
"""

from __future__ import annotations

import json
import sys
import time


def peak_rss_mib() -> float:
    """Peak resident set size of this process, MiB (``VmHWM``)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    experiment_path, n_s, n_in, n_out = sys.argv[1:5]
    import numpy as np
    import pandas as pd

    from llmsim.experiment import load_experiment
    from llmsim.replay import run
    from llmsim.trace.frame import TraceFrame

    n = int(n_s)
    exp = load_experiment(experiment_path)
    t0 = time.perf_counter()
    frame = TraceFrame(data=pd.DataFrame({
        "request_id": np.arange(n), "arrival_ns": np.zeros(n, np.int64),
        "input_tokens": np.full(n, int(n_in), np.int64),
        "output_tokens": np.full(n, int(n_out), np.int64)}), source="burst", name="burst")
    trace = frame.to_trace()
    del frame
    t1, c1 = time.perf_counter(), time.process_time()
    result = run(exp, trace=trace)
    t2, c2 = time.perf_counter(), time.process_time()
    print(json.dumps({
        "requests": n, "build_s": t1 - t0, "replay_s": t2 - t1, "replay_cpu_s": c2 - c1,
        "sim_wall_s": result.wall_time_s, "num_steps": result.num_steps,
        "finished": result.summary["num_finished"], "peak_rss_mib": peak_rss_mib(),
        "timeseries_rows": len(result.timeseries),
    }))


if __name__ == "__main__":
    main()
