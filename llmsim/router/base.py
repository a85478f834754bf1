"""Request routing across instances.

A router is anything with ``route(request, instances) -> index``; it sees each instance
through :class:`InstanceView` (read-only load figures) and must be deterministic. Policies
are chosen by :class:`RouterPolicy` through :data:`ROUTERS`, one plain mapping.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from enum import StrEnum
from typing import Protocol, runtime_checkable

from llmsim.errors import ConfigError
from llmsim.trace.record import Request


@runtime_checkable
class InstanceView(Protocol):
    """What a router may read about an instance."""

    @property
    def instance_id(self) -> int: ...

    @property
    def num_running(self) -> int: ...

    @property
    def num_waiting(self) -> int: ...

    def kv_usage(self) -> float: ...


@runtime_checkable
class Router(Protocol):
    """Chooses the instance a request goes to."""

    def route(self, request: Request, instances: Sequence[InstanceView]) -> int:
        """Index (into ``instances``) of the instance that serves ``request``."""
        ...


class RoundRobin:
    """Instances in turn, in arrival order."""

    def __init__(self) -> None:
        self._next = 0

    def route(self, request: Request, instances: Sequence[InstanceView]) -> int:
        i = self._next % len(instances)
        self._next = i + 1
        return i


class LeastLoaded:
    """The instance with the fewest running + waiting requests (ties: lowest index)."""

    def route(self, request: Request, instances: Sequence[InstanceView]) -> int:
        best, best_load = 0, None
        for i, inst in enumerate(instances):
            load = inst.num_running + inst.num_waiting
            if best_load is None or load < best_load:
                best, best_load = i, load
        return best


class RouterPolicy(StrEnum):
    """Routing policies by name."""

    ROUND_ROBIN = "round_robin"
    LEAST_LOADED = "least_loaded"
    VLLM_DP = "vllm_dp"


def _vllm_dp() -> Router:
    from llmsim.router.dp import DPLoadBalancer  # dp imports this module

    return DPLoadBalancer()


ROUTERS: dict[RouterPolicy, Callable[[], Router]] = {
    RouterPolicy.ROUND_ROBIN: RoundRobin,
    RouterPolicy.LEAST_LOADED: LeastLoaded,
    RouterPolicy.VLLM_DP: _vllm_dp,
}
"""Policy -> router factory. ``vllm_dp``: vLLM's DP load balancer over every instance
(:class:`llmsim.router.dp.DPLoadBalancer`); it is also what a DP deployment
(``data_parallel_size > 1``) uses inside, whatever the top-level policy."""


def make_router(name: str | RouterPolicy) -> Router:
    """Build a router by policy name.

    Raises:
        ConfigError: unknown policy.
    """
    try:
        policy = RouterPolicy(str(name))
    except ValueError:
        known = ", ".join(p.value for p in RouterPolicy)
        raise ConfigError(f"unknown router {name!r} (known: {known})", field="router") from None
    return ROUTERS[policy]()
