"""The Python API: build or load an experiment, replay it, compare it with a measured run.

Everything here is re-exported by ``import llmsim``::

    import llmsim
    trace = llmsim.generate_trace(n=100, rate_per_s=5.0, lengths={"input": 512, "output": 128})
    exp = llmsim.Experiment(model_path="model.json", profile_path="profile.pb",
                            hardware=llmsim.HardwareConfig(gpu_memory_bytes=80 * 2**30),
                            trace=trace)
    result = llmsim.run(exp)            # ReplayResult; result.requests is a DataFrame

An experiment built in code gets exactly the defaults of an experiment file (one config
layer, :mod:`llmsim.experiment`); its trace may live in memory. Results are pandas
DataFrames (``requests``, ``timeseries``, ``steps``, and :func:`itls_frame`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from llmsim.errors import ConfigError
from llmsim.experiment import Experiment, load_experiment
from llmsim.trace.record import Trace

if TYPE_CHECKING:
    from llmsim.costmodel.base import CostModel
    from llmsim.replay import ReplayResult
    from llmsim.validate.measured import MeasuredRun
    from llmsim.validate.pipeline import ValidationRun

__all__ = ["experiment_trace", "itls_frame", "run", "validate", "write_vllm_bench"]


def _experiment(experiment: Experiment | str | Path,
                overrides: Mapping[str, Any] | None) -> Experiment:
    if isinstance(experiment, Experiment):
        if overrides:
            raise ConfigError("overrides apply to experiment files; build the Experiment with "
                              "the values instead (or use dataclasses.replace)", field="overrides")
        return experiment
    return load_experiment(experiment, overrides)


def experiment_trace(experiment: Experiment) -> Trace:
    """The experiment's requests, transforms applied (in-memory trace or trace file).

    Raises:
        ConfigError, TraceFormatError, DataNotFoundError: as the trace loaders and
            :func:`llmsim.trace.apply_transforms`.
    """
    cfg = experiment.trace
    if cfg.requests is None:
        from llmsim.replay import load_experiment_trace

        return load_experiment_trace(experiment)
    if not cfg.transforms:
        return cfg.requests
    from llmsim.trace.transforms import apply_transforms

    return apply_transforms(cfg.requests, list(cfg.transforms))  # a Trace for a Trace


def run(experiment: Experiment | str | Path, *, overrides: Mapping[str, Any] | None = None,
        cost_model: CostModel | None = None, progress: bool = False,
        keep_steps: bool = False, exact_steps: bool = False) -> ReplayResult:
    """Replay an experiment (an :class:`Experiment` or the path of an experiment file).

    Args:
        experiment: the experiment, or its YAML file.
        overrides: dotted key -> value, for a YAML file only (``{"engine.max_num_seqs": 64}``).
        cost_model: a cost model to use instead of the experiment's (any object with
            ``step_cost(StepBatch) -> StepCost``).
        progress: show a progress bar.
        keep_steps: keep the per-step log (``result.steps``; ``None`` otherwise).
        exact_steps: simulate every engine step one by one (no decode fast-forward; the
            outputs are identical).

    Returns:
        The :class:`~llmsim.replay.ReplayResult` (``requests``, ``timeseries``, ``steps``
        DataFrames, ``summary`` dict).

    Raises:
        ConfigError, TraceFormatError, ProfileError, DataNotFoundError: bad inputs.
        InvariantError: the simulation broke an invariant (a bug).
    """
    from llmsim.replay import run as replay

    exp = _experiment(experiment, overrides)
    trace = experiment_trace(exp) if exp.trace.requests is not None else None
    return replay(exp, trace=trace, cost_model=cost_model, progress=progress,
                  keep_steps=keep_steps, exact_steps=exact_steps)


def validate(experiment: Experiment | str | Path,
             measured: str | Path | MeasuredRun | None = None, *,
             out_dir: str | Path | None = None, overrides: Mapping[str, Any] | None = None,
             progress: bool = False) -> ValidationRun:
    """Replay an experiment and compare it with a measured deployment.

    Args:
        experiment: the experiment, or its YAML file.
        measured: a vLLM run directory, a ``vllm bench serve`` result JSON, or a loaded
            :class:`~llmsim.validate.MeasuredRun`; default the experiment's ``measured``.
        out_dir: write the report (``report.md``, ``report.json``, plots) there; None: don't.
        overrides: dotted key -> value, for a YAML file only.
        progress: show a progress bar during the replay.

    Returns:
        :class:`~llmsim.validate.pipeline.ValidationRun` (``comparison``, ``result``,
        ``files``).

    Raises:
        ConfigError: no measured run given or named by the experiment; bad experiment.
        DataNotFoundError, MeasuredRunError: the measured run is missing or malformed, or
            served another model or workload (checked before the replay).
    """
    from llmsim.validate import MeasuredRun, compare, load_measured, write_report
    from llmsim.validate.pipeline import ValidationRun, engine_notes, resolve_measured

    exp = _experiment(experiment, overrides)
    if measured is None:
        if exp.measured_path is None:
            raise ConfigError("no measured run: pass one or set measured: in the experiment",
                              path=exp.source, field="measured")
        measured = exp.measured_path
    run_m = measured if isinstance(measured, MeasuredRun) else load_measured(
        resolve_measured(measured))
    from llmsim.replay import run as replay
    from llmsim.validate.match import check_match
    from llmsim.validate.pipeline import workload_of

    trace = experiment_trace(exp)  # refuse another model / workload before the replay
    notes = check_match(run_m, workload_of(exp, trace)) + engine_notes(exp, run_m.engine)
    # the comparison reads each request's engine pick-up from the step log
    result = replay(exp, trace=trace, progress=progress, keep_steps=True)
    comparison = compare(run_m, result, name=exp.name, notes=notes)
    files = write_report(comparison, out_dir) if out_dir is not None else None
    return ValidationRun(comparison=comparison, result=result, files=files)


def itls_frame(result: ReplayResult) -> pd.DataFrame:
    """The inter-token latencies of a replay as one long DataFrame.

    Returns:
        Columns ``request_id``, ``token_index`` (1-based: the gap before output token
        ``token_index``, counting the first token as 0), ``itl_s`` (s); one row per gap,
        requests in trace order.
    """
    ids = result.requests["request_id"].to_numpy()
    lens = [len(a) for a in result.itls_s]
    if not lens or sum(lens) == 0:
        return pd.DataFrame({"request_id": pd.Series([], dtype=object),
                             "token_index": pd.Series([], dtype=np.int64),
                             "itl_s": pd.Series([], dtype=np.float64)})
    return pd.DataFrame({
        "request_id": np.repeat(ids, lens),
        "token_index": np.concatenate([np.arange(1, n + 1) for n in lens]),
        "itl_s": np.concatenate(result.itls_s),
    })


def write_vllm_bench(result: ReplayResult, path: str | Path, *, experiment: Experiment,
                     trace: Trace | None = None) -> Path:
    """Write a replay as a ``vllm bench serve --save-result --save-detailed`` JSON.

    Fields and formulas: :mod:`llmsim.metrics.vllm_bench`. ``model_id`` is the experiment's
    model name; the request rate, burstiness and concurrency limit come from the trace's
    metadata when a workload spec generated it.

    Args:
        result: the replay of ``experiment``.
        path: the ``.json`` file (written atomically).
        experiment: the replayed experiment.
        trace: the replayed trace (default: the experiment's, loaded again).

    Raises:
        ConfigError: the file cannot be written; errors of the trace loaders when ``trace``
            is None.
    """
    from llmsim.metrics.vllm_bench import write_vllm_bench as write
    from llmsim.model.config import load_model_config

    trace = experiment_trace(experiment) if trace is None else trace
    return write(result, path, model_id=load_model_config(experiment.model_path).name,
                 metadata=trace.metadata)
