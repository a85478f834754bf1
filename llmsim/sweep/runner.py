"""Plan a sweep, run its points (resuming), and write one results table.

Output directory (``--out``, default the spec's ``output_dir`` or ``out/sweeps/<name>``)::

    sweep.json            marks the directory as a sweep's: {"schema", "name", "experiment"}
    points/<hash>.json    one record per finished point (:func:`llmsim.sweep.point.run_point`),
                          each written atomically the moment its point finishes
    results/              published atomically once every point is done (manifest):
      results.parquet, results.csv   one row per point, in point order
      plots/<axis>.png    every metric against that swept axis
      sweep.json          the spec, counts and backend

Resuming: a point whose record is in ``points/`` is not run again (records are keyed by
the config hash, :mod:`llmsim.sweep.point`). ``results/`` is removed when a sweep starts,
so a sweep that fails or is interrupted leaves the point records and no table; the next run
reuses them and writes the table. A directory that is neither empty nor a sweep's is refused.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmsim.data.atomic import (
    MANIFEST_NAME,
    atomic_write_text,
    publish_dir,
    temp_dir_next_to,
)
from llmsim.errors import ConfigError
from llmsim.sweep.backends import BackendKind, open_backend
from llmsim.sweep.point import ROW_SCHEMA, PointTask, config_hash, run_point
from llmsim.sweep.spec import SweepSpec

if TYPE_CHECKING:
    import pandas as pd

    from llmsim.sweep.backends import PoolBackend, RayBackend, SerialBackend

__all__ = ["PlannedPoint", "PointStore", "SweepResult", "check_sweep_dir", "plan_sweep",
           "run_sweep", "run_tasks", "sweep_table", "write_results"]

logger = logging.getLogger(__name__)

SWEEP_MARKER = "sweep.json"
SWEEP_SCHEMA = "llmsim.sweep/1"
RESULTS_DIR = "results"
POINTS_DIR = "points"


@dataclass(frozen=True, slots=True, kw_only=True)
class PlannedPoint:
    """One validated point of a sweep.

    Attributes:
        index: position in the sweep (grid first, then ``points``).
        values: the swept keys' values of this point.
        task: what a worker runs (its ``config_hash`` keys the record).
    """

    index: int
    values: Mapping[str, Any]
    task: PointTask


def plan_sweep(spec: SweepSpec) -> list[PlannedPoint]:
    """Validate every point as a full experiment and compute its config hash.

    Raises:
        ConfigError: a point's experiment is invalid: an unknown override key or a bad value
            is blamed on the sweep file's line of that axis (or ``set`` / ``points`` entry)
            and the key; a combination that is refused names the point's values.
    """
    from llmsim.experiment import load_experiment

    slo = spec.slo.as_dict() if spec.slo is not None else None
    planned = []
    for i, values in enumerate(spec.point_overrides()):
        overrides = {**spec.common, **values}
        try:
            exp = load_experiment(spec.experiment, overrides)
        except ConfigError as exc:
            raise _blame(spec, i, values, exc) from None
        task = PointTask(config_hash=config_hash(exp, slo), experiment=str(spec.experiment),
                         overrides=overrides, slo=slo)
        planned.append(PlannedPoint(index=i, values=values, task=task))
    return planned


def _blame(spec: SweepSpec, index: int, values: Mapping[str, Any], exc: ConfigError
           ) -> ConfigError:
    """Re-locate a point's experiment error in the sweep file (the key's line there)."""
    shown = ", ".join(f"{k}={v!r}" for k, v in values.items())
    bad = exc.field or ""

    def hits(key: str) -> bool:
        return bad == key or bad.startswith(key + ".") or key.startswith(bad + ".")

    n_grid = _grid_size(spec)
    key = next((k for k in values if hits(k)), None)
    if key is not None:
        field_ = f"grid.{key}" if index < n_grid else f"points.{index - n_grid}.{key}"
        return ConfigError(f"point {index} ({shown}): {exc.reason}", path=spec.source,
                           line=spec.line_of_axis(index, key), field=field_)
    key = next((k for k in spec.common if hits(k)), None)
    if key is not None:
        return ConfigError(f"point {index} ({shown}): {exc.reason}", path=spec.source,
                           line=spec.lines.get(f"set.{key}"), field=f"set.{key}")
    section = "grid" if index < n_grid else f"points.{index - n_grid}"
    return ConfigError(f"point {index} ({shown}): {exc}", path=spec.source,
                       line=spec.lines.get(section), field=section)


def _grid_size(spec: SweepSpec) -> int:
    n = 1
    for v in spec.grid.values():
        n *= len(v)
    return n if spec.grid else 0


# --------------------------------------------------------------------------- store
class PointStore:
    """Point records on disk, one JSON file per config hash (written atomically)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def path(self, key: str) -> Path:
        return self.directory / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        """The record of ``key``, or None (absent, unreadable or of another schema: rerun)."""
        p = self.path(key)
        try:
            record = json.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            logger.warning("ignoring unreadable point record %s: %s", p, exc)
            return None
        if not (isinstance(record, dict) and record.get("schema") == ROW_SCHEMA
                and record.get("config_hash") == key):
            logger.warning("ignoring point record %s of another layout", p)
            return None
        return record

    def put(self, record: Mapping[str, Any]) -> None:
        atomic_write_text(self.path(str(record["config_hash"])),
                          json.dumps(record, allow_nan=True) + "\n", fsync=False)


