"""Routers: which instance serves a request (see :mod:`llmsim.router.base`)."""

from llmsim.router.base import (
    ROUTERS,
    InstanceView,
    LeastLoaded,
    RoundRobin,
    Router,
    RouterPolicy,
    make_router,
)

__all__ = ["ROUTERS", "InstanceView", "LeastLoaded", "RoundRobin", "Router", "RouterPolicy",
           "make_router"]
