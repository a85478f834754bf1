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
from llmsim.router.dp import DeploymentRouter, DPLoadBalancer
from llmsim.router.views import InstanceSnapshot, ReadOnlyRouter, SnapshotViews

__all__ = ["ROUTERS", "DPLoadBalancer", "DeploymentRouter", "InstanceSnapshot", "InstanceView",
           "LeastLoaded", "ReadOnlyRouter", "RoundRobin", "Router", "RouterPolicy", "SnapshotViews",
           "make_router"]
