"""Sweep throughput (points per minute) on this machine: serial vs local pool vs Ray.

An 18-point grid (max_num_seqs x instances x router) over the embedded RTX PRO 6000
example (300 requests per point, replayed 3x faster, as ``examples/sweeps/
rtxpro6000-engine-grid.yaml``), run from scratch by each backend with 2 workers, through
:func:`llmsim.sweep.run_sweep` (planning, points, table, no plots); the wall time includes
the backend's start (the pool's forkserver, Ray's local instance) and shutdown. Prints wall,
points per minute and the speed-up over serial (median of interleaved rounds), the CPU
seconds spent in the points (the steadier figure: the 2 cores are shared, so wall figures
move with the load) and the load average. Every backend must give the serial rows.
``python3 -m pytest -q -s benchmarks/sweep`` runs it.
"""

from __future__ import annotations

import importlib.util
import os
import statistics
import time
from pathlib import Path

import pandas as pd

from llmsim.sweep import load_sweep, run_sweep

ROOT = Path(__file__).resolve().parents[2]
BASE = ROOT / "examples" / "rtxpro6000-llama-3.1-8b.yaml"
WORKERS = 2
SWEEP = f"""experiment: {BASE}
set:
  engine.cudagraph_capture_sizes: null
  trace.transforms: [{{scale_rate: 3.0}}]
grid:
  engine.max_num_seqs: [32, 64, 128]
  instances: [1, 2, 4]
  router: [round_robin, least_loaded]
slo: {{ttft_s: 1.0, tpot_s: 0.05, attainment: 0.9}}
"""


ROUNDS = 2
"""Each backend runs the sweep once per round, backends interleaved (serial, local, ray,
serial, ...), so a change of the machine's load hits all of them; the median is printed."""


def test_bench_sweep_points_per_minute(tmp_path):
    path = tmp_path / "bench.yaml"
    path.write_text(SWEEP)
    spec = load_sweep(path)
    backends = ["serial", "local"] + (["ray"] if importlib.util.find_spec("ray") else [])
    walls: dict[str, list[float]] = {b: [] for b in backends}
    cpus: dict[str, list[float]] = {b: [] for b in backends}
    workers = {}
    tables = {}
    for r in range(ROUNDS):
        for backend in backends:
            t0 = time.perf_counter()
            res = run_sweep(spec, out_dir=tmp_path / f"{backend}-{r}", backend=backend,
                            workers=None if backend == "serial" else WORKERS, plots=False)
            walls[backend].append(time.perf_counter() - t0)
            assert res.num_run == res.num_points == 18 and res.num_failed == 0
            cpus[backend].append(float(res.table["cpu_s"].sum()))
            workers[backend] = res.workers
            tables[backend] = res.table.drop(columns=["wall_s", "cpu_s"])
    load = os.getloadavg()[0]
    print(f"\n[sweep] 18 points x 300 requests, {os.cpu_count()} CPUs, median of {ROUNDS} "
          f"interleaved rounds, load average {load:.2f} at the end:")
    serial_wall = statistics.median(walls["serial"])
    for backend in backends:
        wall = statistics.median(walls[backend])
        print(f"[sweep]   {backend:6s} x{workers[backend]}: wall {wall:6.1f} s "
              f"({', '.join(f'{w:.1f}' for w in walls[backend])}), {60 * 18 / wall:5.1f} "
              f"points/min, {serial_wall / wall:4.2f}x serial; CPU in the points "
              f"{statistics.median(cpus[backend]):5.1f} s")
    for backend, table in tables.items():
        pd.testing.assert_frame_equal(table, tables["serial"], obj=backend)
