"""Serve an :class:`~adapters.common.coster.OpCoster` over gRPC.

Every server gets standard gRPC health checking (``grpc.health.v1.Health``, SERVING for
``""`` and for ``llmsim.v1.CostModelService``), server reflection, a receive/send
message-size limit, and the protocol version check: ``Describe``, ``CostBatch`` and every
``CostStream`` message refuse a request whose ``protocol_version`` differs from the
server's with FAILED_PRECONDITION. ``CostStream`` answers a request's needed queries in one
message and its speculative rest in a second (see ``cost_model.proto``).
Servers bind 127.0.0.1 unless told otherwise.

Robustness (each rule has a test in ``tests/bridge/test_bridge_reliability.py``):

* **Threads.** gRPC's synchronous server runs each RPC on a pool thread, and a streaming
  call (``CostStream``, ``Health.Watch``, reflection) holds its thread for as long as the
  client keeps it open, idle or not. The pool therefore has ``max_workers + max_streams``
  threads, and at most ``max_streams`` streaming calls are admitted at once
  (:class:`StreamSlots`); one more is refused at once with RESOURCE_EXHAUSTED (bridge
  clients then fall back to unary ``CostBatch``). Streams can thus never hold more than
  ``max_streams`` threads, and ``max_workers`` threads are always left for health checks,
  ``Describe`` and ``CostBatch``, however many clients idle on a stream. Server keepalive
  pings free the slot of a client that vanished without closing its connection.
* **Malformed messages.** Requests are parsed by the handlers, not by gRPC: bytes that
  are not the expected message are refused with INVALID_ARGUMENT. (gRPC's own
  deserialization failure inside a stream leaves the call unfinished, and the server's
  shutdown then waits for it forever.)
* **Answers.** A coster answer that is not a valid cost (NaN, infinite, negative, or above
  :data:`~llmsim.costmodel.base.MAX_STEP_COST_NS`; energy NaN, infinite or negative)
  is sent as an ``OP_ERROR_CODE_INTERNAL`` error instead (clients check too).
* **Shutdown.** :meth:`RunningServer.stop` waits at most ``grace_s`` plus
  ``STOP_MARGIN_S``; the command exits after SIGTERM/SIGINT even when a call will not end
  (a second signal exits at once).
* **Arguments.** Ports outside ``0..65535``, ``max_workers < 1``, a message limit outside
  ``1..2**31-1`` bytes and unbindable addresses are
  :class:`~llmsim.errors.ConfigError` errors naming the option; the command prints them
  on one line and exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import signal
import sys
import threading
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from adapters.common.coster import OpCoster, error_answer
from llmsim.costmodel.base import MAX_STEP_COST_NS, step_cost_is_valid
from llmsim.errors import ConfigError, LlmsimError
from llmsim.v1 import cost_model_pb2 as pb
from llmsim.v1 import cost_model_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

PROTOCOL_VERSION: int = pb.PROTOCOL_VERSION_CURRENT
SERVICE_NAME: str = pb.DESCRIPTOR.services_by_name["CostModelService"].full_name
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
MAX_MESSAGE_BYTES = 2**31 - 1
"""gRPC's own ceiling on a message-size option, bytes (a C ``int``)."""
DEFAULT_MAX_STREAMS = 8
"""Streaming calls admitted at once by default (a replay client holds one ``CostStream``)."""
MAX_THREADS = 1024
"""Ceiling on ``max_workers`` and on ``max_streams`` (each is a thread)."""
STOP_MARGIN_S = 5.0
"""How long :meth:`RunningServer.stop` waits past its grace period, seconds."""
KEEPALIVE_TIME_MS = 60_000
"""Server keepalive ping interval, ms: a client gone without a FIN is noticed in about
``KEEPALIVE_TIME_MS + KEEPALIVE_TIMEOUT_MS`` and its stream slot freed."""
KEEPALIVE_TIMEOUT_MS = 20_000


@dataclass(frozen=True, slots=True)
class _Malformed:
    """A request whose bytes are not the expected message (see :func:`_tolerant`)."""

    error: str


