"""vLLM production-stack's routers: session affinity, prefix-aware, KV-aware.

Mirrors ``github.com/vllm-project/production-stack`` (commit a6c01db, Aug 2026),
``src/vllm_router/routers/routing_logic.py``, ``parsers/parser.py``,
``stats/request_stats.py``, ``prefix/hashtrie.py`` (facts only; docs/cluster-semantics.md,
"Routing across instances"):

* **QPS fallback** (``RoutingInterface._qps_routing``): an endpoint that has no request
  stats yet wins at once (first in list order), else the lowest QPS (first on ties). QPS =
  requests the router sent to the endpoint in the sliding window / window,
  ``--request-stats-window`` 60 s. These are router-side counts, not scraped metrics.
* **session** (``SessionRouter``): a consistent hash ring over the endpoints maps the
  request's session id (``--session-key`` header or body field) to an endpoint; no session
  id -> QPS fallback. production-stack uses ``uhashring.HashRing``; llmsim's ring is its
  own (MD5 of ``"<instance>-<k>"``, 160 points per instance, an assumption), so *which*
  instance a given session lands on differs, not the property (stable, spread evenly).
* **prefixaware** (``PrefixAwareRouter``): a trie of prompt chunks (128 *characters*,
  xxhash) keyed to the endpoints that were sent each chunk; the longest match wins, a
  random endpoint among those holding it; below ``--prefix-min-match-length`` (default 0)
  -> QPS fallback; the prompt is then inserted for the chosen endpoint. No eviction
  ("we assume that there is no eviction of prefix cache").
* **kvaware** (``KvawareRouter``): asks the LMCache controller which instance holds the
  longest prefix of the request's tokens; uses it when ``matched >= len(tokens) -
  threshold`` (``--kv-aware-threshold`` 2000), else the session / QPS fallback.

Deliberate differences, stated: chunks are 32 tokens (128 characters at llm-d's 4
characters per token) of the trace's token or prefix-block ids, as chained block hashes
(:func:`llmsim.router.llmd.prefix_hashes`), and match lengths are in tokens, not
characters. The KV-aware router's "LMCache controller" is each instance's own GPU prefix
cache, read live (LMCache workers report admissions and evictions as they happen): the
block-aligned longest prefix cached there. The router's clock is the request's
``arrival_ns`` kept non-decreasing (as :class:`llmsim.router.dp.DPLoadBalancer`).
"""

from __future__ import annotations

import bisect
import hashlib
import random
from collections import deque
from collections.abc import Sequence
from typing import Any

from llmsim.errors import ConfigError
from llmsim.router.base import InstanceView
from llmsim.router.llmd import prefix_hashes
from llmsim.trace.record import Request

__all__ = ["KV_AWARE_THRESHOLD_TOKENS", "PREFIX_CHUNK_TOKENS", "QPS_WINDOW_NS",
           "RING_POINTS_PER_INSTANCE", "HashRing", "KvAwareRouter", "PrefixAwareRouter",
           "QpsStats", "SessionRouter"]

NS_PER_S = 1_000_000_000

QPS_WINDOW_NS = 60 * NS_PER_S
"""Sliding window of the router's request stats, ns (``--request-stats-window`` 60 s)."""

KV_AWARE_THRESHOLD_TOKENS = 2000
"""``--kv-aware-threshold``: a KV match is used when it covers all but at most this many
prompt tokens."""

PREFIX_CHUNK_TOKENS = 32
"""Prefix-aware chunk, tokens: production-stack's 128-character chunk at 4 characters per
token (llm-d's ``averageCharactersPerToken``; an assumption: llmsim has no text)."""

RING_POINTS_PER_INSTANCE = 160
"""Points of each instance on llmsim's consistent hash ring (an assumption; module doc)."""


def _ring_hash(key: str) -> int:
    return int.from_bytes(hashlib.md5(key.encode(), usedforsecurity=False).digest()[:8],
                          "big")


