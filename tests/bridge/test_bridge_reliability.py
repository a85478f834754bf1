"""Reliability of the cost bridge (issue 17): bad answers, bad settings, idle streams, SIGTERM.

Every server here is a real one on 127.0.0.1 port 0 (in a thread or a subprocess); every
wait is bounded.
"""

from __future__ import annotations

import math
import queue
import signal
import sqlite3
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import grpc
import pytest
from bridge_testlib import (
    FIXTURES,
    REPO,
    h100_coster,
    start_subprocess,
    stop_subprocess,
)
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import given, settings
from hypothesis import strategies as st

import adapters.common.server as server_mod
from adapters.common.coster import ServerInfo, cost_answer
from adapters.common.server import DEFAULT_MAX_STREAMS, SERVICE_NAME, serve
from llmsim.bridge import (
    BridgeCostModel,
    BridgeOptions,
    BridgeQueryError,
    TransportOptions,
)
from llmsim.bridge.client import parse_spec
from llmsim.bridge.transport import MAX_TIMEOUT_S, BridgeTransport
from llmsim.costmodel.base import MAX_STEP_COST_NS, PrefillChunk, StepBatch
from llmsim.errors import ConfigError, CostModelUnavailable
from llmsim.model.config import load_model_config
from llmsim.v1 import cost_model_pb2 as pb

TINY = load_model_config(FIXTURES / "tiny-llama.json")
FAST = TransportOptions(deadline_s=2.0, connect_timeout_s=2.0, max_retries=1, backoff_s=0.02)
METHOD = f"/{SERVICE_NAME}/"


def client(target: str, **kw) -> BridgeCostModel:
    return BridgeCostModel(target, model=TINY, options=BridgeOptions(transport=FAST, **kw))


def make_batch(i: int = 0) -> StepBatch:
    return StepBatch(prefills=(PrefillChunk(num_new_tokens=37 + i, num_cached_tokens=16),),
                     decode_context_lens=(5 + i, 90, 300))


# -- a cost answer that is not finite and bounded ends the run -------------------------


class OneBadOp:
    """The h100 roofline, except that ``op_name`` is priced at ``latency_ns`` (and/or
    carries ``energy_j``)."""

    def __init__(self, op_name: str, latency_ns: float | None = None,
                 energy_j: float | None = None) -> None:
        self.inner = h100_coster()
        self.op_name, self.latency_ns, self.energy_j = op_name, latency_ns, energy_j

    def info(self) -> ServerInfo:
        return self.inner.info()

    def cost_batch(self, queries: Sequence[pb.OpQuery]) -> list[pb.OpAnswer]:
        answers = self.inner.cost_batch(queries)
        for i, q in enumerate(queries):
            if q.op_name == self.op_name:
                good = answers[i].cost
                answers[i] = cost_answer(
                    good.latency_ns if self.latency_ns is None else self.latency_ns,
                    self.energy_j)
        return answers


@pytest.fixture
def foreign_server(monkeypatch):
    """Start servers that send whatever their coster says (no server-side check), like a
    bridge server that is not ours."""
    monkeypatch.setattr(server_mod, "_checked", lambda answers, queries: answers)
    started = []

    def start(coster):
        running = serve(coster)
        started.append(running)
        return running

    yield start
    for running in started:
        running.stop(0)


BAD_LATENCIES = [1e300, math.inf, -math.inf, math.nan, -1.0, float(MAX_STEP_COST_NS) * 1.01]


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "unary"])
@pytest.mark.parametrize("latency_ns", BAD_LATENCIES, ids=repr)
def test_unbounded_latency_ends_the_step_naming_the_op_and_value(foreign_server, stream,
                                                                 latency_ns):
    running = foreign_server(OneBadOp("qkv_proj", latency_ns=latency_ns))
    with client(running.target, stream=stream) as c:
        t0 = time.monotonic()
        with pytest.raises(BridgeQueryError) as info:
            c.step_cost(make_batch())
        assert time.monotonic() - t0 < 5
    err = info.value
    assert isinstance(err, CostModelUnavailable)
    assert err.code == "INVALID_ANSWER" and err.op_name == "qkv_proj"
    assert "qkv_proj" in str(err) and repr(latency_ns) in str(err)


