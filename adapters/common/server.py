"""Serve an :class:`~adapters.common.coster.OpCoster` over gRPC.

Every server gets standard gRPC health checking (``grpc.health.v1.Health``, SERVING for
``""`` and for ``llmsim.v1.CostModelService``), server reflection, a receive/send
message-size limit, and the protocol version check: ``Describe``, ``CostBatch`` and every
``CostStream`` message refuse a request whose ``protocol_version`` differs from the
server's with FAILED_PRECONDITION. ``CostStream`` answers a request's needed queries in one
message and its speculative rest in a second (see ``cost_model.proto``).
Servers bind 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from adapters.common.coster import OpCoster
from llmsim.v1 import cost_model_pb2 as pb
from llmsim.v1 import cost_model_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

PROTOCOL_VERSION: int = pb.PROTOCOL_VERSION_CURRENT
SERVICE_NAME: str = pb.DESCRIPTOR.services_by_name["CostModelService"].full_name
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024


class CostModelServicer(pb_grpc.CostModelServiceServicer):
    """``llmsim.v1.CostModelService`` over one coster."""

    def __init__(self, coster: OpCoster, *, protocol_version: int = PROTOCOL_VERSION,
                 max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
                 stream: bool = True) -> None:
        self._coster = coster
        self._version = protocol_version
        self._max_message_bytes = max_message_bytes
        self._stream = stream

    def _check_version(self, client_version: int, context: grpc.ServicerContext) -> None:
        if client_version != self._version:
            context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"protocol version mismatch: client speaks {client_version}, "
                f"server speaks {self._version}",
            )

    def Describe(self, request: pb.DescribeRequest, context: grpc.ServicerContext):
        self._check_version(request.protocol_version, context)
        info = self._coster.info()
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
            answers = self._coster.cost_batch(queries)
        except Exception as exc:  # noqa: BLE001 - reported to the client, never swallowed
            log.exception("cost_batch failed")
            context.abort(grpc.StatusCode.INTERNAL, f"{type(exc).__name__}: {exc}")
        if len(answers) != len(queries):
            context.abort(grpc.StatusCode.INTERNAL,
                          f"coster returned {len(answers)} answers for {len(queries)} queries")
        return pb.CostBatchResponse(answers=answers, first_query=first_query)

    def CostBatch(self, request: pb.CostBatchRequest, context: grpc.ServicerContext):
        self._check_version(request.protocol_version, context)
        return self._answer(request.queries, context)

    def CostStream(self, requests, context: grpc.ServicerContext):
        """Answer each request in order; needed queries first when the request says so."""
        if not self._stream:
            context.abort(grpc.StatusCode.UNIMPLEMENTED, "CostStream is not offered")
        for request in requests:
            self._check_version(request.protocol_version, context)
            queries = request.queries
            needed = request.num_needed
            if 0 < needed < len(queries):
                # The client waits for this part only; the guesses are priced after it is
                # sent, while the client simulates on.
                yield self._answer(queries[:needed], context)
                yield self._answer(queries[needed:], context, first_query=needed)
            else:
                yield self._answer(queries, context)


@dataclass(frozen=True, slots=True, kw_only=True)
class RunningServer:
    """A started server.

    Attributes:
        server: the gRPC server.
        address: host it is bound to.
        port: bound port (the real one when 0 was asked for).
        health: its health servicer (tests flip it to NOT_SERVING).
    """

    server: grpc.Server
    address: str
    port: int
    health: health.HealthServicer

    @property
    def target(self) -> str:
        """``host:port`` for clients."""
        return f"{self.address}:{self.port}"

    def stop(self, grace_s: float | None = None) -> None:
        """Stop serving; waits until in-flight calls end or ``grace_s`` passes."""
        self.server.stop(grace_s).wait()


def serve(coster: OpCoster, *, address: str = "127.0.0.1", port: int = 0,
          max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES, max_workers: int = 4,
          protocol_version: int = PROTOCOL_VERSION, stream: bool = True) -> RunningServer:
    """Start serving ``coster`` (non-blocking).

    Args:
        coster: what prices the queries.
        address: interface to bind; 127.0.0.1 by default (use 0.0.0.0 deliberately).
        port: TCP port, 0 for any free one.
        max_message_bytes: receive and send limit per message, bytes.
        max_workers: RPC handler threads.
        protocol_version: version this server speaks (tests use a wrong one).
        stream: offer ``CostStream`` (False serves like a server that has only
            ``CostBatch``; clients then fall back to it).

    Raises:
        OSError: the address could not be bound.
    """
    options = [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.so_reuseport", 0),
    ]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers), options=options)
    pb_grpc.add_CostModelServiceServicer_to_server(
        CostModelServicer(coster, protocol_version=protocol_version,
                          max_message_bytes=max_message_bytes, stream=stream), server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in ("", SERVICE_NAME):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    bound = server.add_insecure_port(f"{address}:{port}")
    if bound == 0:
        raise OSError(f"cannot bind {address}:{port}")
    server.start()
    log.info("%s listening on %s:%d", coster.info().server_name, address, bound)
    return RunningServer(server=server, address=address, port=bound, health=health_servicer)


def add_server_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every adapter command takes."""
    parser.add_argument("--address", default="127.0.0.1",
                        help="interface to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=50051, help="TCP port, 0 = any free port")
    parser.add_argument("--max-message-mb", type=float, default=64.0,
                        help="largest request/response message, MiB (default 64)")
    parser.add_argument("--workers", type=int, default=4, help="RPC handler threads")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def run_server_cli(build: Callable[[argparse.Namespace], OpCoster],
                   parser: argparse.ArgumentParser, argv: list[str] | None = None) -> int:
    """Parse ``argv``, build the coster, serve until SIGINT/SIGTERM.

    Prints one JSON line on stdout once bound, e.g.
    ``{"server": "llmsim-roofline", "address": "127.0.0.1", "port": 40123}``, so scripts
    started with ``--port 0`` learn the port.

    Returns:
        Process exit code.
    """
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    coster = build(args)
    running = serve(coster, address=args.address, port=args.port,
                    max_message_bytes=int(args.max_message_mb * 1024 * 1024),
                    max_workers=args.workers)
    print(json.dumps({"server": coster.info().server_name, "address": running.address,
                      "port": running.port}), flush=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    running.stop(grace_s=1.0)
    close = getattr(coster, "close", None)
    if close is not None:
        close()
    return 0
