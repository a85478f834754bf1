"""Request routing across instances.

A router is anything with ``route(request, instances) -> index``; it sees each instance
through :class:`InstanceView` (read-only load figures) and must be deterministic. Policies
are chosen by :class:`RouterPolicy` through :data:`ROUTERS`, one plain mapping.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

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
    LLM_D = "llm_d"  # llm-d EPP: weighted scorers + max-score picker (llmsim.router.llmd)
    SESSION = "session"  # production-stack session affinity (llmsim.router.pstack)
    PREFIX_AWARE = "prefix_aware"  # production-stack prefixaware
    KV_AWARE = "kv_aware"  # production-stack kvaware


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


class RouterSettings(Protocol):
    """What :func:`make_router` reads of a router configuration
    (:class:`llmsim.experiment.RouterConfig`; every field has its default there)."""

    @property
    def policy(self) -> RouterPolicy: ...


def scrape_interval_ns(spec: object) -> int:
    """Metrics scrape interval of a router configuration, ns; 0: the policy reads live
    figures (round robin, least loaded, vLLM's DP balancer, production-stack's routers,
    which read no engine metrics) unless ``scrape_interval_ns`` says otherwise; llm-d:
    50 ms (:data:`llmsim.router.scrape.LLMD_SCRAPE_INTERVAL_NS`)."""
    from llmsim.router.scrape import LLMD_SCRAPE_INTERVAL_NS

    given = getattr(spec, "scrape_interval_ns", None)
    if given is not None:
        return int(given)
    policy = getattr(spec, "policy", None)
    return LLMD_SCRAPE_INTERVAL_NS if policy is RouterPolicy.LLM_D else 0


def _configured(policy: RouterPolicy, spec: Any) -> Router:
    """The policy of a router configuration (defaults: the fields' own)."""
    from llmsim.router import llmd, pstack

    if policy is RouterPolicy.LLM_D:
        weights = {llmd.Scorer.QUEUE: spec.queue_weight,
                   llmd.Scorer.KV_CACHE_UTILIZATION: spec.kv_cache_utilization_weight,
                   llmd.Scorer.PREFIX_CACHE: spec.prefix_cache_weight,
                   llmd.Scorer.LOAD_AWARE: spec.load_aware_weight}
        return llmd.LlmdRouter(
            weights, load_aware_threshold=spec.load_aware_threshold,
            prefix_block_size=spec.prefix_block_size,
            prefix_max_blocks=spec.prefix_max_blocks,
            prefix_lru_capacity_per_pod=spec.prefix_lru_capacity_per_pod,
            seed=spec.seed)
    if policy is RouterPolicy.SESSION:
        return pstack.SessionRouter(spec.qps_window_ns)
    if policy is RouterPolicy.PREFIX_AWARE:
        return pstack.PrefixAwareRouter(spec.prefix_min_match_tokens,
                                        chunk_tokens=spec.prefix_chunk_tokens,
                                        window_ns=spec.qps_window_ns,
                                        seed=spec.seed)
    if policy is RouterPolicy.KV_AWARE:
        return pstack.KvAwareRouter(spec.kv_aware_threshold_tokens,
                                    window_ns=spec.qps_window_ns)
    return ROUTERS[policy]()


def make_router(name: str | RouterPolicy | RouterSettings, *, scraped: bool = True
                ) -> Router:
    """Build a router by policy name or from a router configuration.

    A configured policy that reads scraped metrics (:func:`scrape_interval_ns` > 0) is
    wrapped in a :class:`llmsim.router.scrape.ScrapedRouter` (unless ``scraped`` is
    False: the caller wraps it), installed on the simulation by
    :func:`llmsim.router.scrape.install_routing`.

    Raises:
        ConfigError: unknown policy.
    """
    spec: object = None
    if not isinstance(name, str):  # RouterPolicy is a str too
        spec, name = name, name.policy
    try:
        policy = RouterPolicy(str(name))
    except ValueError:
        known = ", ".join(p.value for p in RouterPolicy)
        raise ConfigError(f"unknown router {name!r} (known: {known})", field="router") from None
    if spec is None:
        if policy in _NEEDS_CONFIG:
            from llmsim.experiment import RouterConfig

            spec = RouterConfig(policy=policy)
        else:
            return ROUTERS[policy]()
    router = _configured(policy, spec)
    interval = scrape_interval_ns(spec)
    if scraped and interval > 0:
        from llmsim.router.scrape import MetricsScraper, ScrapedRouter

        return ScrapedRouter(router, MetricsScraper(interval))
    return router


_NEEDS_CONFIG = frozenset({RouterPolicy.LLM_D, RouterPolicy.SESSION, RouterPolicy.PREFIX_AWARE,
                           RouterPolicy.KV_AWARE})