def test_replay_against_a_server_answering_1e300_ends_with_an_error(foreign_server,
                                                                   tmp_path, capsys):
    from llmsim.cli.main import main

    running = foreign_server(OneBadOp("o_proj", latency_ns=1e300))
    out = tmp_path / "out"
    t0 = time.monotonic()
    rc = main(["replay", str(FIXTURES / "tiny-experiment.yaml"), "--no-progress",
               "--set", f"cost_model=grpc://{running.target}?deadline_s=2", "--out", str(out)])
    assert time.monotonic() - t0 < 30
    assert rc == 2
    err = capsys.readouterr().err
    assert "o_proj" in err and "1e+300" in err and "Traceback" not in err
    assert not out.exists()


def test_bad_energy_is_refused_and_bad_answers_are_never_cached(foreign_server, tmp_path):
    running = foreign_server(OneBadOp("o_proj", energy_j=math.nan))
    cache = tmp_path / "cache.sqlite"
    with client(running.target, cache_path=cache) as c:
        with pytest.raises(BridgeQueryError, match=r"o_proj.*energy nan"):
            c.step_cost(make_batch())
        with pytest.raises(BridgeQueryError):   # still refused, not remembered as a cost
            c.step_cost(make_batch())
    with sqlite3.connect(cache) as db:
        assert db.execute("SELECT COUNT(*) FROM answers WHERE query LIKE '%o_proj%'"
                          ).fetchone()[0] == 0
        assert db.execute("SELECT COUNT(*) FROM answers").fetchone()[0] > 0


class _Constant:
    """Every query priced at ``latency_ns``."""

    def __init__(self, latency_ns: float) -> None:
        self.inner = h100_coster()
        self.latency_ns = latency_ns

    def info(self) -> ServerInfo:
        return self.inner.info()

    def cost_batch(self, queries):
        return [cost_answer(self.latency_ns) for _ in queries]


def test_step_whose_total_exceeds_the_ceiling_is_refused(foreign_server):
    # every operator at 10% of the ceiling is a valid answer; a step of >10 of them is not
    running = foreign_server(_Constant(MAX_STEP_COST_NS / 10))
    with client(running.target) as c, pytest.raises(CostModelUnavailable,
                                                    match="MAX_STEP_COST_NS"):
        c.step_cost(make_batch())


def test_server_turns_its_coster_s_bad_numbers_into_errors():
    running = serve(OneBadOp("down_proj", latency_ns=math.nan))
    try:
        with client(running.target) as c, pytest.raises(BridgeQueryError) as info:
            c.step_cost(make_batch())
        assert info.value.code == "OP_ERROR_CODE_INTERNAL"
        assert info.value.op_name == "down_proj" and "nan" in str(info.value)
    finally:
        running.stop(0)


def test_persistent_cache_skips_rows_that_are_not_costs(tmp_path):
    running = serve(h100_coster())
    cache = tmp_path / "cache.sqlite"
    try:
        with client(running.target, cache_path=cache) as c:
            want = c.step_cost(make_batch())
        with sqlite3.connect(cache) as db:
            db.execute("UPDATE answers SET latency_ns = 1e300 WHERE query LIKE '%qkv_proj%'")
        with client(running.target, cache_path=cache) as c:
            assert c.step_cost(make_batch()) == want
            assert c.stats.persistent_hits > 0 and c.stats.queries_sent > 0  # re-asked
    finally:
        running.stop(0)


# -- timeouts and URLs ------------------------------------------------------------------


@pytest.mark.parametrize("field", ["deadline_s", "connect_timeout_s"])
@pytest.mark.parametrize("value", [math.nan, math.inf, -1.0, 0.0, MAX_TIMEOUT_S * 2, True])
def test_bad_timeouts_are_config_errors_naming_the_field(field, value):
    with pytest.raises(ConfigError) as info:
        TransportOptions(**{field: value})
    assert info.value.field == field


@pytest.mark.parametrize("kw", [{"max_retries": -1}, {"max_retries": 10**6},
                                {"backoff_s": math.nan}, {"backoff_s": -0.1},
                                {"max_message_bytes": 0}, {"max_message_bytes": 2**31}])
def test_bad_transport_counts_are_config_errors(kw):
    with pytest.raises(ConfigError) as info:
        TransportOptions(**kw)
    assert info.value.field == next(iter(kw))