class HashRing:
    """A consistent hash ring over ``num_nodes`` nodes (module doc)."""

    def __init__(self, num_nodes: int, points: int = RING_POINTS_PER_INSTANCE) -> None:
        ring = sorted((_ring_hash(f"{n}-{k}"), n) for n in range(num_nodes)
                      for k in range(points))
        self._keys = [h for h, _ in ring]
        self._nodes = [n for _, n in ring]

    def node(self, key: str) -> int:
        """The node owning ``key``: the first ring point at or after its hash."""
        i = bisect.bisect_left(self._keys, _ring_hash(key))
        return self._nodes[i % len(self._nodes)]


class QpsStats:
    """Requests the router sent to each endpoint in the sliding window (module doc).

    Args:
        window_ns: the window, ns (> 0).
    """

    def __init__(self, window_ns: int = QPS_WINDOW_NS) -> None:
        if window_ns <= 0:
            raise ConfigError(f"QPS window must be > 0 ns, got {window_ns}",
                              field="router.qps_window_ns")
        self.window_ns = window_ns
        self._sent: dict[int, deque[int]] = {}
        self.now_ns = 0

    def tick(self, request: Request) -> int:
        """Advance the clock to the request's arrival (never backwards); the time."""
        self.now_ns = max(self.now_ns, request.arrival_ns)
        return self.now_ns

    def record(self, pod: int) -> None:
        """Count a request sent to ``pod`` now."""
        self._sent.setdefault(pod, deque()).append(self.now_ns)

    def qps(self, pod: int) -> float | None:
        """Requests per second to ``pod`` in the window; None if it never got one."""
        q = self._sent.get(pod)
        if q is None:
            return None
        lo = self.now_ns - self.window_ns
        while q and q[0] < lo:
            q.popleft()
        return len(q) * NS_PER_S / self.window_ns

    def lowest(self, views: Sequence[InstanceView]) -> int:
        """Index of the view with no stats yet (first), else of the lowest QPS (first)."""
        best, best_q = 0, None
        for i, v in enumerate(views):
            q = self.qps(v.instance_id)
            if q is None:
                return i
            if best_q is None or q < best_q:
                best, best_q = i, q
        return best


class SessionRouter:
    """production-stack ``session``: a hash ring on the session id, else lowest QPS.

    Args:
        window_ns: QPS window.
        log: if given, receives ``(time_ns, ("route", pod, "session"|"qps"))``.
    """

    def __init__(self, window_ns: int = QPS_WINDOW_NS,
                 log: list[tuple[int, tuple[object, ...]]] | None = None) -> None:
        self.stats = QpsStats(window_ns)
        self.log = log
        self._rings: dict[int, HashRing] = {}

    def _session(self, request: Request, views: Sequence[InstanceView]) -> int | None:
        if request.session_id is None:
            return None
        n = len(views)
        ring = self._rings.get(n)
        if ring is None:
            ring = self._rings[n] = HashRing(n)
        return ring.node(request.session_id)

    def _done(self, i: int, views: Sequence[InstanceView], how: str) -> int:
        pod = views[i].instance_id
        self.stats.record(pod)
        if self.log is not None:
            self.log.append((self.stats.now_ns, ("route", pod, how)))
        return i

    def route(self, request: Request, instances: Sequence[InstanceView]) -> int:
        """Index (into ``instances``) of the session's instance (or the lowest QPS)."""
        self.stats.tick(request)
        i = self._session(request, instances)
        if i is None:
            return self._done(self.stats.lowest(instances), instances, "qps")
        return self._done(i, instances, "session")


class _Trie:
    """Chunk-hash chains -> the pods sent each prefix (no eviction, as production-stack)."""

    def __init__(self) -> None:
        self._pods: dict[int, set[int]] = {}

    def longest(self, hashes: Sequence[int], pods: set[int]) -> tuple[int, set[int]]:
        """``(chunks matched, pods holding that prefix)`` among ``pods``."""
        held, n = set(pods), 0
        for h in hashes:
            here = self._pods.get(h)
            if here is None:
                break
            nxt = held & here
            if not nxt:
                break
            held, n = nxt, n + 1
        return n, held

    def insert(self, hashes: Sequence[int], pod: int) -> None:
        for h in hashes:
            self._pods.setdefault(h, set()).add(pod)


