"""Metrics scraped at an interval: what a real router reads instead of live state.

A cluster router does not see an engine's queue as it is now: it reads the engine's
Prometheus metrics (``vllm:num_requests_waiting``, ``vllm:num_requests_running``,
``vllm:kv_cache_usage_perc``) as last scraped. llm-d's EPP polls every endpoint every
50 ms (``defaultRefreshInterval``, ``pkg/epp/datalayer/runtime.go`` of
llm-d-inference-scheduler); production-stack's engine-stats scraper every 30 s
(``--engine-stats-interval``, ``src/vllm_router/parsers/parser.py``; its session /
prefix-aware / KV-aware routers do not read those stats).

:class:`MetricsScraper` takes an :class:`~llmsim.router.views.InstanceSnapshot` of every
instance at ``0, I, 2I, ...`` (the one at 0 before any event) (an event of the loop, :meth:`Simulation.register_event`,
after every other event of the same instant: a scrape at ``t`` sees the steps that start at
``t``). :class:`ScrapedRouter` gives its policy those snapshots, never the live figures, so
a decision between two scrapes uses the last one (requests routed since are not counted:
the EPP's metrics-based scorers do not count them either). Scraping stops once every
request has been routed (:meth:`MetricsScraper.install`'s ``pending``); the last scrape may
then be the run's last event when the last request finishes within one interval of the
last routing decision (its time is the run's end time).

Scrape events bound decode fast-forward (:mod:`llmsim.instance.fastforward`) to one
interval; the outputs are the same either way.

:func:`install_routing` wires a replay's routers to the simulation: scrapers, the live
instances of the KV-aware router, and llm-d's P/D decider.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from llmsim.errors import ConfigError, InvariantError
from llmsim.router.base import InstanceView, Router
from llmsim.router.llmd import LlmdRouter, PrefixPdDecider
from llmsim.router.views import InstanceSnapshot
from llmsim.trace.record import Request

if TYPE_CHECKING:
    from llmsim.pd.flow import PdFlow
    from llmsim.sim.loop import Simulation

__all__ = ["LLMD_SCRAPE_INTERVAL_NS", "PSTACK_SCRAPE_INTERVAL_NS", "SCRAPE_PRIORITY",
           "MetricsScraper", "PdDeciderRouter", "ScrapedRouter", "install_routing"]

LLMD_SCRAPE_INTERVAL_NS = 50_000_000
"""llm-d EPP metrics refresh, ns (50 ms, ``defaultRefreshInterval``)."""

PSTACK_SCRAPE_INTERVAL_NS = 30_000_000_000
"""production-stack engine-stats scrape, ns (30 s, ``--engine-stats-interval``)."""

SCRAPE_PRIORITY = 35
"""Event priority of a scrape: after every core kind (step end 0, arrival 10, hand-off 20,
step start 30) and the P/D kinds (5, 15) of the same instant."""


class MetricsScraper:
    """Snapshots of every instance, refreshed every ``interval_ns`` (module doc).

    Args:
        interval_ns: scrape interval, ns (> 0).
        log: if given, receives ``(time_ns, ("scrape", ((waiting, running), ...)))``.

    Raises:
        ConfigError: ``interval_ns`` <= 0.
    """

    def __init__(self, interval_ns: int,
                 log: list[tuple[int, tuple[object, ...]]] | None = None) -> None:
        if interval_ns <= 0:
            raise ConfigError(f"scrape interval must be > 0 ns, got {interval_ns}",
                              field="router.scrape_interval_ns")
        self.interval_ns = interval_ns
        self.log = log
        self.snapshots: list[InstanceSnapshot] = []
        self.num_scrapes = 0
        self._instances: Sequence[InstanceView] = ()
        self._sim: Simulation | None = None
        self._kind = -1
        self._pending: Callable[[], bool] = lambda: True

    def scrape(self, instances: Sequence[InstanceView], now_ns: int) -> None:
        """Replace the snapshots with the instances' figures now."""
        self.snapshots = [InstanceSnapshot(instance_id=i, num_running=v.num_running,
                                           num_waiting=v.num_waiting,
                                           kv_usage_fraction=v.kv_usage())
                          for i, v in enumerate(instances)]
        self.num_scrapes += 1
        if self.log is not None:
            self.log.append((now_ns, ("scrape", tuple((s.num_waiting, s.num_running)
                                                      for s in self.snapshots))))

    def install(self, sim: Simulation, pending: Callable[[], bool] | None = None) -> None:
        """Scrape ``sim``'s instances now (time 0) and every interval while ``pending()`` (default:
        some request of the trace has not been released to an instance yet)."""
        if self._sim is not None:
            return
        self._sim = sim
        self._instances = sim.instances
        release = sim.recorder.release_ns
        self._pending = pending or (lambda: min(release, default=0) < 0)
        self._kind = sim.register_event("metrics scrape", SCRAPE_PRIORITY, self._on_scrape)
        self.scrape(self._instances, 0)  # the idle instances, before the first arrival
        sim.schedule(self.interval_ns, self._kind, None)

    def _on_scrape(self, _payload: object, now_ns: int) -> None:
        self.scrape(self._instances, now_ns)
        if self._sim is not None and self._pending():
            self._sim.schedule(now_ns + self.interval_ns, self._kind, None)

    def views(self, instances: Sequence[InstanceView]) -> list[InstanceSnapshot]:
        """The last snapshots of ``instances`` (by ``instance_id``).

        Raises:
            InvariantError: no scrape yet (the scraper was not installed).
        """
        snaps = self.snapshots
        if not snaps:
            raise InvariantError("scraped router used before its scraper was installed")
        return [snaps[v.instance_id] for v in instances]


