"""Metrics: the recorder (hot path) and the end-of-run summary."""

from llmsim.metrics.recorder import (
    REQUEST_COLUMNS,
    STEP_COLUMNS,
    TIMESERIES_COLUMNS,
    Recorder,
)
from llmsim.metrics.summary import distribution, summarize

__all__ = ["REQUEST_COLUMNS", "STEP_COLUMNS", "TIMESERIES_COLUMNS", "Recorder", "distribution",
           "summarize"]
