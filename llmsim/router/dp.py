"""vLLM's data-parallel load balancer, and routing over DP deployments.

A deployment with ``data_parallel_size = N`` is one vLLM server whose front-end spreads
requests over N engines (DP ranks). vLLM 0.19 (``vllm/v1/engine/core_client.py``
``DPLBAsyncMPClient.get_core_engine_for_request``; docs/cluster-semantics.md, "Data parallelism") does this:

* each engine has a ``[waiting, running]`` pair in the front-end; its score is
  ``4 x waiting + running`` (not normalised by ``max_num_seqs``);
* the scan starts at the API server's fixed ``eng_start_index = dp x client_index //
  client_count`` (it does not rotate) and a strict ``<`` keeps the first minimum;
* the chosen engine's local ``waiting`` is incremented by ``client_count`` at once;
* the pairs are replaced whenever the DP coordinator publishes: every >= 100 ms when the
  counts changed, else every 5 s. Only MoE DP engines (``DPEngineCoreProc``) report counts
  to the coordinator; dense DP engines are plain ``EngineCoreProc`` and never do, so for a
  dense model the front-end sees only its own increments, and the coordinator's 5 s
  publication resets them to zeros. Dense DP is therefore round robin from the start index,
  restarting at the start index after every 5 s publication.

:class:`DPLoadBalancer` mirrors that with ``publishes_counts=False`` (dense, the default).
With ``publishes_counts=True`` (MoE DP, :mod:`llmsim.sim.lockstep`) the pairs are replaced
by the engines' true counts at the first routing decision at or after each 100 ms
publication time (the counts are read then, not at the publication instant).

Modelling choices, stated: one API server (``client_index = 0``, ``client_count = 1``; vLLM
defaults ``api_server_count`` to ``dp``, and which API server a connection lands on is
decided by the kernel, which llmsim does not model); coordinator publications at multiples
of the interval on the trace clock (its phase relative to the first request is unknown); the
decision time of a request is its ``arrival_ns`` (the router is not given the clock), kept
non-decreasing, so a session turn released later than its trace arrival is decided at its
arrival time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from llmsim.errors import ConfigError
from llmsim.router.base import InstanceView, Router
from llmsim.router.views import InstanceSnapshot
from llmsim.trace.record import Request

__all__ = ["DP_IDLE_PUBLISH_INTERVAL_NS", "DP_PUBLISH_INTERVAL_NS", "DPLoadBalancer",
           "DeploymentRouter", "InstanceSnapshot"]

DP_PUBLISH_INTERVAL_NS = 100_000_000
"""Shortest interval between two publications of the DP coordinator when counts change,
ns (vLLM ``DPCoordinatorProc``: 100 ms; docs/cluster-semantics.md, "Data parallelism")."""

DP_IDLE_PUBLISH_INTERVAL_NS = 5_000_000_000
"""Interval of the coordinator's publication when counts did not change, ns (5 s;
docs/cluster-semantics.md, "Data parallelism")."""

WAITING_WEIGHT = 4
"""Weight of a waiting request in the DP score ``4 x waiting + running`` (vLLM
``DPLBAsyncMPClient``)."""


class DPLoadBalancer:
    """vLLM's DP front-end balancer over one deployment's engines (see the module doc).

    As the ``vllm_dp`` router policy it balances over all of the experiment's instances as
    one front-end would (``num_ranks`` None: taken from the first decision).

    Args:
        num_ranks: DP ranks (engines); None: the number of instances it is first given.
        start_index: the API server's fixed scan start (vLLM ``eng_start_index``).
        client_count: API servers (each routed request adds this to the local waiting).
        publishes_counts: engines report their counts (MoE DP); False for dense DP.
        log: if given, receives ``(time_ns, event)`` tuples: ``("publish", counts)`` when
            the coordinator's publication replaces the counts, ``("route", rank, scores)``
            for each decision (scores before the increment).

    Raises:
        ConfigError: ``num_ranks`` < 1, ``client_count`` < 1, ``start_index`` outside
            ``[0, num_ranks)`` (at the first decision when ``num_ranks`` is None), or a
            decision among another number of instances.
    """

    def __init__(self, num_ranks: int | None = None, *, start_index: int = 0,
                 client_count: int = 1, publishes_counts: bool = False,
                 log: list[tuple[int, tuple[object, ...]]] | None = None) -> None:
        self.start_index = start_index
        self.client_count = client_count
        self.publishes_counts = publishes_counts
        self.log = log
        self._counts: list[list[int]] = []  # [waiting, running] per rank
        self.num_ranks = 0
        if num_ranks is not None:
            self._set_ranks(num_ranks)
        elif client_count < 1 or start_index < 0:
            self._set_ranks(0)
        self._now_ns = 0
        self._interval_ns = (DP_PUBLISH_INTERVAL_NS if publishes_counts
                             else DP_IDLE_PUBLISH_INTERVAL_NS)
        self._next_publish_ns = self._interval_ns

    def _set_ranks(self, num_ranks: int) -> None:
        start, clients = self.start_index, self.client_count
        if num_ranks < 1 or clients < 1 or not 0 <= start < num_ranks:
            raise ConfigError(f"DP balancer: {num_ranks} ranks, start {start}, "
                              f"{clients} clients", field="engine.data_parallel_size")
        self.num_ranks = num_ranks
        self._counts = [[0, 0] for _ in range(num_ranks)]

    def _publish(self, now_ns: int, ranks: Sequence[InstanceView]) -> None:
        if now_ns < self._next_publish_ns:
            return
        if self.publishes_counts:
            self._counts = [[r.num_waiting, r.num_running] for r in ranks]
        else:
            self._counts = [[0, 0] for _ in range(self.num_ranks)]
        self._next_publish_ns = (now_ns // self._interval_ns + 1) * self._interval_ns
        if self.log is not None:
            self.log.append((now_ns, ("publish", tuple(map(tuple, self._counts)))))

    def route(self, request: Request, instances: Sequence[InstanceView]) -> int:
        """Index of the rank (into ``instances``, one per rank) that serves ``request``."""
        if not self.num_ranks:  # built without a rank count: all the router's instances
            self._set_ranks(len(instances))
        elif len(instances) != self.num_ranks:
            raise ConfigError(f"DP balancer of {self.num_ranks} ranks asked to choose among "
                              f"{len(instances)}", field="engine.data_parallel_size")
        now_ns = max(self._now_ns, request.arrival_ns)
        self._now_ns = now_ns
        self._publish(now_ns, instances)
        counts, n = self._counts, self.num_ranks
        best, best_score = self.start_index, None
        for k in range(n):
            i = (self.start_index + k) % n
            score = WAITING_WEIGHT * counts[i][0] + counts[i][1]
            if best_score is None or score < best_score:
                best, best_score = i, score
        if self.log is not None:
            scores = tuple(WAITING_WEIGHT * w + r for w, r in counts)
            self.log.append((now_ns, ("route", best, scores)))
        counts[best][0] += self.client_count
        return best


class DeploymentRouter:
    """Routes to a deployment with the experiment's policy, then to one of its DP ranks.

    The policy sees one :class:`InstanceSnapshot` per deployment (its engines' counts
    summed, KV use averaged); a deployment of several ranks then asks its own
    :class:`DPLoadBalancer`.

    Args:
        top: the policy over deployments.
        deployments: per deployment, the instance indices of its ranks (in rank order).
        balancer: builds a deployment's balancer from its rank count.
        publishes_counts: per deployment, its engines publish their counts (MoE DP: a
            :class:`DPLoadBalancer` with ``publishes_counts=True``, overriding
            ``balancer``); None: none does.
    """

    def __init__(self, top: Router, deployments: Sequence[tuple[int, ...]],
                 balancer: Callable[[int], Router] = DPLoadBalancer, *,
                 publishes_counts: Sequence[bool] | None = None) -> None:
        self.top = top
        self.deployments = [tuple(d) for d in deployments]
        flags = list(publishes_counts) if publishes_counts is not None else (
            [False] * len(self.deployments))
        self.balancers: list[Router | None] = [
            None if len(d) <= 1 else DPLoadBalancer(len(d), publishes_counts=True) if pub
            else balancer(len(d)) for d, pub in zip(self.deployments, flags, strict=True)]

    def route(self, request: Request, instances: Sequence[InstanceView]) -> int:
        """Index (into ``instances``) of the engine that serves ``request``."""
        views = [InstanceSnapshot.of(d, [instances[i] for i in members])
                 for d, members in enumerate(self.deployments)]
        d = self.top.route(request, views)
        members = self.deployments[d]
        lb = self.balancers[d]
        if lb is None:
            return members[0]
        return members[lb.route(request, [instances[i] for i in members])]
