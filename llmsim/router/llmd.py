"""llm-d's endpoint picker (EPP): weighted scorers, a max-score picker, the approximate
prefix-cache index and the prefix-based P/D decider.

Mirrors the llm-d inference scheduler (``github.com/llm-d/llm-d-inference-scheduler``,
commit 520af47, May 2026; docs/cluster-semantics.md, "Routing across instances"). Facts
taken from its source (no code copied):

* ``queue-scorer`` (``pkg/epp/framework/plugins/scheduling/scorer/queuedepth/queue.go``):
  ``(max_q - q_i) / (max_q - min_q)`` over the candidates, ``q`` = the scraped
  ``num_requests_waiting``; 1 for every candidate when all queues are equal.
* ``kv-cache-utilization-scorer`` (``scorer/kvcacheutilization/kvcache_utilization.go``):
  ``1 - kv_cache_usage``.
* ``load-aware-scorer`` (``scorer/loadaware/load_aware.go``): 0.5 for an empty queue, else
  ``0.5 * (1 - min(q, T) / T)``, ``T`` = 128 (``QueueThresholdDefault``).
* ``prefix-cache-scorer`` (``scorer/prefix/plugin.go``) over the approximate prefix index
  (``requestcontrol/dataproducer/approximateprefix/``): ``match_blocks / total_blocks``.
  The router hashes the prompt in 16-token blocks (``defaultBlockSizeTokens``), at most
  256 of them (``defaultMaxPrefixBlocks``), walks the chain while *some* pod holds the
  block and counts, per pod, the blocks it holds; after the pick it adds the request's
  blocks to the chosen pod's LRU (``PreRequest``), 31,250 blocks per pod
  (``defaultLRUCapacityPerServer``). It never sees vLLM's real cache: it remembers what it
  routed.
* weights, no config file (``pkg/epp/config/loader/defaults.go``): queue 2, KV-cache
  utilization 2, prefix cache 3; the score of a pod is the weighted sum.
* ``max-score-picker`` (``picker/maxscore/picker.go``): shuffle, then the highest score
  (a random pod among the ties).
* ``prefix-based-pd-decider`` (``profilehandler/disagg/prefix_based_pd_decider.go``):
  disaggregate (run the prefill on a prefill pod) only when the prompt has at least
  ``nonCachedTokens`` tokens *and* ``prompt - match_blocks x block_size`` (matched on the
  decode pod the decode profile chose) is at least ``nonCachedTokens``; 0 disables P/D.
  The shipped P/D config (``deploy/config/pd-epp-config.yaml``) uses 16, with prefix x2 +
  queue x1 per profile.

Deliberate differences, stated: llm-d hashes the request's *characters* (4 per token,
``averageCharactersPerToken``) and estimates the prompt length as characters / 4; llmsim
hashes the trace's token ids or prefix-block ids (:mod:`llmsim.kvcache.hashing`) in
16-token blocks and knows the prompt length, and leaves out a trailing partial block
(llm-d hashes it too). ``autoTune`` (block size and LRU capacity from the pod's reported
``CacheBlockSize`` / ``CacheNumBlocks``) is off: the configured figures are used. The
shuffle of the picker is a seeded generator (same inputs, same picks).
"""

from __future__ import annotations

import random
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from llmsim.errors import ConfigError
from llmsim.kvcache.hashing import BlockHasher, SequenceIds
from llmsim.router.base import InstanceView
from llmsim.trace.record import Request

__all__ = ["DEFAULT_SCORER_WEIGHTS", "LOAD_AWARE_QUEUE_THRESHOLD", "PD_NON_CACHED_TOKENS",
           "PREFIX_BLOCK_SIZE_TOKENS", "PREFIX_LRU_CAPACITY_PER_POD", "PREFIX_MAX_BLOCKS",
           "ApproxPrefixIndex", "LlmdRouter", "PrefixPdDecider", "Scorer", "prefix_hashes",
           "score_kv_cache_utilization", "score_load_aware", "score_queue"]


