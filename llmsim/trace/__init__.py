"""Request traces: the normalized record every loader produces."""

from llmsim.trace.record import Request, Trace

__all__ = ["Request", "Trace"]
