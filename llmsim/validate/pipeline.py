"""One validation end to end: measured run + experiment -> replay -> comparison -> report.

Used by ``llmsim validate`` and by the accuracy benchmark. The measured path is taken as given
when it exists, else looked up in the data directories (``LLMSIM_DATA_DIR``, user cache).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmsim.data import dataset_path
from llmsim.data.atomic import check_output_target
from llmsim.validate.compare import Comparison, compare
from llmsim.validate.measured import MeasuredRun, load_measured
from llmsim.validate.report import ReportFiles, write_report

__all__ = ["ValidationRun", "default_out_dir", "engine_notes", "resolve_measured", "validate_experiment"]

logger = logging.getLogger(__name__)

# measured-run key -> experiment engine attribute, where the names differ
_ENGINE_ALIASES = {"num_gpu_blocks": "num_gpu_blocks_override"}


@dataclass(frozen=True, slots=True, kw_only=True)
class ValidationRun:
    """What one validation produced.

    Attributes:
        comparison: the metric-by-metric comparison.
        result: the simulated run (``llmsim.replay.ReplayResult``).
        files: the written report, or None when no output directory was requested.
    """

    comparison: Comparison
    result: Any
    files: ReportFiles | None


def resolve_measured(path: str | Path) -> Path:
    """The measured path as given if it exists, else inside the data dirs.

    Raises:
        DataNotFoundError: neither exists (names the dataset and the download command).
    """
    p = Path(path).expanduser()
    if p.exists():
        return p
    return dataset_path(str(path))


def engine_notes(experiment: Any, engine: dict[str, Any]) -> list[str]:
    """A note for every engine setting the measured run recorded that the experiment contradicts.

    Settings the experiment leaves at "engine default" (None or an empty capture list) are not
    compared.
    """
    exp_engine = getattr(experiment, "engine", None)
    if exp_engine is None:
        return []
    notes = []
    for key, measured in engine.items():
        attr = _ENGINE_ALIASES.get(key, key)
        ours = exp_engine.get(attr) if isinstance(exp_engine, dict) else getattr(exp_engine, attr, None)
        if ours is None or (isinstance(ours, tuple | list) and not ours):
            continue
        if isinstance(ours, tuple | list):
            ours = list(ours)
        if ours != measured:
            notes.append(f"engine setting differs from the measured run: {attr}={ours!r} here, {key}={measured!r} measured")
    return notes


def default_out_dir(experiment: Any) -> Path:
    """``<output_dir>/validation`` of the experiment, else ``out/validate-<name>``."""
    out = getattr(experiment, "output_dir", None)
    if out:
        return Path(out) / "validation"
    return Path("out") / f"validate-{getattr(experiment, 'name', 'experiment')}"


def validate_experiment(
    experiment_path: str | Path,
    measured: str | Path | MeasuredRun,
    *,
    out_dir: str | Path | None = None,
    write: bool = True,
    overrides: dict[str, Any] | None = None,
    progress: bool = False,
) -> ValidationRun:
    """Replay an experiment and compare it with a measured run.

    Args:
        experiment_path: experiment YAML.
        measured: measured run (path as for :func:`resolve_measured`, or already loaded).
        out_dir: report directory; default :func:`default_out_dir`.
        write: write the report (False: compare only).
        overrides: dotted experiment overrides (``{"overheads.cpu_step_ns": 0}``).
        progress: progress bar during the replay.

    Raises:
        DataNotFoundError: the measured run or an experiment input is missing.
        MeasuredRunError: the measured run is malformed or does not match the replay.
        ConfigError: the experiment is invalid, or ``out_dir`` is not something llmsim may
            replace (a file, a device, a directory llmsim did not write) or cannot be written;
            checked before the replay.
    """
    run = measured if isinstance(measured, MeasuredRun) else load_measured(resolve_measured(measured))
    from llmsim.experiment import load_experiment
    from llmsim.replay import run as replay

    experiment = load_experiment(experiment_path, overrides)
    target = Path(out_dir) if out_dir else default_out_dir(experiment)
    if write:
        check_output_target(target)  # refuse a file / foreign directory before the replay
    notes = engine_notes(experiment, run.engine)
    for note in notes:
        logger.warning(note)
    result = replay(experiment, progress=progress)
    comparison = compare(run, result, name=getattr(experiment, "name", ""), notes=notes)
    files = write_report(comparison, target) if write else None
    return ValidationRun(comparison=comparison, result=result, files=files)