@pytest.mark.parametrize("spec", [
    "grpc://127.0.0.1:50051?connect_timeout_s=nan", "grpc://127.0.0.1:50051?deadline_s=-1",
    "grpc://127.0.0.1:50051?deadline_s=inf", "grpc://127.0.0.1:50051?retries=-1",
    "grpc://127.0.0.1:50051?lookahead=-2", "grpc://127.0.0.1:50051?max_lookahead=x",
    "grpc://127.0.0.1:50051?deadline_s", "grpc://127.0.0.1:50051?cache=",
    "grpc://127.0.0.1:99999", "grpc://127.0.0.1:0", "grpc://127.0.0.1:-1",
    "grpc://127.0.0.1:port", "grpc://[::1:50051", "grpc://::1:50051", "grpc://[::1]",
    "grpc://127.0.0.1:50051/path", "grpc://user@127.0.0.1:50051", "http://127.0.0.1:50051",
    "grpc://:50051", "grpc://127.0.0.1:50051?nope=1",
])
def test_malformed_specs_are_config_errors(spec):
    with pytest.raises(ConfigError) as info:
        parse_spec(spec)
    assert info.value.field == "cost_model"
    assert spec in str(info.value)


def test_ipv6_and_plain_specs_parse():
    assert parse_spec("grpc://[::1]:50051")[0] == "[::1]:50051"
    target, options = parse_spec("grpc://localhost:7?deadline_s=2.5&stream=0&retries=0")
    assert target == "localhost:7"
    assert options.transport.deadline_s == 2.5 and options.transport.max_retries == 0
    assert not options.stream


def test_ipv6_loopback_server_and_client():
    try:
        running = serve(h100_coster(), address="::1")
    except ConfigError:
        pytest.skip("no IPv6 loopback here")
    try:
        assert running.target == f"[::1]:{running.port}"
        target, _ = parse_spec(f"grpc://[::1]:{running.port}")
        with client(target) as c:
            assert c.step_cost(make_batch()).duration_ns > 0
    finally:
        running.stop(0)


@pytest.mark.parametrize("timeout", ["nan", "-1", "0", "inf"])
def test_cli_describe_refuses_bad_timeouts_without_a_traceback(timeout, capsys):
    from llmsim.cli.main import main

    t0 = time.monotonic()
    assert main(["bridge", "describe", "127.0.0.1:1", "--timeout-s", timeout]) == 2
    assert time.monotonic() - t0 < 2
    err = capsys.readouterr().err
    assert "--timeout-s" in err and "Traceback" not in err


def test_cli_describe_refuses_a_bad_port_without_a_traceback(capsys):
    from llmsim.cli.main import main

    assert main(["bridge", "describe", "grpc://127.0.0.1:99999"]) == 2
    err = capsys.readouterr().err
    assert "99999" in err and "Traceback" not in err


# -- server arguments ------------------------------------------------------------------


@pytest.mark.parametrize("kw, field", [
    ({"port": 99999}, "port"), ({"port": -1}, "port"), ({"max_workers": 0}, "max_workers"),
    ({"max_streams": -1}, "max_streams"), ({"max_message_bytes": -1}, "max_message_bytes"),
    ({"max_message_bytes": 2**31}, "max_message_bytes"), ({"address": ""}, "address"),
    ({"address": "192.0.2.1"}, "address"),      # TEST-NET-1: not an address of this machine
])
def test_serve_refuses_bad_arguments(kw, field):
    with pytest.raises(ConfigError) as info:
        serve(h100_coster(), **kw)
    assert info.value.field == field


def test_serve_refuses_a_port_in_use():
    running = serve(h100_coster())
    try:
        with pytest.raises(ConfigError, match=str(running.port)) as info:
            serve(h100_coster(), port=running.port)
        assert info.value.field == "address"
    finally:
        running.stop(0)


