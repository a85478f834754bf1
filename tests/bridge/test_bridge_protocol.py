"""The bridge protocol against real servers on 127.0.0.1 port 0."""

from __future__ import annotations

import time
from pathlib import Path

import grpc
import pytest
from bridge_testlib import (
    FIXTURES,
    StallingCoster,
    h100_coster,
    start_subprocess,
    stop_subprocess,
)
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from adapters.common.server import SERVICE_NAME, serve
from llmsim.bridge import BridgeCostModel, BridgeOptions, BridgeQueryError, TransportOptions
from llmsim.bridge.client import parse_spec
from llmsim.bridge.transport import BridgeTransport
from llmsim.cluster.parallel import ParallelConfig
from llmsim.costmodel.base import PrefillChunk, StepBatch
from llmsim.costmodel.decompose import Scope, step_ops
from llmsim.costmodel.registry import CostModelContext, build_cost_model
from llmsim.errors import ConfigError, CostModelUnavailable
from llmsim.model.config import load_model_config
from llmsim.v1 import cost_model_pb2 as pb

TP1 = ParallelConfig(tensor_parallel_size=1)

TINY = load_model_config(FIXTURES / "tiny-llama.json")
FAST = TransportOptions(deadline_s=2.0, connect_timeout_s=2.0, max_retries=2, backoff_s=0.02)


@pytest.fixture
def roofline_server():
    running = serve(h100_coster())
    yield running
    running.stop(0)


def make_batch(i: int = 0) -> StepBatch:
    return StepBatch(prefills=(PrefillChunk(num_new_tokens=37 + i, num_cached_tokens=16),),
                     decode_context_lens=(5 + i, 90, 300))


def client(target: str, **kw) -> BridgeCostModel:
    return BridgeCostModel(target, model=TINY, options=BridgeOptions(transport=FAST, **kw))


def test_round_trip_matches_the_roofline_model_op_by_op(roofline_server):
    coster = h100_coster()
    with client(roofline_server.target) as c:
        assert c.server.server_name == "llmsim-roofline"
        assert c.server.hardware == "H100-SXM"
        assert c.server.protocol_version == pb.PROTOCOL_VERSION_CURRENT
        batch = make_batch()
        cost = c.step_cost(batch)
    # Recompute by hand: every op of the decomposition priced by the model directly.
    tokens, seqs = batch.num_tokens, batch.num_sampled
    expected: dict[str, float] = {}
    for op in step_ops(TINY, TP1):
        reps = op.count * (TINY.num_hidden_layers if op.scope is Scope.LAYER else 1)
        q = pb.OpQuery(op_name=op.name, dtype="bf16", tp_degree=1, repetitions=reps)
        rows = seqs if op.rows.value == "sequences" else tokens
        if op.op_class.value == "gemm":
            q.gemm.m, q.gemm.n, q.gemm.k = rows, op.n, op.k
        elif op.op_class.value == "attention":
            a = q.attention
            a.num_q_heads, a.num_kv_heads, a.head_dim = 4, 2, 64
            a.prefills.add(new_tokens=37, cached_tokens=16)
            a.num_decodes, a.decode_kv_sum, a.decode_kv_max, a.decode_kv_min = 3, 395, 300, 5
        else:
            q.elementwise.rows, q.elementwise.row_elements = rows, op.n
        expected[op.name] = expected.get(op.name, 0.0) + coster.cost_one(q)[0]
    rounded = {k: int(v + 0.5) for k, v in expected.items()}
    assert dict(cost.breakdown_ns) == rounded
    assert cost.duration_ns == sum(rounded.values()) > 0


def test_one_rpc_per_step_at_most_and_none_for_known_shapes(roofline_server):
    with client(roofline_server.target, lookahead_steps=0) as c:
        c.step_cost(make_batch(0))
        assert c.stats.rpcs == 1
        c.step_cost(make_batch(0))           # identical batch: step memo
        assert c.stats.rpcs == 1
        # same token/sequence counts, different attention: only the attention query is sent
        sent = c.stats.queries_sent
        c.step_cost(StepBatch(prefills=(PrefillChunk(num_new_tokens=37, num_cached_tokens=0),),
                              decode_context_lens=(5, 90, 301)))
        assert c.stats.rpcs == 2 and c.stats.queries_sent == sent + 1
        for i in range(1, 20):
            c.step_cost(make_batch(i))
        assert c.stats.rpcs <= c.stats.steps


