"""SCALE-Sim bridge server: systolic-array GEMM costs, roofline for the other operators.

SCALE-Sim needs numpy < 2.3 (through numba), so it runs from its own virtualenv::

    adapters/scalesim/setup_env.sh                 # creates .venv-scalesim
    .venv-scalesim/bin/python -m adapters.scalesim \\
        --array adapters/scalesim/configs/systolic-32x32.yaml --port 0

or ``llmsim bridge serve scalesim --array ... --port 0`` (which starts that interpreter).
Results persist in a SQLite table (``--results``), so each GEMM shape is simulated once.
"""

from adapters.scalesim.config import ArrayConfig, load_array_config
from adapters.scalesim.coster import ScaleSimCoster
from adapters.scalesim.runner import GemmSim, ResultTable, ScaleSimRunner

__all__ = ["ArrayConfig", "GemmSim", "ResultTable", "ScaleSimCoster", "ScaleSimRunner",
           "load_array_config"]
