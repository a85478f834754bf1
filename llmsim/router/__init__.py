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
from llmsim.router.dp import DeploymentRouter, DPLoadBalancer, InstanceSnapshot

__all__ = ["ROUTERS", "DPLoadBalancer", "DeploymentRouter", "InstanceSnapshot", "InstanceView",
           "LeastLoaded", "RoundRobin", "Router", "RouterPolicy", "make_router"]