def run_tasks(tasks: Sequence[PointTask], store: PointStore,
              backend: SerialBackend | PoolBackend | RayBackend, *,
              on_record: Callable[[PointTask, dict[str, Any]], None] | None = None
              ) -> tuple[dict[str, dict[str, Any]], int]:
    """Records of ``tasks`` (by hash): from the store, or run on ``backend`` and stored.

    Each task (unique hash) runs at most once; a record is stored as soon as it arrives.

    Returns:
        ``(records by config hash, number of points run now)``.
    """
    records: dict[str, dict[str, Any]] = {}
    todo: dict[str, PointTask] = {}
    for t in tasks:
        if t.config_hash in records or t.config_hash in todo:
            continue
        found = store.get(t.config_hash)
        if found is not None:
            records[t.config_hash] = found
        else:
            todo[t.config_hash] = t
    store.directory.mkdir(parents=True, exist_ok=True)
    ran = 0
    for task, record in backend.imap_unordered(run_point, list(todo.values())):
        store.put(record)
        records[task.config_hash] = record
        ran += 1
        if on_record is not None:
            on_record(task, record)
    return records, ran


# --------------------------------------------------------------------------- table
def _column(values: list[Any]) -> list[Any]:
    """A swept key's values as one parquet-able column: scalars of one kind, else JSON text."""
    kinds = {type(v) for v in values if v is not None}
    if kinds <= {int} or kinds <= {int, float} or kinds <= {str} or kinds <= {bool}:
        return values
    return [None if v is None else json.dumps(v, sort_keys=True) for v in values]


def sweep_table(points: Sequence[PlannedPoint], records: Mapping[str, Mapping[str, Any]],
                axes: Sequence[str]) -> pd.DataFrame:
    """One row per point: ``point``, the axes, the metrics, ``error``, ``wall_s``,
    ``cpu_s``, ``config_hash`` (metric columns: :mod:`llmsim.sweep.point`)."""
    import pandas as pd

    metric_names: list[str] = []
    for p in points:
        m = records[p.task.config_hash].get("metrics") or {}
        metric_names += [k for k in m if k not in metric_names]
    data: dict[str, list[Any]] = {"point": [p.index for p in points]}
    for a in axes:
        data[a] = _column([p.values.get(a) for p in points])
    for name in metric_names:
        data[name] = [(records[p.task.config_hash].get("metrics") or {}).get(name)
                      for p in points]
    data["error"] = [records[p.task.config_hash].get("error") for p in points]
    data["wall_s"] = [records[p.task.config_hash].get("wall_s") for p in points]
    data["cpu_s"] = [records[p.task.config_hash].get("cpu_s") for p in points]
    data["config_hash"] = [p.task.config_hash for p in points]
    df = pd.DataFrame(data)
    for name in metric_names:
        if df[name].dtype == object and df[name].map(lambda v: v is None or isinstance(
                v, int | float) and not isinstance(v, bool)).all():
            df[name] = df[name].astype("float64")
    if df["error"].isna().all():
        df["error"] = df["error"].astype("string")
    return df