def _tolerant(parse: Callable[[bytes], object]) -> Callable[[bytes], object]:
    """A deserializer that returns :class:`_Malformed` instead of raising."""
    def deserialize(data: bytes) -> object:
        try:
            return parse(data)
        except Exception as exc:  # noqa: BLE001 - becomes INVALID_ARGUMENT in the handler
            return _Malformed(f"{type(exc).__name__}: {exc}")
    return deserialize


class StreamSlots(grpc.ServerInterceptor):
    """Admits at most ``max_streams`` streaming calls at once, of every service.

    A streaming handler runs inside a slot, taken in its pool thread when it starts and
    given back when it ends (normally, by error, or by cancellation); a call that finds
    no slot free is refused with RESOURCE_EXHAUSTED before it reads anything. Unary calls
    pass untouched.

    Args:
        max_streams: slots (0 refuses every streaming call).
    """

    def __init__(self, max_streams: int) -> None:
        self.max_streams = max_streams
        self._free = threading.BoundedSemaphore(max_streams) if max_streams else None

    def _enter(self, context: grpc.ServicerContext, method: str) -> None:
        if self._free is None or not self._free.acquire(blocking=False):
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                          f"{method}: all {self.max_streams} stream slots of this server are "
                          "in use; use CostBatch, or restart the server with a larger "
                          "--max-streams")

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None or not (handler.request_streaming or handler.response_streaming):
            return handler
        method = handler_call_details.method
        enter, free = self._enter, self._free

        def streamed(behavior):
            def run(request, context):
                enter(context, method)
                try:
                    yield from behavior(request, context)
                finally:
                    free.release()
            return run

        def unary_out(behavior):
            def run(request_iterator, context):
                enter(context, method)
                try:
                    return behavior(request_iterator, context)
                finally:
                    free.release()
            return run

        common = {"request_deserializer": handler.request_deserializer,
                  "response_serializer": handler.response_serializer}
        if handler.stream_stream is not None:
            return grpc.stream_stream_rpc_method_handler(streamed(handler.stream_stream),
                                                         **common)
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(streamed(handler.unary_stream),
                                                        **common)
        return grpc.stream_unary_rpc_method_handler(unary_out(handler.stream_unary), **common)


def _checked(answers: list[pb.OpAnswer], queries) -> list[pb.OpAnswer]:
    """``answers`` with every cost that is not a valid one replaced by an INTERNAL error."""
    out = answers
    for i, answer in enumerate(answers):
        if answer.WhichOneof("result") != "cost":
            continue
        latency_ns = answer.cost.latency_ns
        energy_j = answer.cost.energy_j if answer.cost.HasField("energy_j") else 0.0
        if step_cost_is_valid(latency_ns) and math.isfinite(energy_j) and energy_j >= 0:
            continue
        if out is answers:
            out = list(answers)
        log.error("coster priced %s at %r ns / %r J: not a cost", queries[i].op_name,
                  latency_ns, energy_j)
        out[i] = error_answer(pb.OP_ERROR_CODE_INTERNAL, (
            f"coster produced latency {latency_ns!r} ns, energy {energy_j!r} J (a cost is "
            f"finite, in [0, {MAX_STEP_COST_NS}] ns, energy >= 0)"))
    return out