def test_lookahead_answers_the_next_decode_steps_without_rpcs(roofline_server):
    with client(roofline_server.target, lookahead_steps=4) as c:
        lens = (10, 20, 30)
        c.step_cost(StepBatch(decode_context_lens=lens))
        for j in range(1, 5):
            c.step_cost(StepBatch(decode_context_lens=tuple(n + j for n in lens)))
        assert c.stats.rpcs == 1
        c.step_cost(StepBatch(decode_context_lens=tuple(n + 5 for n in lens)))
        assert c.stats.rpcs == 2
    with client(roofline_server.target, lookahead_steps=0) as plain:
        for j in range(6):
            b = StepBatch(decode_context_lens=tuple(n + j for n in lens))
            assert plain.step_cost(b) == c._step_memo[b]


def test_health_check_and_not_serving_refused(roofline_server):
    channel = grpc.insecure_channel(roofline_server.target)
    stub = health_pb2_grpc.HealthStub(channel)
    reply = stub.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=2)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    channel.close()
    roofline_server.health.set(SERVICE_NAME, health_pb2.HealthCheckResponse.NOT_SERVING)
    with pytest.raises(CostModelUnavailable, match="NOT_SERVING"):
        client(roofline_server.target)


def test_reflection_lists_the_services(roofline_server):
    channel = grpc.insecure_channel(roofline_server.target)
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    replies = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(
        list_services="")]), timeout=2)
    names = {s.name for r in replies for s in r.list_services_response.service}
    channel.close()
    assert {SERVICE_NAME, "grpc.health.v1.Health"} <= names


def test_batch_with_per_query_errors(roofline_server):
    transport = BridgeTransport(roofline_server.target, FAST)
    transport.connect()
    good = pb.OpQuery(op_name="qkv_proj", dtype="bf16", tp_degree=1, gemm=pb.GemmShape(
        m=8, n=512, k=256))
    bad_dtype = pb.OpQuery(op_name="qkv_proj", dtype="int3", tp_degree=1, gemm=pb.GemmShape(
        m=8, n=512, k=256))
    bad_collective = pb.OpQuery(op_name="x", dtype="bf16", tp_degree=2, collective=(
        pb.CollectiveShape(collective="all_to_everyone", bytes=10, ranks=2)))
    no_shape = pb.OpQuery(op_name="y", dtype="bf16")
    answers = transport.cost_batch([good, bad_dtype, bad_collective, no_shape])
    transport.close()
    assert [a.WhichOneof("result") for a in answers] == ["cost", "error", "error", "error"]
    assert answers[0].cost.latency_ns > 0
    assert answers[1].error.code == pb.OP_ERROR_CODE_UNSUPPORTED
    assert answers[2].error.code == pb.OP_ERROR_CODE_UNSUPPORTED
    assert answers[3].error.code == pb.OP_ERROR_CODE_INVALID


def test_per_query_error_ends_the_step_with_a_clear_error(roofline_server):
    with pytest.raises(CostModelUnavailable, match="cannot price dtype 'int3'"):
        BridgeCostModel(roofline_server.target, model=TINY, dtype="int3",
                        options=BridgeOptions(transport=FAST))

    class NoAttention:
        def __init__(self):
            self.inner = h100_coster()

        def info(self):
            return self.inner.info()

        def cost_batch(self, queries):
            return [pb.OpAnswer(error=pb.OpError(code=pb.OP_ERROR_CODE_OUT_OF_RANGE,
                                                 message="KV too long"))
                    if q.WhichOneof("shape") == "attention" else a
                    for q, a in zip(queries, self.inner.cost_batch(queries), strict=True)]

    running = serve(NoAttention())
    try:
        with client(running.target) as c, pytest.raises(BridgeQueryError,
                                                        match="OUT_OF_RANGE: KV too long"):
            c.step_cost(make_batch())
    finally:
        running.stop(0)


def test_deadline_exceeded_on_a_stalled_server():
    running = serve(StallingCoster(stall_s=3.0))
    try:
        opts = BridgeOptions(transport=TransportOptions(deadline_s=0.3, connect_timeout_s=2.0))
        with BridgeCostModel(running.target, model=TINY, options=opts) as c:
            t0 = time.monotonic()
            with pytest.raises(CostModelUnavailable, match="DEADLINE_EXCEEDED.*0.3 s deadline"):
                c.step_cost(make_batch())
            assert time.monotonic() - t0 < 1.5
    finally:
        running.stop(0)


