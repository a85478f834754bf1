"""Validation of a simulated replay against a measured deployment.

Pipeline: :func:`load_measured` (vLLM run directory or ``vllm bench`` result JSON) ->
:func:`compare` (latency statistics, paired per-request errors, time series, run totals,
LLMServingSim 2.0's published errors side by side) -> :func:`write_report` (``report.md``,
``report.json``, plots; atomic).
"""

from llmsim.validate.compare import (
    Comparison,
    MetricRow,
    PairedError,
    SeriesComparison,
    TotalRow,
    compare,
)
from llmsim.validate.measured import (
    MeasuredFormat,
    MeasuredRun,
    ReferenceMetric,
    load_measured,
)
from llmsim.validate.report import ReportFiles, format_table, report_dict, write_report

__all__ = [
    "Comparison",
    "MeasuredFormat",
    "MeasuredRun",
    "MetricRow",
    "PairedError",
    "ReferenceMetric",
    "ReportFiles",
    "SeriesComparison",
    "TotalRow",
    "compare",
    "format_table",
    "load_measured",
    "report_dict",
    "write_report",
]