class CostModelServicer(pb_grpc.CostModelServiceServicer):
    """``llmsim.v1.CostModelService`` over one coster.

    Args:
        coster: what prices the queries.
        protocol_version: version this server speaks.
        max_message_bytes: reported in ``Describe``, bytes.
        stream: offer ``CostStream``.
    """

    def __init__(self, coster: OpCoster, *, protocol_version: int = PROTOCOL_VERSION,
                 max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
                 stream: bool = True) -> None:
        self._coster = coster
        self._version = protocol_version
        self._max_message_bytes = max_message_bytes
        self._stream = stream
        self._busy = 0                      # coster calls in progress
        self._idle = threading.Condition()

    def wait_idle(self, timeout_s: float) -> bool:
        """Wait until no coster call is in progress; False when ``timeout_s`` passed first."""
        with self._idle:
            return self._idle.wait_for(lambda: self._busy == 0, timeout=timeout_s)

    def _coster_call(self, method, *args):
        with self._idle:
            self._busy += 1
        try:
            return method(*args)
        finally:
            with self._idle:
                self._busy -= 1
                self._idle.notify_all()

    def _check_request(self, request: Any, what: str, context: grpc.ServicerContext
                       ) -> None:
        if isinstance(request, _Malformed):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          f"malformed {what} message: {request.error}")
        if request.protocol_version != self._version:
            context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"protocol version mismatch: client speaks {request.protocol_version}, "
                f"server speaks {self._version}",
            )

    def Describe(self, request: pb.DescribeRequest, context: grpc.ServicerContext):
        self._check_request(request, "DescribeRequest", context)
        info = self._coster_call(self._coster.info)
        return pb.DescribeResponse(
            protocol_version=self._version,
            server_name=info.server_name,
            server_version=info.server_version,
            hardware=info.hardware,
            hardware_description=info.hardware_description,
            operator_kinds=list(info.operator_kinds),
            provides_energy=info.provides_energy,
            attention_detail=info.attention_detail,
            dtypes=list(info.dtypes),
            model_name=info.model_name,
            tp_degrees=list(info.tp_degrees),
            fingerprint=info.fingerprint,
            max_message_bytes=self._max_message_bytes,
            attributes=dict(info.attributes),
            supports_stream=self._stream,
        )

    def _answer(self, queries, context: grpc.ServicerContext, first_query: int = 0
                ) -> pb.CostBatchResponse:
        try:
            answers = self._coster_call(self._coster.cost_batch, queries)
        except Exception as exc:  # noqa: BLE001 - reported to the client, never swallowed
            log.exception("cost_batch failed")
            context.abort(grpc.StatusCode.INTERNAL, f"{type(exc).__name__}: {exc}")
        if len(answers) != len(queries):
            context.abort(grpc.StatusCode.INTERNAL,
                          f"coster returned {len(answers)} answers for {len(queries)} queries")
        return pb.CostBatchResponse(answers=_checked(answers, queries), first_query=first_query)

    def CostBatch(self, request: pb.CostBatchRequest, context: grpc.ServicerContext):
        self._check_request(request, "CostBatchRequest", context)
        return self._answer(request.queries, context)

    def CostStream(self, requests, context: grpc.ServicerContext):
        """Answer each request in order; needed queries first when the request says so.

        Runs in one of the server's stream slots (see :class:`StreamSlots`).
        """
        if not self._stream:
            context.abort(grpc.StatusCode.UNIMPLEMENTED, "CostStream is not offered")
        for i, request in enumerate(requests):
            self._check_request(request, f"CostStream request #{i + 1}", context)
            queries = request.queries
            needed = request.num_needed
            if 0 < needed < len(queries):
                # The client waits for this part only; the guesses are priced after it is
                # sent, while the client simulates on.
                yield self._answer(queries[:needed], context)
                yield self._answer(queries[needed:], context, first_query=needed)
            else:
                yield self._answer(queries, context)


def _add_servicer(servicer: CostModelServicer, server: grpc.Server) -> None:
    """Register ``servicer`` like the generated ``add_CostModelServiceServicer_to_server``,
    but with :func:`_tolerant` request parsing (malformed bytes reach the handler)."""
    describe = _tolerant(pb.DescribeRequest.FromString)
    batch = _tolerant(pb.CostBatchRequest.FromString)
    handlers = {
        "Describe": grpc.unary_unary_rpc_method_handler(
            servicer.Describe, request_deserializer=describe,
            response_serializer=pb.DescribeResponse.SerializeToString),
        "CostBatch": grpc.unary_unary_rpc_method_handler(
            servicer.CostBatch, request_deserializer=batch,
            response_serializer=pb.CostBatchResponse.SerializeToString),
        "CostStream": grpc.stream_stream_rpc_method_handler(
            servicer.CostStream, request_deserializer=batch,
            response_serializer=pb.CostBatchResponse.SerializeToString),
    }
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
    server.add_registered_method_handlers(SERVICE_NAME, handlers)