def test_version_mismatch_is_refused_both_ways():
    running = serve(h100_coster(), protocol_version=pb.PROTOCOL_VERSION_CURRENT + 1)
    try:
        with pytest.raises(CostModelUnavailable, match="protocol version mismatch"):
            client(running.target)
        # an old client speaking to it directly is refused per call too
        transport = BridgeTransport(running.target, FAST)
        with pytest.raises(CostModelUnavailable, match="FAILED_PRECONDITION"):
            transport.cost_batch([])
        transport.close()
    finally:
        running.stop(0)


def test_unreachable_server_fails_fast():
    t0 = time.monotonic()
    with pytest.raises(CostModelUnavailable, match="no server reachable"):
        BridgeCostModel("127.0.0.1:1", model=TINY, options=BridgeOptions(
            transport=TransportOptions(connect_timeout_s=0.5)))
    assert time.monotonic() - t0 < 3


def test_persistent_cache_second_run_makes_no_cost_rpcs(roofline_server, tmp_path):
    db = tmp_path / "bridge.sqlite"
    batches = [make_batch(i) for i in range(10)]
    first = client(roofline_server.target, cache_path=db)
    costs = [first.step_cost(b) for b in batches]
    assert first.stats.rpcs > 0
    first.close()
    second = client(roofline_server.target, cache_path=db)
    assert [second.step_cost(b) for b in batches] == costs
    assert second.stats.rpcs == 0 and second.stats.persistent_hits > 0
    second.close()


def test_spec_parsing_and_registry(roofline_server):
    target, opts = parse_spec("grpc://127.0.0.1:5?deadline_s=2.5&retries=1&lookahead=3")
    assert target == "127.0.0.1:5"
    assert opts.transport.deadline_s == 2.5 and opts.transport.max_retries == 1
    assert opts.lookahead_steps == 3
    with pytest.raises(ConfigError, match="unknown option"):
        parse_spec("grpc://127.0.0.1:5?speed=fast")
    with pytest.raises(ConfigError, match="HOST:PORT"):
        parse_spec("grpc://nohost")
    model = build_cost_model(f"grpc://{roofline_server.target}?deadline_s=5",
                             CostModelContext(model=TINY, ))
    assert model.step_cost(make_batch()).duration_ns > 0
    model.close()


def test_one_command_server_prints_its_port():
    proc, port = start_subprocess(["-m", "adapters.roofline", "--hardware",
                                   "adapters/roofline/hardware/a100-80gb.yaml", "--port", "0"])
    try:
        with client(f"127.0.0.1:{port}") as c:
            assert c.server.hardware == "A100-80GB"
            assert c.step_cost(make_batch()).duration_ns > 0
    finally:
        stop_subprocess(proc)
    assert proc.returncode == 0


def test_server_killed_mid_run_ends_replay_with_no_outputs(tmp_path):
    from llmsim.cli.main import main

    proc, port = start_subprocess([str(Path(__file__).parent / "bridge_testlib.py"),
                                   "--die-after", "6", "--port", "0"])
    out = tmp_path / "out"
    try:
        t0 = time.monotonic()
        rc = main(["replay", str(FIXTURES / "tiny-experiment.yaml"), "--no-progress",
                   "--set", f"cost_model=grpc://127.0.0.1:{port}?deadline_s=2&retries=2",
                   "--out", str(out)])
        elapsed = time.monotonic() - t0
    finally:
        stop_subprocess(proc)
    assert proc.returncode == 137  # it really died mid-run
    assert rc == 2
    assert elapsed < 10
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_killed_server_raises_cost_model_unavailable_with_retries():
    proc, port = start_subprocess([str(Path(__file__).parent / "bridge_testlib.py"),
                                   "--die-after", "2", "--port", "0"])
    try:
        with client(f"127.0.0.1:{port}", lookahead_steps=0) as c:
            c.step_cost(make_batch(0))
            with pytest.raises(CostModelUnavailable) as info:
                c.step_cost(make_batch(1))   # the server exits handling this one
                c.step_cost(make_batch(2))
            assert "UNAVAILABLE" in str(info.value) or "INTERNAL" in str(info.value)
    finally:
        stop_subprocess(proc)


def test_cli_describe(roofline_server, capsys):
    from llmsim.cli.main import main

    assert main(["bridge", "describe", f"grpc://{roofline_server.target}"]) == 0
    out = capsys.readouterr().out
    assert "llmsim-roofline" in out and "H100-SXM" in out and "SERVING" in out
    assert main(["bridge", "describe", "127.0.0.1:1", "--timeout-s", "0.3"]) == 2

