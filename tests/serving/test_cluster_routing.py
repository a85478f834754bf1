"""Cluster routing scenarios: llm-d scorers and picker, scraped (stale) metrics, the
approximate prefix index, production-stack's session / prefix-aware / KV-aware routers and
llm-d's prefix-based P/D decider (llmsim.router.llmd / pstack / scrape)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from serving_helpers import MS, LogRecorder, make_instance, make_request

from llmsim.errors import ConfigError
from llmsim.experiment import RouterConfig
from llmsim.router import RoundRobin
from llmsim.router.base import RouterPolicy, make_router, scrape_interval_ns
from llmsim.router.llmd import (
    ApproxPrefixIndex,
    LlmdRouter,
    PrefixPdDecider,
    Scorer,
    prefix_hashes,
    score_kv_cache_utilization,
    score_load_aware,
    score_queue,
)
from llmsim.router.pstack import KvAwareRouter, PrefixAwareRouter, SessionRouter
from llmsim.router.scrape import MetricsScraper, ScrapedRouter, install_routing
from llmsim.router.views import InstanceSnapshot
from llmsim.sim import Simulation


@dataclass
class Live:
    """A mutable stand-in for a live instance (what a router may read)."""

    instance_id: int
    num_waiting: int = 0
    num_running: int = 0
    usage: float = 0.0

    def kv_usage(self) -> float:
        return self.usage


def snap(i: int, waiting: int = 0, running: int = 0, kv: float = 0.0) -> InstanceSnapshot:
    return InstanceSnapshot(instance_id=i, num_running=running, num_waiting=waiting,
                            kv_usage_fraction=kv)


# ------------------------------------------------------------------------ scorers
def test_scorers_on_hand_made_snapshots() -> None:
    views = [snap(0, waiting=2, kv=0.5), snap(1, waiting=10, kv=0.25), snap(2, waiting=6)]
    assert score_queue(views) == [1.0, 0.0, 0.5]
    assert score_queue([snap(0, 3), snap(1, 3)]) == [1.0, 1.0]
    assert score_kv_cache_utilization(views) == [0.5, 0.75, 1.0]
    # 0.5 when empty, 0.5 (1 - q/128) below the threshold, 0 at or above it
    assert score_load_aware([snap(0, 0), snap(1, 64), snap(2, 500)]) == [0.5, 0.25, 0.0]


def test_weighted_scorers_pick_the_max_score() -> None:
    views = [snap(0, waiting=2, kv=0.9), snap(1, waiting=10, kv=0.0), snap(2, waiting=6, kv=0.5)]
    req = make_request("a", prompt=4)
    # queue only: pod 0; KV only: pod 1; llm-d defaults (queue 2, kv 2): 2*[1,0,.5]+2*[.1,1,.5]
    assert LlmdRouter({Scorer.QUEUE: 1.0}).route(req, views) == 0
    assert LlmdRouter({Scorer.KV_CACHE_UTILIZATION: 1.0}).route(req, views) == 1
    r = LlmdRouter()
    assert r.route(req, views) == 0
    assert r.last is not None
    assert r.last.scores == pytest.approx((2.2, 2.0, 2.0))
    with pytest.raises(ConfigError, match="weights"):
        LlmdRouter({Scorer.QUEUE: 0.0})


def test_max_score_picker_breaks_ties_at_random_with_a_seed() -> None:
    views = [snap(i) for i in range(4)]
    picks = [LlmdRouter({Scorer.QUEUE: 1.0}, seed=7).route(make_request(f"r{k}"), views)
             for k in range(1)]
    r = LlmdRouter({Scorer.QUEUE: 1.0}, seed=7)
    many = [r.route(make_request(f"r{k}"), views) for k in range(40)]
    assert set(many) == {0, 1, 2, 3}  # ties: not always the first
    r2 = LlmdRouter({Scorer.QUEUE: 1.0}, seed=7)
    assert [r2.route(make_request(f"r{k}"), views) for k in range(40)] == many
    assert picks[0] == many[0]


# --------------------------------------------------------------- prefix index
def test_approximate_prefix_index_lru_and_match() -> None:
    idx = ApproxPrefixIndex(capacity_per_pod=3)
    idx.add([1, 2, 3], pod=0)
    idx.add([1, 2], pod=1)
    assert idx.match([1, 2, 3, 4]) == {0: 3, 1: 2}
    assert idx.match([9, 1]) == {}  # the walk stops at the first block no pod holds
    idx.add([7], pod=0)  # evicts block 1 (oldest) from pod 0
    assert idx.num_blocks(0) == 3
    assert idx.match([1, 2, 3]) == {1: 2, 0: 2}  # pod 0 still holds 2, 3 (not a prefix!)


def test_prefix_scorer_routes_a_shared_prefix_to_the_pod_that_saw_it() -> None:
    shared = tuple(range(1, 65))  # 4 blocks of 16 tokens
    a = make_request("a", prompt=80, ids=shared + tuple(range(1000, 1016)))
    b = make_request("b", prompt=80, ids=shared + tuple(range(2000, 2016)))
    c = make_request("c", prompt=80, ids=tuple(range(5000, 5080)))
    views = [snap(0), snap(1), snap(2)]
    log: list[tuple[int, tuple[object, ...]]] = []
    r = LlmdRouter({Scorer.PREFIX_CACHE: 1.0}, seed=3, log=log)
    first = r.route(a, views)
    assert r.route(b, views) == first  # 4 of its 5 blocks are on `first`
    assert r.last is not None and r.last.pick_match_blocks == 4 and r.last.total_blocks == 5
    r.route(c, views)
    assert r.last is not None and max(r.last.match_blocks) == 0
    assert [e[1][0] for e in log] == ["route"] * 3
    assert len(prefix_hashes(a)) == 5 and prefix_hashes(a)[:4] == prefix_hashes(b)[:4]


# ------------------------------------------------------------------ staleness
def test_decision_uses_the_last_scrape_not_the_live_queue() -> None:
    live = [Live(0, num_waiting=5), Live(1, num_waiting=0)]
    log: list[tuple[int, tuple[object, ...]]] = []
    scraper = MetricsScraper(50 * MS, log=log)
    router = ScrapedRouter(LlmdRouter({Scorer.QUEUE: 1.0}), scraper)
    scraper.scrape(live, 0)
    live[1].num_waiting = 10  # changes after the scrape: the router does not see it
    assert router.route(make_request("a"), live) == 1
    scraper.scrape(live, 50 * MS)
    assert router.route(make_request("b"), live) == 0
    assert log == [(0, ("scrape", ((5, 0), (0, 0)))), (50 * MS, ("scrape", ((5, 0), (10, 0))))]


def test_scrapes_in_the_loop_make_a_burst_go_to_the_idle_looking_instance() -> None:
    """Four requests 1 ms apart: a live queue scorer would alternate; with a 50 ms scrape
    all four see the idle scrape at 0 (ties, seeded picks) and the fifth, after the
    scrape at 50 ms, avoids the queue that built up."""
    insts = [make_instance(instance_id=i, max_num_seqs=1, budget=16) for i in range(2)]
    reqs = [make_request(f"r{k}", arrival_ms=k, prompt=8, output=20) for k in range(4)]
    reqs.append(make_request("late", arrival_ms=60, prompt=8, output=2))
    slog: list[tuple[int, tuple[object, ...]]] = []
    rlog: list[tuple[int, tuple[object, ...]]] = []
    scraper = MetricsScraper(50 * MS, log=slog)
    inner = LlmdRouter({Scorer.QUEUE: 1.0}, seed=0, log=rlog)
    rec = LogRecorder(reqs, keep_steps=True)
    sim = Simulation(reqs, insts, ScrapedRouter(inner, scraper), rec)
    install_routing(sim)
    sim.run()
    picks = [e[1][1] for e in rlog]
    scores = [e[1][2] for e in rlog]
    assert scores[:4] == [(1.0, 1.0)] * 4  # the scrape at 0: both idle
    # at 50 ms the instance given more of the burst has the longer queue
    t50 = next(c for t, (_k, c) in slog if t == 50 * MS)
    fuller = max((0, 1), key=lambda i: t50[i][0])  # type: ignore[index]
    assert t50[fuller][0] > t50[1 - fuller][0]  # type: ignore[index]
    assert picks[4] == 1 - fuller
    assert [t for t, _ in slog][:3] == [0, 50 * MS, 100 * MS]
    assert rec.num_finished == 5


# -------------------------------------------------------------- production-stack
def test_session_affinity_and_qps_fallback() -> None:
    views = [snap(i) for i in range(4)]
    r = SessionRouter()
    homes = {}
    for turn in range(3):
        for s in range(8):
            req = make_request(f"s{s}t{turn}", arrival_ms=turn * 10 + s, session_id=f"user{s}")
            homes.setdefault(s, set()).add(r.route(req, views))
    assert all(len(h) == 1 for h in homes.values())  # every turn of a session: one instance
    assert len({next(iter(h)) for h in homes.values()}) > 1  # sessions spread
    # no session id: an instance without stats first, then the lowest QPS
    r2 = SessionRouter()
    assert [r2.route(make_request(f"n{k}"), views) for k in range(6)] == [0, 1, 2, 3, 0, 1]


def test_prefix_aware_follows_the_longest_match_and_the_min_match() -> None:
    shared = tuple(range(1, 65))  # two 32-token chunks
    reqs = [make_request(f"p{k}", arrival_ms=k, prompt=96,
                         ids=shared + tuple(range(100 * k + 1000, 100 * k + 1032)))
            for k in range(5)]
    views = [snap(i) for i in range(3)]
    r = PrefixAwareRouter()
    picks = [r.route(q, views) for q in reqs]
    assert len(set(picks)) == 1  # all share the 64-token prefix with the first
    r2 = PrefixAwareRouter(min_match_tokens=96)  # a 64-token match is too short: QPS
    assert [r2.route(q, views) for q in reqs[:3]] == [0, 1, 2]


def test_kv_aware_uses_the_instance_holding_the_prefix_within_the_threshold() -> None:
    insts = [make_instance(instance_id=i, block_size=4, num_blocks=64) for i in range(2)]
    ids = tuple(range(1, 33))
    reqs = [make_request("w", prompt=32, output=1, ids=ids),
            make_request("x", arrival_ms=100, prompt=36, output=1, ids=ids + (7, 7, 7, 7))]
    rlog: list[tuple[int, tuple[object, ...]]] = []
    router = KvAwareRouter(threshold_tokens=8, log=rlog)
    # the first request goes to instance 1 (the QPS fallback is steered by a pre-count)
    router.fallback.stats.record(0)
    rec = LogRecorder(reqs, keep_steps=True)
    sim = Simulation(reqs, insts, router, rec)
    install_routing(sim)
    sim.run()
    assert rlog[0][1] == ("route", 1, 0)
    # w's 8 full prompt blocks (32 tokens) are cached on instance 1: 32 >= 36 - 8
    assert rlog[1][1] == ("route", 1, 32)
    assert router.cached_tokens(reqs[1], 0) == 0
    # a tighter threshold (32 < 36 - 2): the session / QPS fallback (no stats yet: first)
    tight = KvAwareRouter(threshold_tokens=2)
    tight.bind_instances(insts)
    views = [snap(0), snap(1)]
    y = make_request("y", arrival_ms=200, prompt=36, output=1, ids=ids + (9, 9, 9, 9))
    assert tight.cached_tokens(y, 1) == 32
    assert tight.route(y, views) == 0


# -------------------------------------------------------------------- P/D decider
@pytest.mark.parametrize(("prompt", "match", "threshold", "expected"), [
    (10, 0, 16, False),    # the prompt itself is under the threshold
    (100, 6, 16, False),   # 100 - 96 = 4 non-cached tokens < 16: decode runs it locally
    (100, 5, 16, True),    # 100 - 80 = 20 >= 16: disaggregated
    (16, 0, 16, True),     # at the threshold
    (5000, 0, 0, False),   # 0 disables P/D (llm-d)
])
def test_prefix_pd_decider_threshold(prompt: int, match: int, threshold: int,
                                     expected: bool) -> None:
    assert PrefixPdDecider(threshold).disaggregate(prompt, match) is expected


# ------------------------------------------------------------------------ config
def test_router_config_defaults_and_refusals() -> None:
    assert scrape_interval_ns(RouterConfig(policy=RouterPolicy.LLM_D)) == 50 * MS
    assert scrape_interval_ns(RouterConfig()) == 0
    r = make_router(RouterConfig(policy=RouterPolicy.LLM_D))
    assert isinstance(r, ScrapedRouter) and isinstance(r.inner, LlmdRouter)
    assert r.inner.weights == {Scorer.QUEUE: 2.0, Scorer.KV_CACHE_UTILIZATION: 2.0,
                               Scorer.PREFIX_CACHE: 3.0}
    assert isinstance(make_router("round_robin"), RoundRobin)
    assert isinstance(make_router(RouterConfig(policy=RouterPolicy.LLM_D,
                                               scrape_interval_ns=0)), LlmdRouter)
    with pytest.raises(ConfigError, match="only the llm_d policy reads"):
        RouterConfig(policy=RouterPolicy.SESSION, prefix_cache_weight=1.0)
    with pytest.raises(ConfigError, match="kv_aware"):
        RouterConfig(policy=RouterPolicy.LLM_D, kv_aware_threshold_tokens=5)
    with pytest.raises(ConfigError, match="unknown"):
        RouterConfig(policy="nope")  # type: ignore[arg-type]


# ------------------------------------------------------- shared-prefix workload
def _shared_prefix_hits(router) -> tuple[int, int]:
    """8 groups of 6 consecutive requests sharing a 256-token prefix each (+16 own tokens), 10 ms
    apart, on 4 instances: ``(prefix hit tokens, query tokens)`` over all instances."""
    reqs = []
    for k in range(48):
        g = k // 6  # a group's requests in a row: round robin spreads them
        ids = tuple(range(10_000 * (g + 1), 10_000 * (g + 1) + 256)) + tuple(
            range(900_000 + 100 * k, 900_000 + 100 * k + 16))
        reqs.append(make_request(f"q{k}", arrival_ms=10 * k, prompt=272, output=4, ids=ids))
    insts = [make_instance(instance_id=i, block_size=16, num_blocks=512, budget=512,
                           max_num_seqs=16) for i in range(4)]
    rec = LogRecorder(reqs, keep_steps=True)
    sim = Simulation(reqs, insts, router, rec)
    install_routing(sim)
    sim.run()
    return (sum(i.scheduler.kv.hit_tokens for i in insts),
            sum(i.scheduler.kv.query_tokens for i in insts))


def test_prefix_routing_raises_prefix_hits_over_round_robin() -> None:
    rr_hit, q = _shared_prefix_hits(RoundRobin())
    llmd_hit, q2 = _shared_prefix_hits(make_router(RouterConfig(policy=RouterPolicy.LLM_D)))
    pa_hit, q3 = _shared_prefix_hits(make_router(RouterConfig(
        policy=RouterPolicy.PREFIX_AWARE)))
    assert q == q2 == q3 == 48 * 272
    # round robin: 8 prefixes x 4 instances computed once each (first sight misses),
    # the other 48 - 32 = 16 requests hit 256 tokens; a prefix router computes each
    # prefix once: 40 requests hit
    assert rr_hit == 16 * 256
    assert pa_hit == 40 * 256
    assert llmd_hit > rr_hit


# ------------------------------------------------------- P/D decider, end to end
def test_pd_decider_on_the_pd_example() -> None:
    """llm-d's decider on the P/D example (1 prefill + 1 decode instance, 300 ShareGPT
    requests): a request shorter than the threshold, or whose non-matched part on the
    decode instance is, runs there locally (no prefill instance, no KV transfer); the
    rest are disaggregated. Threshold 0 disables P/D."""
    import dataclasses
    from pathlib import Path

    from llmsim.experiment import PdDeciderConfig, load_experiment
    from llmsim.replay import run

    path = Path(__file__).resolve().parents[2] / "examples" / "rtxpro6000-llama-3.1-8b-pd.yaml"
    exp = load_experiment(path)
    t = 200
    res = run(dataclasses.replace(exp, router=RouterConfig(
        policy=RouterPolicy.LLM_D, pd_decider=PdDeciderConfig(non_cached_tokens=t))))
    q = res.requests
    local = q["prefill_instance_id"] < 0
    assert (q.loc[q["input_tokens"] < t, "prefill_instance_id"] < 0).all()
    assert (q.loc[local, "instance_id"] == 1).all()
    assert (q.loc[local, "kv_transfer_bytes"] == 0).all()
    assert (q.loc[~local, "input_tokens"] >= t).all()
    assert (q.loc[~local, "kv_transfer_bytes"] > 0).all()
    # the long local ones are repeated prompts: most of them hit on the decode instance
    long_local = local & (q["input_tokens"] >= t)
    assert long_local.any()
    assert (q.loc[long_local, "input_tokens"] - q.loc[long_local, "prefix_hit_tokens"]
            < t).all()
    assert res.summary["pd"]["num_transfers"] == int((~local).sum())
    off = run(dataclasses.replace(exp, router=RouterConfig(
        policy=RouterPolicy.LLM_D, pd_decider=PdDeciderConfig(non_cached_tokens=0))))
    assert (off.requests["prefill_instance_id"] < 0).all()
    assert off.summary["pd"]["num_transfers"] == 0
    single = load_experiment(path.parent / "rtxpro6000-llama-3.1-8b.yaml")
    with pytest.raises(ConfigError, match="needs prefill/decode instance roles"):
        run(dataclasses.replace(single, router=RouterConfig(
            policy=RouterPolicy.LLM_D, pd_decider=PdDeciderConfig())))
    with pytest.raises(ConfigError, match="only the llm_d policy reads pd_decider"):
        RouterConfig(policy=RouterPolicy.SESSION, pd_decider=PdDeciderConfig())