class Scorer(StrEnum):
    """llm-d scorer plugins by llmsim name (the plugin type in brackets)."""

    QUEUE = "queue"  # queue-scorer
    KV_CACHE_UTILIZATION = "kv_cache_utilization"  # kv-cache-utilization-scorer
    PREFIX_CACHE = "prefix_cache"  # prefix-cache-scorer (approximate)
    LOAD_AWARE = "load_aware"  # load-aware-scorer


DEFAULT_SCORER_WEIGHTS: Mapping[Scorer, float] = {
    Scorer.QUEUE: 2.0, Scorer.KV_CACHE_UTILIZATION: 2.0, Scorer.PREFIX_CACHE: 3.0}
"""Weights of the EPP without a config file (llm-d ``pkg/epp/config/loader/defaults.go``)."""

LOAD_AWARE_QUEUE_THRESHOLD = 128
"""Waiting requests at which the load-aware score reaches 0 (``QueueThresholdDefault``,
llm-d ``scorer/loadaware/load_aware.go``)."""

PREFIX_BLOCK_SIZE_TOKENS = 16
"""Tokens per block of the approximate prefix index (``defaultBlockSizeTokens``, llm-d
``dataproducer/approximateprefix/types.go``)."""

PREFIX_MAX_BLOCKS = 256
"""Most prompt blocks hashed per request (``defaultMaxPrefixBlocks``, same file)."""

PREFIX_LRU_CAPACITY_PER_POD = 31_250
"""Blocks remembered per pod (``defaultLRUCapacityPerServer``, same file)."""

PD_NON_CACHED_TOKENS = 16
"""``nonCachedTokens`` of the prefix-based P/D decider in llm-d's shipped P/D config
(``deploy/config/pd-epp-config.yaml``; the plugin's own default, 0, disables P/D)."""


# ------------------------------------------------------------------------ scorers
def score_queue(views: Sequence[InstanceView]) -> list[float]:
    """queue-scorer: min-max normalised waiting queue, per candidate in [0, 1]."""
    qs = [v.num_waiting for v in views]
    lo, hi = min(qs), max(qs)
    if hi == lo:
        return [1.0] * len(qs)
    return [(hi - q) / (hi - lo) for q in qs]


def score_kv_cache_utilization(views: Sequence[InstanceView]) -> list[float]:
    """kv-cache-utilization-scorer: ``1 - kv_usage`` per candidate."""
    return [1.0 - v.kv_usage() for v in views]


def score_load_aware(views: Sequence[InstanceView],
                     threshold: int = LOAD_AWARE_QUEUE_THRESHOLD) -> list[float]:
    """load-aware-scorer: 0.5 when nothing waits, else ``0.5 (1 - min(q, T) / T)``."""
    out = []
    for v in views:
        q = v.num_waiting
        out.append(0.5 if q == 0 else 0.5 * (1.0 - min(q, threshold) / threshold))
    return out


