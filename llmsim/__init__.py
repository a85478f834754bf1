"""llmsim: trace-replay co-simulation of LLM serving infrastructure.

Pipeline: trace -> router -> instance scheduler -> batch -> cost model -> metrics -> report.
"""

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

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "CostModelUnavailable",
    "DataNotFoundError",
    "DownloadError",
    "InvariantError",
    "LlmsimError",
    "MeasuredRunError",
    "ProfileError",
    "ProfileRangeError",
    "TraceFormatError",
    "__version__",
]