class ScrapedRouter:
    """Gives ``inner`` the scraper's last snapshots of the candidates (module doc).

    Args:
        inner: the routing policy.
        scraper: where the snapshots come from.
    """

    def __init__(self, inner: Router, scraper: MetricsScraper) -> None:
        self.inner = inner
        self.scraper = scraper

    def route(self, request: Request, instances: Sequence[InstanceView]) -> int:
        """Index (into ``instances``) chosen by ``inner`` from the last scrape."""
        return self.inner.route(request, self.scraper.views(instances))


def _walk(router: object) -> Iterator[object]:
    """``router`` and every router it wraps (``inner`` / ``top`` attributes)."""
    seen: set[int] = set()
    stack = [router]
    while stack:
        r = stack.pop()
        if r is None or id(r) in seen:
            continue
        seen.add(id(r))
        yield r
        for name in ("inner", "top"):
            stack.append(getattr(r, name, None))


class PdDeciderRouter:
    """The arrival hop of llm-d's P/D flow: pick the decode instance first, then decide
    (:class:`~llmsim.router.llmd.PrefixPdDecider`) whether a prefill instance runs the
    prompt (the request goes there, its decode instance fixed) or the decode instance
    runs it locally (the request goes there as an ordinary request).

    Args:
        flow: the P/D flow (its prefill and decode pool routers).
        decoder: the llm-d policy of the decode pool (its last pick's prefix match).
        decider: the threshold rule.
        log: if given, receives ``(arrival_ns, ("pd", request_id, decode, prefill or -1))``.
    """

    def __init__(self, flow: PdFlow, decoder: LlmdRouter, decider: PrefixPdDecider,
                 log: list[tuple[int, tuple[object, ...]]] | None = None) -> None:
        self.flow = flow
        self.decoder = decoder
        self.decider = decider
        self.log = log
        self.num_local = 0
        self.num_disaggregated = 0

    def route(self, request: Request, instances: Sequence[InstanceView]) -> int:
        """Instance id the request goes to first."""
        d = self.flow.decode_router.route(request, instances)
        last = self.decoder.last
        match = last.pick_match_blocks if last is not None and last.pod == d else 0
        if self.decider.disaggregate(request.input_tokens, match):
            p = self.flow.prefill_router.route(request, instances)
            self.flow.assign_decode(request.request_id, d)
            self.num_disaggregated += 1
        else:
            p = -1
            self.num_local += 1
        if self.log is not None:
            self.log.append((request.arrival_ns, ("pd", request.request_id, d, p)))
        return d if p < 0 else p


def install_routing(sim: Simulation, router_config: Any = None,
                    pd_flow: PdFlow | None = None) -> None:
    """Wire the replay's routers to ``sim``: install every scraper, bind the live
    instances of KV-aware routers, and (P/D with ``router_config.pd_decider``) replace the
    arrival hop by :class:`PdDeciderRouter`.

    Raises:
        ConfigError: a P/D decider without P/D roles, or with a decode policy other than
            llm-d's ("not supported yet").
    """
    roots: list[object] = [sim.router]
    if pd_flow is not None:
        roots += [pd_flow.prefill_router, pd_flow.decode_router]
    shared: MetricsScraper | None = None  # one scrape serves every router (one event kind)
    for root in roots:
        for r in _walk(root):
            if isinstance(r, ScrapedRouter):
                if shared is None:
                    shared = r.scraper
                    shared.install(sim)
                elif r.scraper.interval_ns != shared.interval_ns:
                    raise InvariantError("routers of one run scrape at different intervals")
                else:
                    r.scraper = shared
            bind = getattr(r, "bind_instances", None)
            if callable(bind):
                bind(sim.instances)
    cfg = getattr(router_config, "pd_decider", None)
    if cfg is None:
        return
    if pd_flow is None:
        raise ConfigError("router.pd_decider needs prefill/decode instance roles "
                          "(instance_groups[i].role)", field="router.pd_decider")
    decoder = next((r for r in _walk(pd_flow.decode_router) if isinstance(r, LlmdRouter)),
                   None)
    if decoder is None:
        raise ConfigError("not supported yet: router.pd_decider with a policy other than "
                          "llm_d (the decider reads llm-d's prefix match)",
                          field="router.pd_decider")
    decider = PrefixPdDecider(cfg.non_cached_tokens, decoder.prefix_block_size)
    sim.router = PdDeciderRouter(pd_flow, decoder, decider)