@dataclass(frozen=True, slots=True, kw_only=True)
class RunningServer:
    """A started server.

    Attributes:
        server: the gRPC server.
        address: host it is bound to.
        port: bound port (the real one when 0 was asked for).
        health: its health servicer (tests flip it to NOT_SERVING).
        servicer: the cost-model servicer.
    """

    server: grpc.Server
    address: str
    port: int
    health: health.HealthServicer
    servicer: CostModelServicer

    @property
    def target(self) -> str:
        """``host:port`` for clients (IPv6 hosts in brackets)."""
        return _host_port(self.address, self.port)

    def stop(self, grace_s: float | None = None) -> bool:
        """Stop serving: in-flight calls get ``grace_s`` to end (``None``: cancelled now).

        Waits at most ``grace_s + STOP_MARGIN_S`` seconds for the shutdown to finish.

        Returns:
            True when it finished within that time.
        """
        done = self.server.stop(grace_s).wait(timeout=(grace_s or 0.0) + STOP_MARGIN_S)
        if not done:
            log.warning("server %s did not finish stopping within %.1f s", self.target,
                        (grace_s or 0.0) + STOP_MARGIN_S)
        return done

    def wait_idle(self, timeout_s: float) -> bool:
        """Wait until no coster call is in progress; False when ``timeout_s`` passed first."""
        return self.servicer.wait_idle(timeout_s)


