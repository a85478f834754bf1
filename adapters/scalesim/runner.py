"""Run SCALE-Sim GEMMs in worker processes, behind a persistent result table.

SCALE-Sim (PyPI ``scalesim``, v3) prints to stdout and writes report files into its run
directory, and takes from a fraction of a second to minutes per GEMM. So each GEMM runs in a
worker process (``concurrent.futures.ProcessPoolExecutor``), in a fresh temporary directory
under the adapter's work directory with stdout swallowed, and its result is stored in a
SQLite table keyed by (array config hash, M, N, K): a restarted server never simulates the
same GEMM twice.

GEMM mapping: SCALE-Sim's GEMM topology rows are ``name, M, N, K`` with an ``M x K`` input
and a ``K x N`` weight (it maps them to a 1x1 convolution: ifmap ``M x K``, ``N`` filters).
Results taken: total cycles (compute + stalls, the first column of its compute report) and
the SRAM / DRAM access counts of its detailed access report.
"""

from __future__ import annotations

import contextlib
import io
import logging
import multiprocessing
import shutil
import sqlite3
import tempfile
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from adapters.scalesim.config import ArrayConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class GemmSim:
    """SCALE-Sim's result for one GEMM.

    Attributes:
        cycles: total cycles, compute plus stalls.
        sram_reads: ifmap + filter SRAM reads (words).
        sram_writes: ofmap SRAM writes (words).
        dram_reads: ifmap + filter DRAM reads (words).
        dram_writes: ofmap DRAM writes (words).
    """

    cycles: int
    sram_reads: int
    sram_writes: int
    dram_reads: int
    dram_writes: int


Shape = tuple[int, int, int]
# Runs many GEMMs of one array config; the real one is ScaleSimRunner, tests pass fakes.
GemmRunner = Callable[[list[Shape]], list[GemmSim]]


def simulate_gemm(cfg_text: str, shape: Shape, work_dir: str) -> GemmSim:
    """Run SCALE-Sim once (in the calling process) for ``M x K @ K x N``.

    Runs in its own temporary directory (removed afterwards) with stdout captured.
    """
    from scalesim.scale_sim import scalesim  # imported in the worker: heavy, own venv

    m, n, k = shape
    run_dir = Path(tempfile.mkdtemp(prefix=f"gemm-{m}x{n}x{k}-", dir=work_dir))
    try:
        (run_dir / "array.cfg").write_text(cfg_text)
        (run_dir / "topology.csv").write_text(f"Layer, M, N, K,\ngemm, {m}, {n}, {k},\n")
        (run_dir / "layout.csv").write_text("Layer name, unused,\n")
        with contextlib.redirect_stdout(io.StringIO()):
            sim = scalesim(save_disk_space=True, verbose=False,
                           config=str(run_dir / "array.cfg"),
                           topology=str(run_dir / "topology.csv"),
                           layout=str(run_dir / "layout.csv"), input_type_gemm=True)
            sim.run_scale(top_path=str(run_dir / "out"))
        layer = sim.runner.single_layer_sim_object_list[0]
        compute = layer.get_compute_report_items()
        detail = layer.get_detail_report_items()
        # detail: per (ifmap, filter, ofmap) x (sram, dram): start, stop, count
        return GemmSim(cycles=int(compute[0]),
                       sram_reads=int(detail[2]) + int(detail[5]),
                       sram_writes=int(detail[8]),
                       dram_reads=int(detail[11]) + int(detail[14]),
                       dram_writes=int(detail[17]))
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


class ScaleSimRunner:
    """Runs GEMMs in a pool of worker processes.

    Args:
        array: the systolic array.
        work_dir: parent of the per-run temporary directories.
        workers: worker processes.
    """

    def __init__(self, array: ArrayConfig, work_dir: str | Path, *, workers: int = 2) -> None:
        self.cfg_text = array.scalesim_cfg()
        self.work_dir = Path(work_dir)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        # "spawn", not the default fork: forking a process that runs gRPC threads can leave
        # the child with locked runtime state, and it then dies mid-task.
        self._pool = ProcessPoolExecutor(max_workers=workers,
                                         mp_context=multiprocessing.get_context("spawn"))

    def __call__(self, shapes: list[Shape]) -> list[GemmSim]:
        futures = [self._pool.submit(simulate_gemm, self.cfg_text, s, str(self.work_dir))
                   for s in shapes]
        return [f.result() for f in futures]

    def close(self) -> None:
        """Stop the workers."""
        self._pool.shutdown(wait=True, cancel_futures=True)


class ResultTable:
    """Persistent SCALE-Sim results (SQLite), keyed by array config hash and GEMM shape."""

    _SCHEMA = """CREATE TABLE IF NOT EXISTS gemm (
        config TEXT NOT NULL, m INTEGER NOT NULL, n INTEGER NOT NULL, k INTEGER NOT NULL,
        cycles INTEGER NOT NULL, sram_reads INTEGER NOT NULL, sram_writes INTEGER NOT NULL,
        dram_reads INTEGER NOT NULL, dram_writes INTEGER NOT NULL,
        PRIMARY KEY (config, m, n, k))"""

    def __init__(self, path: str | Path, config_hash: str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.config = config_hash
        self._db = sqlite3.connect(self.path, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(self._SCHEMA)
        self._db.commit()
        rows = self._db.execute("SELECT m, n, k, cycles, sram_reads, sram_writes, dram_reads, "
                                "dram_writes FROM gemm WHERE config = ?", (config_hash,))
        self._rows: dict[Shape, GemmSim] = {
            (m, n, k): GemmSim(cycles=c, sram_reads=sr, sram_writes=sw, dram_reads=dr,
                               dram_writes=dw)
            for m, n, k, c, sr, sw, dr, dw in rows}

    def __len__(self) -> int:
        return len(self._rows)

    def get(self, shape: Shape) -> GemmSim | None:
        """The stored result for ``shape``, if any."""
        return self._rows.get(shape)

    def put_many(self, items: Iterable[tuple[Shape, GemmSim]]) -> None:
        """Store results (one transaction)."""
        items = list(items)
        with self._db:
            self._db.executemany(
                "INSERT OR REPLACE INTO gemm VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(self.config, *s, g.cycles, g.sram_reads, g.sram_writes, g.dram_reads,
                  g.dram_writes) for s, g in items])
        for s, g in items:
            self._rows[s] = g

    def close(self) -> None:
        """Close the database."""
        self._db.close()