class PrefixAwareRouter:
    """production-stack ``prefixaware`` (module doc).

    Args:
        min_match_tokens: ``--prefix-min-match-length`` in tokens (default 0).
        chunk_tokens: tokens per chunk.
        window_ns: QPS window of the fallback.
        seed: seed of the random choice among the endpoints holding the match.
        log: if given, receives ``(time_ns, ("route", pod, matched_tokens))``.
    """

    def __init__(self, min_match_tokens: int = 0, *, chunk_tokens: int = PREFIX_CHUNK_TOKENS,
                 window_ns: int = QPS_WINDOW_NS, seed: int = 0,
                 log: list[tuple[int, tuple[object, ...]]] | None = None) -> None:
        if min_match_tokens < 0 or chunk_tokens < 1:
            raise ConfigError("prefix-aware: min match must be >= 0 and chunk >= 1 tokens",
                              field="router")
        self.min_match_tokens = min_match_tokens
        self.chunk_tokens = chunk_tokens
        self.stats = QpsStats(window_ns)
        self._trie = _Trie()
        self._rng = random.Random(seed)
        self.log = log

    def route(self, request: Request, instances: Sequence[InstanceView]) -> int:
        """Index (into ``instances``) of an instance holding the longest prefix."""
        self.stats.tick(request)
        hashes = prefix_hashes(request, self.chunk_tokens, max_blocks=2**31)
        pods = [v.instance_id for v in instances]
        n, held = self._trie.longest(hashes, set(pods))
        matched = n * self.chunk_tokens
        if n == 0 or matched < self.min_match_tokens:
            i = self.stats.lowest(instances)
        else:
            choices = [k for k, p in enumerate(pods) if p in held]
            i = choices[self._rng.randrange(len(choices))]
        self._trie.insert(hashes, pods[i])
        self.stats.record(pods[i])
        if self.log is not None:
            self.log.append((self.stats.now_ns, ("route", pods[i], matched)))
        return i


class KvAwareRouter:
    """production-stack ``kvaware`` over the instances' live prefix caches (module doc).

    Args:
        threshold_tokens: ``--kv-aware-threshold``.
        window_ns: QPS window of the fallback.
        log: if given, receives ``(time_ns, ("route", pod, matched_tokens))``.

    The live instances are bound by :meth:`bind_instances` (replay does it; until then
    every request takes the fallback).
    """

    def __init__(self, threshold_tokens: int = KV_AWARE_THRESHOLD_TOKENS, *,
                 window_ns: int = QPS_WINDOW_NS,
                 log: list[tuple[int, tuple[object, ...]]] | None = None) -> None:
        if threshold_tokens < 0:
            raise ConfigError("kv-aware threshold must be >= 0 tokens",
                              field="router.kv_aware_threshold_tokens")
        self.threshold_tokens = threshold_tokens
        self.fallback = SessionRouter(window_ns)
        self.log = log
        self._live: Sequence[Any] = ()

    def bind_instances(self, instances: Sequence[Any]) -> None:
        """The live instances whose prefix caches stand in for the LMCache controller."""
        self._live = instances

    def cached_tokens(self, request: Request, instance_id: int) -> int:
        """Block-aligned prompt tokens of ``request`` cached on the instance now."""
        if instance_id >= len(self._live):
            return 0
        kv = self._live[instance_id].scheduler.kv
        if not kv.enable_prefix_caching:
            return 0
        bs: int = kv.block_size
        lookup = kv.pool.lookup
        n = 0
        for h in prefix_hashes(request, bs, max_blocks=2**31):
            if lookup(h) is None:
                break
            n += 1
        return n * bs

    def route(self, request: Request, instances: Sequence[InstanceView]) -> int:
        """Index of the instance holding the longest cached prefix when it covers enough
        of the prompt, else the session / QPS fallback's choice."""
        now = self.fallback.stats.tick(request)
        best, best_tokens = -1, 0
        for i, v in enumerate(instances):
            t = self.cached_tokens(request, v.instance_id)
            if t > best_tokens:
                best, best_tokens = i, t
        if best >= 0 and best_tokens >= max(request.input_tokens - self.threshold_tokens, 0):
            self.fallback.stats.record(instances[best].instance_id)
            if self.log is not None:
                self.log.append((now, ("route", instances[best].instance_id, best_tokens)))
            return best
        i = self.fallback.route(request, instances)
        if self.log is not None:
            self.log.append((now, ("route", instances[i].instance_id, 0)))
        return i