def _host_port(address: str, port: int) -> str:
    host = address.strip("[]")
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _check_serve_arguments(*, address: str, port: int, max_message_bytes: int,
                           max_workers: int, max_streams: int) -> None:
    """Raises ConfigError (field named as in :func:`serve`) for a value out of range."""
    def count(value: object, field: str, low: int, high: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ConfigError(f"{value!r} is not an integer in [{low}, {high}]", field=field)

    if not isinstance(address, str) or not address.strip("[]") or any(
            c.isspace() for c in address):
        raise ConfigError(f"{address!r} is not a host name or address", field="address")
    count(port, "port", 0, 65535)
    count(max_message_bytes, "max_message_bytes", 1, MAX_MESSAGE_BYTES)
    count(max_workers, "max_workers", 1, MAX_THREADS)
    count(max_streams, "max_streams", 0, MAX_THREADS)


def serve(coster: OpCoster, *, address: str = "127.0.0.1", port: int = 0,
          max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES, max_workers: int = 4,
          protocol_version: int = PROTOCOL_VERSION, stream: bool = True,
          max_streams: int = DEFAULT_MAX_STREAMS) -> RunningServer:
    """Start serving ``coster`` (non-blocking).

    Args:
        coster: what prices the queries.
        address: interface to bind; 127.0.0.1 by default (use 0.0.0.0 deliberately);
            IPv6 with or without brackets.
        port: TCP port in ``0..65535``, 0 for any free one.
        max_message_bytes: receive and send limit per message, bytes, ``1..2**31-1``.
        max_workers: threads kept for unary calls (health, ``Describe``, ``CostBatch``,
            reflection), >= 1.
        protocol_version: version this server speaks (tests use a wrong one).
        stream: offer ``CostStream`` (False serves like a server that has only
            ``CostBatch``; clients then fall back to it).
        max_streams: streaming calls (``CostStream``, ``Health.Watch``, reflection)
            admitted at once, each on a thread of its own (0 = none; ``CostStream`` is then
            not offered).

    Raises:
        ConfigError: a value out of range, or an address that cannot be bound (in use,
            not local, not resolvable); the field is named.
    """
    _check_serve_arguments(address=address, port=port, max_message_bytes=max_message_bytes,
                           max_workers=max_workers, max_streams=max_streams)
    options = [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.so_reuseport", 0),
        ("grpc.keepalive_time_ms", KEEPALIVE_TIME_MS),
        ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
    ]
    stream = stream and max_streams > 0
    pool = futures.ThreadPoolExecutor(max_workers=max_workers + max_streams,
                                      thread_name_prefix="bridge-rpc")
    server = grpc.server(pool, options=options, interceptors=(StreamSlots(max_streams),))
    servicer = CostModelServicer(coster, protocol_version=protocol_version,
                                 max_message_bytes=max_message_bytes, stream=stream)
    _add_servicer(servicer, server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in ("", SERVICE_NAME):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    where = _host_port(address, port)
    try:
        bound = server.add_insecure_port(where)
    except RuntimeError:
        bound = 0
    if bound == 0:
        pool.shutdown(wait=False)
        raise ConfigError(f"cannot bind {where} (address in use, not on this machine, or "
                          "not resolvable)", field="address")
    server.start()
    log.info("%s listening on %s (%d unary threads, %d stream slots)",
             coster.info().server_name, _host_port(address, bound), max_workers,
             max_streams)
    return RunningServer(server=server, address=address, port=bound, health=health_servicer,
                         servicer=servicer)


def add_server_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every adapter command takes."""
    parser.add_argument("--address", default="127.0.0.1",
                        help="interface to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=50051,
                        help="TCP port 0..65535, 0 = any free port")
    parser.add_argument("--max-message-mb", type=float, default=64.0,
                        help="largest request/response message, MiB (default 64, at most "
                             f"{MAX_MESSAGE_BYTES / 2**20:.0f})")
    parser.add_argument("--workers", type=int, default=4,
                        help="threads for unary calls: health, Describe, CostBatch (>= 1)")
    parser.add_argument("--max-streams", type=int, default=DEFAULT_MAX_STREAMS,
                        help="streaming calls (CostStream, Health.Watch, reflection) served "
                             "at once, each on a thread of its own; more are refused "
                             f"(default {DEFAULT_MAX_STREAMS}, 0 = none)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def _message_bytes(max_message_mb: float) -> int:
    """``--max-message-mb`` in bytes.

    Raises:
        ConfigError: not a finite size in ``(0, MAX_MESSAGE_BYTES]``.
    """
    if not math.isfinite(max_message_mb) or max_message_mb <= 0 or (
            max_message_mb * 2**20 > MAX_MESSAGE_BYTES):
        raise ConfigError(f"{max_message_mb!r} is not a size in (0, "
                          f"{MAX_MESSAGE_BYTES / 2**20:.0f}] MiB", field="--max-message-mb")
    return max(1, int(max_message_mb * 2**20))


_CLI_FIELDS = {"address": "--address", "port": "--port", "max_workers": "--workers",
               "max_streams": "--max-streams", "max_message_bytes": "--max-message-mb"}


def _close(coster: OpCoster) -> None:
    close = getattr(coster, "close", None)
    if close is not None:
        close()


def _build_and_serve(build: Callable[[argparse.Namespace], OpCoster],
                     args: argparse.Namespace) -> tuple[OpCoster, RunningServer]:
    """Check the arguments (before the coster is built: that can be slow), build, serve.

    Raises:
        LlmsimError: from the checks, the coster or :func:`serve`.
    """
    kw = {"address": args.address, "port": args.port,
          "max_message_bytes": _message_bytes(args.max_message_mb),
          "max_workers": args.workers, "max_streams": args.max_streams}
    _check_serve_arguments(**kw)
    coster = build(args)
    try:
        return coster, serve(coster, **kw)
    except BaseException:
        _close(coster)
        raise


def run_server_cli(build: Callable[[argparse.Namespace], OpCoster],
                   parser: argparse.ArgumentParser, argv: list[str] | None = None) -> int:
    """Parse ``argv``, build the coster, serve until SIGINT/SIGTERM.

    Prints one JSON line on stdout once bound, e.g.
    ``{"server": "llmsim-roofline", "address": "127.0.0.1", "port": 40123}``, so scripts
    started with ``--port 0`` learn the port. On the first SIGINT/SIGTERM in-flight calls
    get one second, then the coster is closed; if a call (a stuck coster) has not ended a
    second later, the process exits without closing it (a second signal exits at once,
    status ``128 + signal``). A bad argument or coster input is one
    ``PROG: error: ...`` line on stderr and status 2, never a traceback.

    Returns:
        Process exit code.
    """
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        if stop.is_set():
            os._exit(128 + signum)
        stop.set()

    try:
        coster, running = _build_and_serve(build, args)
    except LlmsimError as exc:
        if isinstance(exc, ConfigError) and exc.field in _CLI_FIELDS:
            exc = ConfigError(exc.reason, field=_CLI_FIELDS[exc.field])
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 2
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    print(json.dumps({"server": coster.info().server_name, "address": running.address,
                      "port": running.port}), flush=True)
    while not stop.wait(timeout=1.0):
        pass
    if running.stop(grace_s=1.0) and running.wait_idle(timeout_s=1.0):
        _close(coster)
        return 0
    # A coster call that does not end holds a pool thread, which the interpreter would
    # join at exit (and closing the coster could wait for it too): leave without it.
    log.warning("a call was still running at shutdown; exiting without waiting for it")
    logging.shutdown()
    sys.stdout.flush()
    os._exit(0)