# ------------------------------------------------------------ approximate prefix
def prefix_hashes(request: Request, block_size: int = PREFIX_BLOCK_SIZE_TOKENS,
                  max_blocks: int = PREFIX_MAX_BLOCKS) -> list[int]:
    """Chained hashes of the request's full prompt blocks whose content the trace knows
    (token ids or prefix-block ids), at most ``max_blocks``; [] when it knows none."""
    if request.input_token_ids is not None:
        known = request.input_tokens
    elif request.block_hashes and request.hash_block_size > 0:
        known = min(request.input_tokens, len(request.block_hashes) * request.hash_block_size)
    else:
        return []
    n = min(known // block_size, max_blocks)
    if n <= 0:
        return []
    ids = SequenceIds(request_id=request.request_id, num_prompt_tokens=request.input_tokens,
                      token_ids=request.input_token_ids, block_hashes=request.block_hashes,
                      hash_block_size=request.hash_block_size)
    # salt 0: only blocks of known content are used, which do not depend on the salt
    return list(BlockHasher(ids, block_size, 0).ensure(n)[:n])


class ApproxPrefixIndex:
    """The router-side index of blocks it has routed: an LRU per pod and, per block, the
    pods holding it (llm-d ``approximateprefix/indexer.go``; module doc).

    Args:
        capacity_per_pod: blocks remembered per pod (LRU).

    Raises:
        ConfigError: ``capacity_per_pod`` < 1.
    """

    def __init__(self, capacity_per_pod: int = PREFIX_LRU_CAPACITY_PER_POD) -> None:
        if capacity_per_pod < 1:
            raise ConfigError(f"prefix LRU capacity must be >= 1, got {capacity_per_pod}",
                              field="router.prefix_lru_capacity_per_pod")
        self.capacity_per_pod = capacity_per_pod
        self._lru: dict[int, OrderedDict[int, None]] = {}
        self._pods: dict[int, set[int]] = {}

    def match(self, hashes: Sequence[int]) -> dict[int, int]:
        """Per pod, the blocks of the chain it holds, walking while some pod holds the
        block (llm-d ``matchLongestPrefix``)."""
        out: dict[int, int] = {}
        pods_of = self._pods
        for h in hashes:
            pods = pods_of.get(h)
            if not pods:
                break
            for p in pods:
                out[p] = out.get(p, 0) + 1
        return out

    def add(self, hashes: Sequence[int], pod: int) -> None:
        """Remember ``hashes`` on ``pod`` (most recent last), evicting its oldest blocks."""
        lru = self._lru.get(pod)
        if lru is None:
            lru = self._lru[pod] = OrderedDict()
        pods_of = self._pods
        for h in hashes:
            if h in lru:
                lru.move_to_end(h)
            else:
                lru[h] = None
                if len(lru) > self.capacity_per_pod:
                    old, _ = lru.popitem(last=False)
                    holders = pods_of.get(old)
                    if holders is not None:
                        holders.discard(pod)
                        if not holders:
                            del pods_of[old]
        for h in hashes:
            pods_of.setdefault(h, set()).add(pod)

    def num_blocks(self, pod: int) -> int:
        """Blocks remembered for ``pod``."""
        lru = self._lru.get(pod)
        return 0 if lru is None else len(lru)


# ------------------------------------------------------------------------ router
@dataclass(frozen=True, slots=True, kw_only=True)
class LlmdDecision:
    """One pick, for ``(time, event)`` logs and the P/D decider.

    Attributes:
        pod: ``instance_id`` of the chosen view.
        scores: weighted total per candidate (candidate order).
        match_blocks: prefix blocks matched per candidate (before the pick is recorded).
        total_blocks: prompt blocks hashed.
        pick_match_blocks: prefix blocks matched on the chosen pod.
    """

    pod: int
    scores: tuple[float, ...]
    match_blocks: tuple[int, ...]
    total_blocks: int
    pick_match_blocks: int


class LlmdRouter:
    """Weighted llm-d scorers and the max-score picker over scraped views (module doc).

    Pods are the views' ``instance_id`` (global instance ids, also inside a P/D pool).

    Args:
        weights: scorer -> weight (scorers absent or of weight 0 are not run).
        load_aware_threshold: ``T`` of the load-aware scorer.
        prefix_block_size: tokens per prefix block.
        prefix_max_blocks: most prompt blocks hashed.
        prefix_lru_capacity_per_pod: blocks remembered per pod.
        seed: seed of the picker's tie-breaking.
        log: if given, receives ``(arrival_ns, ("route", pod, scores))`` per decision.

    Raises:
        ConfigError: a negative weight, no scorer with a positive weight, or bad prefix
            figures.
    """

    def __init__(self, weights: Mapping[Scorer, float] | None = None, *,
                 load_aware_threshold: int = LOAD_AWARE_QUEUE_THRESHOLD,
                 prefix_block_size: int = PREFIX_BLOCK_SIZE_TOKENS,
                 prefix_max_blocks: int = PREFIX_MAX_BLOCKS,
                 prefix_lru_capacity_per_pod: int = PREFIX_LRU_CAPACITY_PER_POD,
                 seed: int = 0,
                 log: list[tuple[int, tuple[object, ...]]] | None = None) -> None:
        w = dict(DEFAULT_SCORER_WEIGHTS if weights is None else weights)
        if any(v < 0 for v in w.values()) or not any(v > 0 for v in w.values()):
            raise ConfigError(f"llm-d scorer weights must be >= 0 with one > 0, got {w}",
                              field="router.scorers")
        if load_aware_threshold < 1 or prefix_block_size < 1 or prefix_max_blocks < 1:
            raise ConfigError("llm-d load-aware threshold, prefix block size and prefix "
                              "max blocks must be >= 1", field="router")
        self.weights = {Scorer(k): float(v) for k, v in w.items() if v > 0}
        self.load_aware_threshold = load_aware_threshold
        self.prefix_block_size = prefix_block_size
        self.prefix_max_blocks = prefix_max_blocks
        self.index = ApproxPrefixIndex(prefix_lru_capacity_per_pod)
        self._rng = random.Random(seed)
        self.log = log
        self.last: LlmdDecision | None = None

    def route(self, request: Request, instances: Sequence[InstanceView]) -> int:
        """Index (into ``instances``) of the pod with the highest weighted score."""
        n = len(instances)
        totals = [0.0] * n
        pods = [v.instance_id for v in instances]
        hashes: list[int] = []
        matched = [0] * n
        for scorer, weight in self.weights.items():
            if scorer is Scorer.PREFIX_CACHE:
                hashes = prefix_hashes(request, self.prefix_block_size, self.prefix_max_blocks)
                m = self.index.match(hashes)
                matched = [m.get(p, 0) for p in pods]
                scores = ([k / len(hashes) for k in matched] if hashes else [0.0] * n)
            elif scorer is Scorer.QUEUE:
                scores = score_queue(instances)
            elif scorer is Scorer.KV_CACHE_UTILIZATION:
                scores = score_kv_cache_utilization(instances)
            else:
                scores = score_load_aware(instances, self.load_aware_threshold)
            for i in range(n):
                totals[i] += weight * scores[i]
        best = max(totals)
        ties = [i for i in range(n) if totals[i] == best]
        pick = ties[0] if len(ties) == 1 else ties[self._rng.randrange(len(ties))]
        if Scorer.PREFIX_CACHE in self.weights and hashes:
            self.index.add(hashes, pods[pick])
        self.last = LlmdDecision(pod=pods[pick], scores=tuple(totals),
                                 match_blocks=tuple(matched), total_blocks=len(hashes),
                                 pick_match_blocks=matched[pick])
        if self.log is not None:
            self.log.append((request.arrival_ns, ("route", pods[pick], tuple(totals))))
        return pick


class PrefixPdDecider:
    """llm-d's prefix-based P/D decider (module doc).

    Args:
        non_cached_tokens: the threshold; 0 never disaggregates (llm-d: "disabled").
        block_size: tokens per matched prefix block.

    Raises:
        ConfigError: a negative threshold.
    """

    def __init__(self, non_cached_tokens: int = PD_NON_CACHED_TOKENS,
                 block_size: int = PREFIX_BLOCK_SIZE_TOKENS) -> None:
        if non_cached_tokens < 0:
            raise ConfigError("nonCachedTokens of the P/D decider cannot be negative",
                              field="router.pd_decider.non_cached_tokens")
        self.non_cached_tokens = non_cached_tokens
        self.block_size = block_size

    def disaggregate(self, prompt_tokens: int, match_blocks: int) -> bool:
        """Run the prefill on a prefill instance (True) or locally on the decode one."""
        t = self.non_cached_tokens
        if t == 0 or prompt_tokens < t:
            return False
        return prompt_tokens - match_blocks * self.block_size >= t
