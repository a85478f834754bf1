"""Request traces: loaders, transforms, generators and statistics.

Every loader produces the normalized :class:`Request` (one per request) inside a
:class:`Trace`; the columnar :class:`TraceFrame` is the same data for million-row traces
(materialize with :meth:`TraceFrame.to_trace` when replaying).

Formats (``load_trace(fmt, path, **options)``): ``llmservingsim``, ``azure``, ``mooncake``,
``burstgpt``, ``qwen_bailian``, ``vidur``, ``csv``. Every loader takes ``skip_bad_rows`` and
``sort``; malformed input raises :class:`llmsim.errors.TraceFormatError` with file, line and
field.
"""

from llmsim.trace.frame import TraceFrame
from llmsim.trace.generators import ArrivalProcess, generate_trace
from llmsim.trace.llmservingsim import load_llmservingsim
from llmsim.trace.record import Request, Trace
from llmsim.trace.registry import TraceFormat, detect_format, load_trace, load_trace_frame
from llmsim.trace.stats import TraceStats, ideal_prefix_reuse, trace_stats
from llmsim.trace.transforms import apply_transforms

__all__ = [
    "ArrivalProcess",
    "Request",
    "Trace",
    "TraceFormat",
    "TraceFrame",
    "TraceStats",
    "apply_transforms",
    "detect_format",
    "generate_trace",
    "ideal_prefix_reuse",
    "load_llmservingsim",
    "load_trace",
    "load_trace_frame",
    "trace_stats",
]
