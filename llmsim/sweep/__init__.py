"""Sweeps and capacity searches over one base experiment.

* :func:`load_sweep` / :func:`run_sweep`: a grid or list of overrides -> one results table
  (Parquet, CSV, plots), each point keyed by its config hash so that an interrupted sweep
  resumes (:mod:`llmsim.sweep.runner`, :mod:`llmsim.sweep.point`).
* :func:`load_search` / :func:`run_search`: the highest request rate, or the fewest
  instances, that meets an SLO (:mod:`llmsim.sweep.search`).
* Backends: local process pool (default), Ray, serial (:mod:`llmsim.sweep.backends`).
"""

from llmsim.sweep.backends import BackendKind, open_backend
from llmsim.sweep.runner import SweepResult, plan_sweep, run_sweep
from llmsim.sweep.spec import SloConfig, SweepSpec, load_sweep

__all__ = ["BackendKind", "SloConfig", "SweepResult", "SweepSpec", "load_sweep", "open_backend",
           "plan_sweep", "run_sweep"]
