"""The streamed bridge (``CostStream``) and the client's guesses, against real servers."""

from __future__ import annotations

import socket
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

from adapters.common.server import serve
from llmsim.bridge import (
    BridgeCostModel,
    BridgeOptions,
    BridgeQueryError,
    TransportOptions,
)
from llmsim.bridge.transport import BridgeTransport
from llmsim.costmodel.base import PrefillChunk, StepBatch
from llmsim.errors import CostModelUnavailable
from llmsim.model.config import load_model_config
from llmsim.v1 import cost_model_pb2 as pb
from llmsim.v1 import cost_model_pb2_grpc as pb_grpc

TINY = load_model_config(FIXTURES / "tiny-llama.json")
FAST = TransportOptions(deadline_s=2.0, connect_timeout_s=2.0, max_retries=2, backoff_s=0.02)


def client(target: str, **kw) -> BridgeCostModel:
    return BridgeCostModel(target, model=TINY, options=BridgeOptions(transport=FAST, **kw))


def workload() -> list[StepBatch]:
    """Decode runs broken by arrivals, a finishing request, a chunked prompt and padding."""
    lens = (40, 75, 130)
    out = [StepBatch(decode_context_lens=tuple(n + j for n in lens)) for j in range(12)]
    out.append(StepBatch(prefills=(PrefillChunk(num_new_tokens=21),),
                         decode_context_lens=tuple(n + 12 for n in lens)))
    lens = tuple(n + 13 for n in lens) + (22,)
    out += [StepBatch(decode_context_lens=tuple(n + j for n in lens)) for j in range(20)]
    out.append(StepBatch(decode_context_lens=out[-1].decode_context_lens + (1,) * 4))  # pad
    lens = tuple(n + 20 for n in lens[1:])  # one request finished
    out += [StepBatch(decode_context_lens=tuple(n + j for n in lens)) for j in range(9)]
    out.append(StepBatch(prefills=(PrefillChunk(num_new_tokens=64, emits_token=False),),
                         decode_context_lens=tuple(n + 9 for n in lens)))
    out.append(StepBatch(prefills=(PrefillChunk(num_new_tokens=10, num_cached_tokens=64),),
                         decode_context_lens=tuple(n + 10 for n in lens)))
    return out


@pytest.fixture
def roofline_server():
    running = serve(h100_coster())
    yield running
    running.stop(0)


def test_stream_and_unary_give_identical_costs_and_request_counts(roofline_server):
    batches = workload()
    with client(roofline_server.target) as streamed, \
            client(roofline_server.target, stream=False) as unary, \
            client(roofline_server.target, lookahead_steps=0) as plain:
        got = [streamed.step_cost(b) for b in batches]
        assert got == [unary.step_cost(b) for b in batches]
        assert got == [plain.step_cost(b) for b in batches]   # guesses change nothing
        assert streamed.stats.streamed and not unary.stats.streamed
        assert streamed.stats.rpcs == unary.stats.rpcs
        assert streamed.stats.as_dict() == {**unary.stats.as_dict(), "streamed": True}
        assert streamed.stats.rpcs <= streamed.stats.steps
        # the guesses pay: far fewer requests than steps, most guesses used
        assert streamed.stats.rpcs < plain.stats.rpcs
        assert streamed.stats.speculative_used > 0


def test_server_answers_needed_queries_first(roofline_server):
    channel = grpc.insecure_channel(roofline_server.target)
    stub = pb_grpc.CostModelServiceStub(channel)
    queries = [pb.OpQuery(op_name="qkv_proj", dtype="bf16", tp_degree=1,
                          gemm=pb.GemmShape(m=m, n=512, k=256)) for m in (1, 2, 3, 4, 5)]
    requests = [pb.CostBatchRequest(protocol_version=pb.PROTOCOL_VERSION_CURRENT,
                                    queries=queries, num_needed=2),
                pb.CostBatchRequest(protocol_version=pb.PROTOCOL_VERSION_CURRENT,
                                    queries=queries[:1])]
    replies = list(stub.CostStream(iter(requests), timeout=5))
    channel.close()
    assert [(r.first_query, len(r.answers)) for r in replies] == [(0, 2), (2, 3), (0, 1)]
    unary = h100_coster().cost_batch(queries)
    assert [a.cost.latency_ns for r in replies[:2] for a in r.answers] == [
        a.cost.latency_ns for a in unary]


def test_server_without_stream_gets_unary_calls():
    running = serve(h100_coster(), stream=False)
    try:
        with client(running.target) as c:
            assert not c.server.supports_stream
            cost = c.step_cost(workload()[0])
            assert cost.duration_ns > 0 and not c.stats.streamed and c.stats.rpcs == 1
    finally:
        running.stop(0)


def test_adaptive_horizon_doubles_while_guesses_come_true(roofline_server):
    lens = (10, 20, 30)
    with client(roofline_server.target, lookahead_steps=2, max_lookahead_steps=8) as c:
        requests_at = []
        for j in range(40):
            before = c.stats.rpcs
            c.step_cost(StepBatch(decode_context_lens=tuple(n + j for n in lens)))
            if c.stats.rpcs > before:
                requests_at.append(j)
    # horizons 2, 4, 8, 8, ...: requests at 0, 3, 8, 17, 26, 35
    assert requests_at == [0, 3, 8, 17, 26, 35]


