"""Cluster replays: heterogeneous groups behind one router, dense DP behind vLLM's DP
balancer, layouts refused at replay time (they need the model)."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmsim.errors import ConfigError
from llmsim.experiment import load_experiment
from llmsim.replay import run
from llmsim.router.base import RoundRobin
from llmsim.router.dp import DeploymentRouter, DPLoadBalancer, InstanceSnapshot
from llmsim.trace.record import Request, Trace

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
HETERO = EXAMPLES / "hetero-rtx4090-rtxpro6000-llama-3.1-8b.yaml"
DP2 = EXAMPLES / "rtxpro6000-llama-3.1-8b-dp2.yaml"
S = 1_000_000_000


@pytest.fixture(autouse=True)
def _data(data_path) -> None:
    data_path("llmservingsim/profiles/RTX4090/meta-llama/Llama-3.1-8B/bf16")
    data_path("llmservingsim/profiles/RTXPRO6000/meta-llama/Llama-3.1-8B/bf16")
    data_path("llmservingsim/configs/model/Qwen/Qwen3-30B-A3B-Instruct-2507.json")


def _trace(arrivals_s: list[float], prompt: int = 200, output: int = 16) -> Trace:
    return Trace(requests=tuple(
        Request(request_id=f"r{i}", arrival_ns=int(t * S), input_tokens=prompt,
                output_tokens=output, input_token_ids=tuple(10_000 * (i + 1) + k
                                                            for k in range(prompt)))
        for i, t in enumerate(arrivals_s)), source="", name="test")


def test_heterogeneous_groups_each_serve_and_use_their_own_hardware() -> None:
    exp = load_experiment(HETERO, overrides={"router": "round_robin"})
    # one request at a time (1 s apart, each finishes well within it): identical batches
    result = run(exp, trace=_trace([float(i) for i in range(10)]), keep_steps=True)
    req = result.requests
    assert req["instance_id"].tolist() == [0, 1] * 5
    steps = result.steps
    # the same decode step (1 sequence) priced on each GPU's own profile
    decode = steps[(steps["num_decodes"] == 1) & (steps["num_prefill_tokens"] == 0)]
    per = decode.groupby("instance_id")["gpu_ms"].median()
    assert set(per.index) == {0, 1}
    assert per[0] > 1.2 * per[1], per  # RTX 4090 decodes Llama-3.1-8B slower than a PRO 6000
    tpot = req.groupby("instance_id")["tpot_s"].mean()
    assert tpot[0] > tpot[1]
    groups = result.summary["instance_groups"]
    assert [(g["name"], g["hardware"], g["node"], g["num_gpu_blocks"]) for g in groups] == [
        ("rtx4090", "RTX4090", "desktop", 2588), ("rtxpro6000", "RTXPRO6000", "server", 35832)]
    assert result.summary["num_instances"] == 2
    assert result.summary["hardware"] == "RTX4090,RTXPRO6000"


def test_heterogeneous_example_least_loaded_sends_work_to_both() -> None:
    result = run(load_experiment(HETERO))
    counts = result.requests["instance_id"].value_counts()
    assert set(counts.index) == {0, 1} and counts.min() > 50


def test_dense_dp_is_round_robin_between_coordinator_resets() -> None:
    exp = load_experiment(DP2)
    assert exp.groups()[0].num_engines == 2
    # all within the first 5 s: the DP balancer alternates ranks like round robin ...
    within = _trace([0.0, 0.3, 0.6, 0.9, 1.2, 1.5])
    dp = run(exp, trace=within)
    rr = run(load_experiment(DP2, overrides={"engine.data_parallel_size": 1, "instances": 2}),
             trace=within)
    assert dp.requests.equals(rr.requests)
    assert dp.requests["instance_id"].tolist() == [0, 1, 0, 1, 0, 1]
    # ... and the coordinator's 5 s publication resets its counts: back to rank 0
    across = run(exp, trace=_trace([0.0, 1.0, 2.0, 5.5, 6.0]))
    assert across.requests["instance_id"].tolist() == [0, 1, 0, 0, 1]
    assert across.summary["instance_groups"][0]["data_parallel_size"] == 2


def test_dp_groups_count_as_deployments_for_the_top_router(tmp_path: Path) -> None:
    # two DP2 deployments: round robin over deployments, the DP balancer inside each
    exp = load_experiment(DP2, overrides={"instances": 2})
    result = run(exp, trace=_trace([0.0, 0.2, 0.4, 0.6, 0.8, 1.0]))
    # deployment 0 = engines 0, 1; deployment 1 = engines 2, 3
    assert result.requests["instance_id"].tolist() == [0, 2, 1, 3, 0, 2]


@pytest.mark.parametrize(("overrides", "field"), [
    ({"model": "llmservingsim/configs/model/Qwen/Qwen3-30B-A3B-Instruct-2507.json",
      "profile": "llmservingsim/profiles/RTXPRO6000/Qwen/Qwen3-30B-A3B-Instruct-2507/bf16"},
     "engine.data_parallel_size"),
    ({"engine.data_parallel_size": 1, "engine.enable_expert_parallel": True},
     "engine.enable_expert_parallel"),
])
def test_unmodelled_layouts_are_refused_before_replaying(overrides: dict, field: str,
                                                          data_path) -> None:
    if "profile" in overrides:
        data_path(overrides["profile"])
    exp = load_experiment(DP2, overrides=overrides)
    with pytest.raises(ConfigError) as err:
        run(exp, trace=_trace([0.0]))
    assert err.value.field == field
    assert "not supported yet" in str(err.value)
    assert str(err.value.path) == str(DP2)
    # the line of the engine key (or of the engine section, for a key set by an override)
    lines = DP2.read_text().splitlines()
    line = next(i for i, t in enumerate(lines, 1) if t.startswith("engine:"))
    if field == "engine.data_parallel_size":
        line = next(i for i, t in enumerate(lines, 1) if "data_parallel_size:" in t)
    assert err.value.line == line


def _req(rid: str, t_ns: int) -> Request:
    return Request(request_id=rid, arrival_ns=t_ns, input_tokens=1, output_tokens=1)


def _snap(i: int, waiting: int, running: int) -> InstanceSnapshot:
    return InstanceSnapshot(instance_id=i, num_running=running, num_waiting=waiting,
                            kv_usage_fraction=0.0)


def test_dp_balancer_event_log_dense() -> None:
    log: list = []
    lb = DPLoadBalancer(3, start_index=1, log=log)
    busy = [_snap(0, 9, 9), _snap(1, 9, 9), _snap(2, 0, 0)]  # never read: dense
    times = [0, 10, 20, 30, 5 * S, 5 * S + 1, 12 * S]
    picks = [lb.route(_req(f"r{k}", t), busy) for k, t in enumerate(times)]
    assert picks == [1, 2, 0, 1, 1, 2, 1]
    assert log == [
        (0, ("route", 1, (0, 0, 0))),
        (10, ("route", 2, (0, 4, 0))),
        (20, ("route", 0, (0, 4, 4))),
        (30, ("route", 1, (4, 4, 4))),  # ties: the first minimum from the start index
        (5 * S, ("publish", ((0, 0), (0, 0), (0, 0)))),
        (5 * S, ("route", 1, (0, 0, 0))),
        (5 * S + 1, ("route", 2, (0, 4, 0))),
        (12 * S, ("publish", ((0, 0), (0, 0), (0, 0)))),  # one reset for 10 s and the late
        (12 * S, ("route", 1, (0, 0, 0))),               # arrival; next due at 15 s
    ]


def test_dp_balancer_with_published_counts_weights_waiting_by_four() -> None:
    log: list = []
    lb = DPLoadBalancer(2, publishes_counts=True, log=log)
    views = [_snap(0, 1, 0), _snap(1, 0, 3)]  # scores 4 and 3 once published
    assert lb.route(_req("a", 0), views) == 0          # nothing published yet: 0, 0
    assert lb.route(_req("b", 50_000_000), views) == 1  # local increment: 4 vs 0
    assert lb.route(_req("c", 100_000_000), views) == 1  # published: 4 vs 3
    assert log[2] == (100_000_000, ("publish", ((1, 0), (0, 3))))
    # stale until the next 100 ms: the increment (+4) moves the next one to rank 0
    assert lb.route(_req("d", 150_000_000), views) == 0


def test_dp_balancer_refuses_bad_settings() -> None:
    for kw in ({"num_ranks": 0}, {"num_ranks": 2, "start_index": 2},
               {"num_ranks": 2, "client_count": 0}):
        with pytest.raises(ConfigError):
            DPLoadBalancer(**kw)


def test_deployment_router_gives_the_policy_one_summed_snapshot_per_deployment() -> None:
    seen: list = []

    class Spy(RoundRobin):
        def route(self, request, instances):  # type: ignore[override]
            seen.append(list(instances))
            return 1

    engines = [_snap(0, 1, 2), _snap(1, 0, 0), _snap(2, 3, 1), _snap(3, 1, 1)]
    router = DeploymentRouter(Spy(), [(0,), (1, 2, 3)])
    assert router.route(_req("a", 0), engines) == 1  # rank 0 of deployment 1 = engine 1
    (views,) = seen
    assert views == [_snap(0, 1, 2), _snap(1, 4, 2)]


def test_vllm_dp_policy_over_plain_instances_matches_a_dp2_deployment() -> None:
    trace = _trace([0.0, 1.0, 2.0, 5.5, 6.0, 6.1])
    dp = run(load_experiment(DP2), trace=trace)
    policy = run(load_experiment(DP2, overrides={"engine.data_parallel_size": 1,
                                                 "instances": 2, "router": "vllm_dp"}),
                 trace=trace)
    assert dp.requests.equals(policy.requests)
    assert policy.requests["instance_id"].tolist() == [0, 1, 0, 0, 1, 0]


def test_routers_read_frozen_snapshots_not_live_instances() -> None:
    import dataclasses

    import llmsim.replay as replay

    seen: list = []

    class Spy(RoundRobin):
        def route(self, request, instances):  # type: ignore[override]
            snap = instances[len(seen) % len(instances)]
            seen.append((snap, len(instances)))
            with pytest.raises(dataclasses.FrozenInstanceError):
                snap.num_waiting = 0  # type: ignore[misc]
            return super().route(request, instances)

    exp = load_experiment(HETERO, overrides={"router": "round_robin"})
    router = replay.build_router(exp)
    router.inner = Spy()  # type: ignore[attr-defined]
    original = replay.build_router
    replay.build_router = lambda experiment: router  # type: ignore[assignment]
    try:
        result = run(exp, trace=_trace([0.0, 0.0, 0.0, 0.0]))
    finally:
        replay.build_router = original  # type: ignore[assignment]
    assert [type(s).__name__ for s, _ in seen] == ["InstanceSnapshot"] * 4
    assert all(n == 2 for _, n in seen)
    # the third arrival sees instance 0 holding the first request (waiting or running)
    first = seen[2][0]
    assert (first.instance_id, first.num_waiting + first.num_running) == (0, 1)
    assert result.requests["instance_id"].tolist() == [0, 1, 0, 1]