def write_results(out_dir: Path, table: pd.DataFrame, axes: Sequence[str],
                  info: Mapping[str, Any], *, plots: bool = True) -> Path:
    """Publish ``table`` (Parquet, CSV), its plots and ``info`` as ``out_dir`` atomically.

    Raises:
        ConfigError: ``out_dir`` is not something llmsim may replace, or cannot be written.
    """
    tmp = temp_dir_next_to(out_dir)
    try:
        table.to_parquet(tmp / "results.parquet", index=False)
        table.to_csv(tmp / "results.csv", index=False)
        if plots:
            from llmsim.sweep.plots import plot_axes

            plot_axes(table, axes, tmp / "plots")
        (tmp / "sweep.json").write_text(json.dumps(info, indent=2, sort_keys=True,
                                                   default=str) + "\n")
        return publish_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def check_sweep_dir(out_dir: Path, *, kind: str = "sweep") -> None:
    """Refuse an output directory that is neither missing, empty nor a sweep's/search's.

    Raises:
        ConfigError: a file, or a non-empty directory without ``sweep.json`` of this schema.
    """
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise ConfigError("exists and is not a directory; remove it or choose another --out",
                          path=out_dir, field="output_dir")
    if not any(out_dir.iterdir()):
        return
    try:
        marker = json.loads((out_dir / SWEEP_MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        marker = None
    if not (isinstance(marker, dict) and marker.get("schema") == SWEEP_SCHEMA
            and marker.get("kind", "sweep") == kind):
        raise ConfigError(f"exists and is not an llmsim {kind} directory (no {SWEEP_MARKER}); "
                          "remove it or choose another --out", path=out_dir, field="output_dir")


def start_dir(out_dir: Path, marker: Mapping[str, Any], *, kind: str = "sweep") -> PointStore:
    """Check ``out_dir``, mark it, drop a previous ``results/``; the point store in it."""
    check_sweep_dir(out_dir, kind=kind)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / SWEEP_MARKER, json.dumps(
        {"schema": SWEEP_SCHEMA, "kind": kind, **marker}, indent=2, sort_keys=True,
        default=str) + "\n")
    results = out_dir / RESULTS_DIR
    if (results / MANIFEST_NAME).is_file():  # a previous table: regenerable from points/
        shutil.rmtree(results)
    elif results.exists():
        raise ConfigError("holds a results entry llmsim did not write; remove it",
                          path=results, field="output_dir")
    return PointStore(out_dir / POINTS_DIR)


# --------------------------------------------------------------------------- sweep
@dataclass(frozen=True, slots=True, kw_only=True)
class SweepResult:
    """What :func:`run_sweep` did.

    Attributes:
        table: the results table (one row per point).
        out_dir: the sweep directory; the table is in ``out_dir / "results"``.
        num_points: points of the sweep.
        num_run: points replayed now.
        num_reused: points whose record was already stored (a resumed sweep).
        num_failed: points whose replay raised an llmsim error (``error`` column).
        wall_s: host time of the whole sweep (planning, points, table and plots), s.
        workers: parallel workers used.
    """

    table: pd.DataFrame
    out_dir: Path
    num_points: int
    num_run: int
    num_reused: int
    num_failed: int
    wall_s: float
    workers: int
    backend: str = field(default="local")


def default_out_dir(spec: Any, kind: str) -> Path:
    """The spec's ``output_dir``, or ``out/<kind>es/<name>`` (``out/sweeps/NAME``)."""
    if spec.output_dir is not None:
        return Path(str(spec.output_dir))
    name: str = spec.name
    return Path("out") / ("sweeps" if kind == "sweep" else "searches") / name


def run_sweep(spec: SweepSpec, *, out_dir: str | Path | None = None,
              backend: BackendKind | str = BackendKind.LOCAL, workers: int | None = None,
              address: str | None = None, plots: bool = True,
              on_record: Callable[[PointTask, dict[str, Any]], None] | None = None
              ) -> SweepResult:
    """Run every point of ``spec`` not yet stored, then publish the results table.

    Args:
        spec: the sweep (:func:`llmsim.sweep.spec.load_sweep`).
        out_dir: the sweep directory (default: :func:`default_out_dir`).
        backend: ``local`` (process pool), ``ray`` or ``serial``.
        workers: parallel workers (default: the CPUs available; Ray on a cluster: its CPUs).
        address: an existing Ray cluster (ray backend only).
        plots: also draw the PNG plots.
        on_record: called in the driver after each point's record is stored.

    Raises:
        ConfigError: a bad point (see :func:`plan_sweep`), an output directory that is not a
            sweep's, a backend that cannot start.
    """
    t0 = time.perf_counter()
    out = Path(out_dir) if out_dir is not None else default_out_dir(spec, "sweep")
    points = plan_sweep(spec)
    pool = open_backend(backend, workers=workers, address=address)
    store = start_dir(out, {"name": spec.name, "experiment": str(spec.experiment)})
    with pool:
        records, ran = run_tasks([p.task for p in points], store, pool, on_record=on_record)
    table = sweep_table(points, records, spec.axes)
    failed = int(table["error"].notna().sum())
    unique = len({p.task.config_hash for p in points})
    info = {"name": spec.name, "experiment": str(spec.experiment), "source": str(spec.source),
            "axes": spec.axes, "set": dict(spec.common),
            "slo": spec.slo.as_dict() if spec.slo else None, "num_points": len(points),
            "num_unique_configs": unique, "num_failed": failed}
    write_results(out / RESULTS_DIR, table, spec.axes, info, plots=plots)
    wall = time.perf_counter() - t0
    return SweepResult(table=table, out_dir=out, num_points=len(points), num_run=ran,
                       num_reused=unique - ran, num_failed=failed, wall_s=wall,
                       workers=pool.workers, backend=str(BackendKind(backend)))