def test_padded_twin_is_guessed_once_sizes_are_learned(roofline_server):
    with client(roofline_server.target) as c:
        c.step_cost(StepBatch(decode_context_lens=(50, 60, 70)))
        c.step_cost(StepBatch(decode_context_lens=(50, 60, 70, 1)))   # learns size 4
        c.step_cost(StepBatch(decode_context_lens=(50, 60, 70, 1, 1, 1, 1, 1)))  # size 8
        rpcs = c.stats.rpcs
        real = StepBatch(prefills=(PrefillChunk(num_new_tokens=3),),
                         decode_context_lens=(90, 95))                 # 5 tokens: new
        c.step_cost(real)
        assert c.stats.rpcs == rpcs + 1
        c.step_cost(StepBatch(prefills=real.prefills, decode_context_lens=(90, 95, 1, 1, 1)))
        assert c.stats.rpcs == rpcs + 1   # the padded twin came with the real step


class RefusesLongKv:
    """Prices everything but attention over KV lengths above ``max_kv``."""

    def __init__(self, max_kv: int) -> None:
        self.inner = h100_coster()
        self.max_kv = max_kv

    def info(self):
        return self.inner.info()

    def cost_batch(self, queries):
        return [pb.OpAnswer(error=pb.OpError(code=pb.OP_ERROR_CODE_OUT_OF_RANGE,
                                             message="KV too long"))
                if q.WhichOneof("shape") == "attention"
                and q.attention.decode_kv_max > self.max_kv else a
                for q, a in zip(queries, self.inner.cost_batch(queries), strict=True)]


def test_error_answer_to_a_guess_fails_only_the_step_that_needs_it():
    running = serve(RefusesLongKv(max_kv=104))
    try:
        with client(running.target, lookahead_steps=8) as c:
            for j in range(5):   # the guesses reach KV 108: errors, never needed
                c.step_cost(StepBatch(decode_context_lens=(100 + j,)))
            assert c.stats.rpcs == 1
            with pytest.raises(BridgeQueryError, match="OUT_OF_RANGE: KV too long"):
                c.step_cost(StepBatch(decode_context_lens=(105,)))
    finally:
        running.stop(0)


class WithEnergy:
    """The roofline answers plus an energy per answer (irregular floats: order matters)."""

    def __init__(self) -> None:
        self.inner = h100_coster()

    def info(self):
        from dataclasses import replace

        return replace(self.inner.info(), provides_energy=True)

    def cost_batch(self, queries):
        answers = self.inner.cost_batch(queries)
        for a in answers:
            a.cost.energy_j = a.cost.latency_ns * 1.1e-9 / 3.0
        return answers


def test_fast_path_equals_full_path_energy_included():
    running = serve(WithEnergy())
    batches = workload()
    try:
        with client(running.target, step_memo_size=0) as fast, \
                client(running.target, step_memo_size=0) as full:
            for batch in batches + batches:
                full._partials.clear()          # every step through the full path
                want = full.step_cost(batch)
                assert fast.step_cost(batch) == want
                assert want.energy_j is not None and want.energy_j > 0
            assert fast._partials                # and the fast path was taken
    finally:
        running.stop(0)


def test_stalled_stream_hits_the_deadline_and_unary_too():
    running = serve(StallingCoster(stall_s=3.0))
    try:
        for stream in (True, False):
            opts = BridgeOptions(stream=stream, transport=TransportOptions(
                deadline_s=0.3, connect_timeout_s=2.0))
            with BridgeCostModel(running.target, model=TINY, options=opts) as c:
                assert c.stats.streamed is stream
                t0 = time.monotonic()
                with pytest.raises(CostModelUnavailable,
                                   match="DEADLINE_EXCEEDED.*0.3 s deadline"):
                    c.step_cost(workload()[0])
                assert time.monotonic() - t0 < 1.5
                if stream:   # a failed stream stays failed: no half-answered state
                    t0 = time.monotonic()
                    with pytest.raises(CostModelUnavailable, match="DEADLINE_EXCEEDED"):
                        c.step_cost(workload()[1])
                    assert time.monotonic() - t0 < 0.2
    finally:
        running.stop(0)


def test_stream_killed_server_mid_run_is_unavailable_without_partial_results():
    proc, port = start_subprocess([str(Path(__file__).parent / "bridge_testlib.py"),
                                   "--die-after", "3", "--port", "0"])
    got = []
    try:
        with client(f"127.0.0.1:{port}") as c:
            assert c.stats.streamed
            t0 = time.monotonic()
            with pytest.raises(CostModelUnavailable, match="CostStream failed with UNAVAILABLE"):
                for batch in workload():
                    got.append(c.step_cost(batch))
            assert time.monotonic() - t0 < 5
    finally:
        stop_subprocess(proc)
    assert proc.returncode == 137 and 0 < len(got) < len(workload())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_stream_reopens_after_a_server_restart(roofline_server):
    port = _free_port()
    first = serve(h100_coster(), port=port)
    batches = workload()
    with client(f"127.0.0.1:{port}", lookahead_steps=0) as c:
        c.step_cost(batches[0])
        first.stop(0)
        second = serve(h100_coster(), port=port)
        try:
            cost = c.step_cost(batches[13])      # stream broken: reopened, resent
        finally:
            second.stop(0)
    with client(roofline_server.target, lookahead_steps=0) as ref:
        assert cost == ref.step_cost(batches[13])


def test_stream_version_mismatch_is_refused():
    running = serve(h100_coster(), protocol_version=pb.PROTOCOL_VERSION_CURRENT + 1)
    try:
        transport = BridgeTransport(running.target, FAST)
        stream = transport.open_stream()
        stream.send([pb.OpQuery(op_name="x", dtype="bf16")], 0)
        with pytest.raises(CostModelUnavailable, match="FAILED_PRECONDITION.*mismatch"):
            stream.recv()
        stream.close()
        transport.close()
    finally:
        running.stop(0)