@pytest.mark.parametrize("args, option", [
    (["--port", "99999"], "--port"), (["--port", "-3"], "--port"),
    (["--workers", "0"], "--workers"), (["--max-streams", "-1"], "--max-streams"),
    (["--max-message-mb", "-1"], "--max-message-mb"),
    (["--max-message-mb", "nan"], "--max-message-mb"),
    (["--max-message-mb", "4096"], "--max-message-mb"),
    (["--address", "192.0.2.1", "--port", "0"], "--address"),
    (["--hardware", "no-such-gpu"], "--hardware"),
])
def test_server_command_refuses_bad_arguments_in_one_line(args, option):
    import subprocess

    argv = ["--hardware", "h100-sxm", *args] if "--hardware" not in args else args
    proc = subprocess.run([sys.executable, "-m", "adapters.roofline", *argv],
                          capture_output=True, text=True, cwd=REPO, timeout=30, check=False,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""   # never bound, so no port line
    assert option in proc.stderr and "Traceback" not in proc.stderr


def test_scalesim_command_refuses_zero_sim_workers():
    import subprocess

    proc = subprocess.run([sys.executable, "-m", "adapters.scalesim", "--array",
                           "systolic-32x32", "--sim-workers", "0", "--port", "0"],
                          capture_output=True, text=True, cwd=REPO, timeout=30, check=False,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 2
    assert "--sim-workers" in proc.stderr and "Traceback" not in proc.stderr


# -- idle streams cannot starve health checks ------------------------------------------


class IdleStreams:
    """``n`` raw ``CostStream`` calls that send nothing (a client simulating, or a stuck
    one), then ``watches`` ``Health.Watch`` calls (which stay open after the first
    answer)."""

    def __init__(self, target: str, n: int, watches: int = 0) -> None:
        self.channel = grpc.insecure_channel(target)
        method = self.channel.stream_stream(METHOD + "CostStream",
                                            request_serializer=lambda b: b,
                                            response_deserializer=lambda b: b)
        self.queues = [queue.SimpleQueue() for _ in range(n)]
        self.calls = [method(self._requests(q)) for q in self.queues]
        watch = health_pb2_grpc.HealthStub(self.channel).Watch
        self.calls += [watch(health_pb2.HealthCheckRequest(service=SERVICE_NAME))
                       for _ in range(watches)]

    @staticmethod
    def _requests(q):
        while (item := q.get()) is not None:
            yield item

    def refused(self, expected: int, timeout_s: float = 5.0) -> list[int]:
        """Indexes of the calls that ended (bounded wait until ``expected`` did)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            done = [i for i, c in enumerate(self.calls) if c.done()]
            if len(done) >= expected:
                return done
            time.sleep(0.02)
        return [i for i, c in enumerate(self.calls) if c.done()]

    def close(self) -> None:
        for q in self.queues:
            q.put(None)
        for c in self.calls:
            c.cancel()
        self.channel.close()


def _health(target: str, timeout_s: float) -> int:
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return stub.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME),
                          timeout=timeout_s).status


@pytest.mark.parametrize("watches", [0, 4], ids=["cost-streams", "with-health-watches"])
def test_idle_streams_cannot_starve_health_describe_or_cost_batch(watches):
    running = serve(h100_coster())   # the defaults: 4 unary threads, 8 stream slots
    extra = 3
    idle = IdleStreams(running.target, DEFAULT_MAX_STREAMS + extra - watches, watches)
    try:
        refused = idle.refused(extra)
        assert len(refused) == extra      # exactly the streams beyond the slots
        time.sleep(0.2)
        assert len(idle.refused(extra)) == extra   # and no more
        for i in refused:
            assert idle.calls[i].code() is grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "--max-streams" in idle.calls[i].details()
        for _ in range(3):
            t0 = time.monotonic()
            assert _health(running.target, 1.0) == health_pb2.HealthCheckResponse.SERVING
            assert time.monotonic() - t0 < 1.0
        # a replay client is refused a stream and carries on with unary calls, same costs
        with client(running.target, stream=False) as unary:
            want = [unary.step_cost(make_batch(i)) for i in range(6)]
        with client(running.target) as c:
            got = [c.step_cost(make_batch(i)) for i in range(6)]
            assert not c.stats.streamed
        assert got == want
    finally:
        idle.close()
    # the slots come back when the idle clients go (the server notices within moments)
    try:
        deadline = time.monotonic() + 5
        while True:
            with client(running.target) as c:
                assert c.step_cost(make_batch()) == want[0]
                streamed = c.stats.streamed
            if streamed or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert streamed
    finally:
        running.stop(0)


def test_stream_slot_is_released_by_a_stream_that_failed():
    running = serve(h100_coster(), max_streams=1)
    try:
        bad = IdleStreams(running.target, 1)
        bad.queues[0].put(b"\xff\xff\xff")                 # malformed: the call fails
        assert bad.refused(1) == [0]
        assert bad.calls[0].code() is grpc.StatusCode.INVALID_ARGUMENT
        bad.close()
        with client(running.target) as c:
            c.step_cost(make_batch())
            assert c.stats.streamed
    finally:
        running.stop(0)


def test_malformed_unary_messages_are_invalid_argument():
    running = serve(h100_coster())
    try:
        with grpc.insecure_channel(running.target) as channel:
            for name in ("Describe", "CostBatch"):
                method = channel.unary_unary(METHOD + name, request_serializer=lambda b: b,
                                             response_deserializer=lambda b: b)
                with pytest.raises(grpc.RpcError) as info:
                    method(b"\xff\xff\xff\xff\x0f", timeout=2)
                assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
                assert "malformed" in info.value.details()
    finally:
        running.stop(0)


# -- SIGTERM always stops the server ----------------------------------------------------


def _sigterm_and_time(proc) -> float:
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=8)
    finally:
        stop_subprocess(proc)
    return time.monotonic() - t0


def test_sigterm_stops_the_server_after_malformed_stream_messages():
    proc, port = start_subprocess(["-m", "adapters.roofline", "--hardware", "h100-sxm",
                                   "--port", "0"])
    target = f"127.0.0.1:{port}"
    streams = IdleStreams(target, 6)
    try:
        garbage = [b"\xff\xff\xff\xff\x0f", b"\x0a\xff", b"\x12\x05abc"]
        for i, q in enumerate(streams.queues[:3]):
            q.put(garbage[i])
        wrong = pb.CostBatchRequest(protocol_version=pb.PROTOCOL_VERSION_CURRENT + 7)
        streams.queues[3].put(wrong.SerializeToString())
        streams.queues[4].put(pb.CostBatchRequest(
            protocol_version=pb.PROTOCOL_VERSION_CURRENT,
            queries=[pb.OpQuery(op_name="junk")]).SerializeToString())   # valid, then idle
        ended = streams.refused(4)
        assert sorted(ended)[:4] == [0, 1, 2, 3]
        assert {streams.calls[i].code() for i in range(3)} == {
            grpc.StatusCode.INVALID_ARGUMENT}
        assert streams.calls[3].code() is grpc.StatusCode.FAILED_PRECONDITION
        assert _health(target, 2.0) == health_pb2.HealthCheckResponse.SERVING
        elapsed = _sigterm_and_time(proc)
    finally:
        streams.close()
    assert proc.returncode == 0
    assert elapsed < 5


def test_sigterm_stops_a_server_whose_coster_is_stuck():
    proc, port = start_subprocess([str(Path(__file__).parent / "bridge_testlib.py"),
                                   "--stall-s", "120", "--port", "0"])
    transport = BridgeTransport(f"127.0.0.1:{port}", TransportOptions(
        deadline_s=60, connect_timeout_s=5, max_retries=0))
    transport.connect()
    errors: list[BaseException] = []

    def ask() -> None:
        try:
            transport.cost_batch([pb.OpQuery(op_name="x")])
        except CostModelUnavailable as exc:
            errors.append(exc)

    asker = threading.Thread(target=ask, daemon=True)
    asker.start()
    time.sleep(0.5)   # the call is inside the 120 s stall now
    try:
        elapsed = _sigterm_and_time(proc)
        asker.join(timeout=10)
    finally:
        transport.close()
    assert elapsed < 6
    assert proc.returncode == 0
    assert errors   # the client learned the call failed; no answer was made up


# -- fuzzing the boundaries -------------------------------------------------------------

SPEC_PIECES = st.sampled_from(["grpc://", "http://", "127.0.0.1", "[::1]", "::1", "[", "]",
                               ":", "50051", "99999", "0", "-1", "abc", "?", "&", "=",
                               "deadline_s", "connect_timeout_s", "retries", "lookahead",
                               "nan", "inf", "-3", "1e300", "2.5", "/", "@", "#", "%zz"])


@settings(max_examples=200, deadline=None)
@given(st.lists(SPEC_PIECES, max_size=10).map("".join) | st.text(max_size=40))
def test_parse_spec_returns_a_checked_target_or_raises_config_error(spec):
    try:
        target, options = parse_spec(spec)
    except ConfigError as exc:
        assert exc.field == "cost_model"
        return
    host, _, port = target.rpartition(":")
    assert host and 1 <= int(port) <= 65535
    t = options.transport
    for seconds in (t.deadline_s, t.connect_timeout_s):
        assert 0 < seconds <= MAX_TIMEOUT_S   # finite: NaN fails this


@settings(max_examples=200, deadline=None)
@given(st.floats(allow_nan=True, allow_infinity=True) | st.integers(-10, 10**6))
def test_transport_options_accept_only_bounded_positive_seconds(value):
    try:
        options = TransportOptions(deadline_s=value, connect_timeout_s=value)
    except ConfigError as exc:
        assert exc.field == "deadline_s"
        assert not (0 < value <= MAX_TIMEOUT_S)
        return
    assert 0 < options.deadline_s <= MAX_TIMEOUT_S
