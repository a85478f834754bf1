"""llmsim: trace-replay co-simulation of LLM serving infrastructure.

Pipeline: trace -> router -> instance scheduler -> batch -> cost model -> metrics -> report.

The public Python API (see :mod:`llmsim.api`)::

    Experiment, EngineConfig, HardwareConfig, TraceConfig, StepOverheads   configuration
    load_experiment(path, overrides)                                      read a YAML file
    run(experiment) -> ReplayResult                                       replay
    validate(experiment, measured) -> ValidationRun                       replay + compare
    generate_trace(n=..., rate_per_s=...), Trace, TraceFrame, load_trace  workloads
    itls_frame(result)                                                    ITLs as a DataFrame
    LlmsimError and its subclasses                                        errors

Names other than the exceptions are imported on first use, so ``import llmsim`` (and the
``llmsim`` command) stays fast. ``llmsim.validate`` is the function; the subpackage of the
same name is imported as ``from llmsim.validate import compare, load_measured, ...``.
"""

from __future__ import annotations

import importlib
import sys
import types
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmsim.errors import (
    ConfigError,
    CostModelUnavailable,
    DataNotFoundError,
    DownloadError,
    InvariantError,
    LlmsimError,
    MeasuredRunError,
    ProfileError,
    ProfileRangeError,
    TraceFormatError,
)

if TYPE_CHECKING:
    from collections.abc import Mapping

    from llmsim.api import experiment_trace, itls_frame, run
    from llmsim.experiment import (
        EngineConfig,
        Experiment,
        HardwareConfig,
        TraceConfig,
        load_experiment,
    )
    from llmsim.instance.step_time import StepOverheads
    from llmsim.replay import ReplayResult
    from llmsim.trace import Trace, TraceFrame, generate_trace, load_trace
    from llmsim.validate.measured import MeasuredRun
    from llmsim.validate.pipeline import ValidationRun

__version__ = "0.1.0"

_LAZY: dict[str, str] = {
    "Experiment": "llmsim.experiment",
    "EngineConfig": "llmsim.experiment",
    "HardwareConfig": "llmsim.experiment",
    "TraceConfig": "llmsim.experiment",
    "load_experiment": "llmsim.experiment",
    "StepOverheads": "llmsim.instance.step_time",
    "ReplayResult": "llmsim.replay",
    "run": "llmsim.api",
    "itls_frame": "llmsim.api",
    "experiment_trace": "llmsim.api",
    "generate_trace": "llmsim.trace",
    "load_trace": "llmsim.trace",
    "Trace": "llmsim.trace",
    "TraceFrame": "llmsim.trace",
}

__all__ = [
    "ConfigError",
    "CostModelUnavailable",
    "DataNotFoundError",
    "DownloadError",
    "EngineConfig",
    "Experiment",
    "HardwareConfig",
    "InvariantError",
    "LlmsimError",
    "MeasuredRunError",
    "ProfileError",
    "ProfileRangeError",
    "ReplayResult",
    "StepOverheads",
    "Trace",
    "TraceConfig",
    "TraceFormatError",
    "TraceFrame",
    "__version__",
    "experiment_trace",
    "generate_trace",
    "itls_frame",
    "load_experiment",
    "load_trace",
    "run",
    "validate",
]


def validate(experiment: Experiment | str | Path,
             measured: str | Path | MeasuredRun | None = None, *,
             out_dir: str | Path | None = None, overrides: Mapping[str, Any] | None = None,
             progress: bool = False) -> ValidationRun:
    """Replay an experiment and compare it with a measured run (:func:`llmsim.api.validate`)."""
    from llmsim.api import validate as _validate

    return _validate(experiment, measured, out_dir=out_dir, overrides=overrides,
                     progress=progress)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'llmsim' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


class _Package(types.ModuleType):
    """Keeps ``llmsim.validate`` the function when the ``llmsim.validate`` subpackage loads.

    Importing a submodule sets it as an attribute of its parent package; this one name is
    already taken by the API function, so that assignment is skipped (the subpackage stays in
    ``sys.modules`` and ``from llmsim.validate import ...`` works as usual).
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "validate" and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
