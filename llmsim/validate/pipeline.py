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
from llmsim.errors import ConfigError
from llmsim.validate.compare import Comparison, compare
from llmsim.validate.match import Workload, check_match
from llmsim.validate.measured import MeasuredRun, load_measured
from llmsim.validate.report import ReportFiles, write_report

__all__ = ["ValidationRun", "default_out_dir", "engine_notes", "measured_of", "resolve_measured", "validate_experiment",
           "workload_of"]

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
        uncertainty: bands and sensitivities (``llmsim.validate.uncertainty.Uncertainty``),
            or None when not requested.
    """

    comparison: Comparison
    result: Any
    files: ReportFiles | None
    uncertainty: Any = None


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
            notes.append(f"engine setting differs from the measured run: {attr}={ours!r} here, "
                         f"{key}={measured!r} measured")
    return notes


def default_out_dir(experiment: Any) -> Path:
    """``<output_dir>/validation`` of the experiment, else ``out/validate-<name>``."""
    out = getattr(experiment, "output_dir", None)
    if out:
        return Path(out) / "validation"
    return Path("out") / f"validate-{getattr(experiment, 'name', 'experiment')}"


def workload_of(experiment: Any, trace: Any) -> Workload:
    """The experiment's workload and model name, for :func:`~llmsim.validate.match.check_match`."""
    from llmsim.model.config import load_model_config

    reqs = trace.requests
    return Workload(request_ids=tuple(r.request_id for r in reqs),
                    input_tokens=tuple(r.input_tokens for r in reqs),
                    output_tokens=tuple(r.output_tokens for r in reqs),
                    model=load_model_config(experiment.model_path).name)


def measured_of(experiment: Any, measured: str | Path | MeasuredRun | None) -> MeasuredRun:
    """``measured`` loaded, or the experiment's ``measured:`` run when it is None.

    Raises:
        ConfigError: neither given (field ``measured``).
        DataNotFoundError, MeasuredRunError: missing or malformed.
    """
    if measured is None:
        measured = getattr(experiment, "measured_path", None)
        if measured is None:
            raise ConfigError("no measured run: pass --measured or set measured: in the experiment",
                              path=getattr(experiment, "source", None), field="measured")
    return measured if isinstance(measured, MeasuredRun) else load_measured(resolve_measured(measured))


def validate_experiment(
    experiment_path: str | Path,
    measured: str | Path | MeasuredRun | None = None,
    *,
    out_dir: str | Path | None = None,
    write: bool = True,
    overrides: dict[str, Any] | None = None,
    progress: bool = False,
    bands: int = 0,
    sensitivity: bool = False,
    seed: int = 0,
) -> ValidationRun:
    """Replay an experiment and compare it with a measured run.

    Args:
        experiment_path: experiment YAML.
        measured: measured run (path as for :func:`resolve_measured`, or already loaded);
            None: the experiment's ``measured:``.
        out_dir: report directory; default :func:`default_out_dir`.
        write: write the report (False: compare only).
        overrides: dotted experiment overrides (``{"overheads.cpu_step_ns": 0}``).
        progress: progress bar during the replay.
        bands: Monte Carlo replays for the 90% bands (0: none; :mod:`llmsim.validate.uncertainty`).
        sensitivity: also run the one-at-a-time sensitivity replays.
        seed: seed of the Monte Carlo replays.

    Raises:
        DataNotFoundError: the measured run or an experiment input is missing.
        MeasuredRunError: the measured run is malformed, or served another model or another
            workload (request count, a request's token counts); checked before the replay.
        ConfigError: the experiment is invalid, names no measured run when none is given, or
            ``out_dir`` is not something llmsim may replace (a file, a device, a directory
            llmsim did not write) or cannot be written; checked before the replay.
    """
    from llmsim.experiment import load_experiment
    from llmsim.replay import load_experiment_trace
    from llmsim.replay import run as replay

    if measured is not None:  # data problems first, clearly (before the experiment's)
        measured = measured_of(None, measured)
    experiment = load_experiment(experiment_path, overrides)
    run = measured_of(experiment, measured)
    target = Path(out_dir) if out_dir else default_out_dir(experiment)
    if write:
        check_output_target(target)  # refuse a file / foreign directory before the replay
    trace = load_experiment_trace(experiment)
    notes = check_match(run, workload_of(experiment, trace))
    engine = engine_notes(experiment, run.engine)
    for note in engine:
        logger.warning(note)
    # The step log is always kept: the comparison reads each request's engine pick-up (first
    # schedule() after its arrival) from it when the measured run counts from the engine queue.
    result = replay(experiment, trace=trace, progress=progress, keep_steps=True)
    comparison = compare(run, result, name=getattr(experiment, "name", ""), notes=[*notes, *engine])
    uncertainty = None
    if bands or sensitivity:
        from llmsim.validate.uncertainty import estimate_uncertainty

        uncertainty = estimate_uncertainty(experiment, run, comparison, trace=trace, samples=bands,
                                           sensitivity=sensitivity, seed=seed)
    files = write_report(comparison, target, uncertainty=uncertainty) if write else None
    return ValidationRun(comparison=comparison, result=result, files=files, uncertainty=uncertainty)
