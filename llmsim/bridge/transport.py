"""The client's gRPC side: connect, health check, version check, deadlines, retries.

Every call has a deadline. UNAVAILABLE (server down, connection refused or reset) is retried
a bounded number of times with exponential back-off; every other failure, and running out of
retries, raises :class:`~llmsim.errors.CostModelUnavailable` naming the server, the call and
the gRPC status. Nothing is ever substituted for a failed answer.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from llmsim.errors import CostModelUnavailable
from llmsim.v1 import cost_model_pb2 as pb
from llmsim.v1 import cost_model_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

PROTOCOL_VERSION: int = pb.PROTOCOL_VERSION_CURRENT
SERVICE_NAME: str = pb.DESCRIPTOR.services_by_name["CostModelService"].full_name


@dataclass(frozen=True, slots=True, kw_only=True)
class TransportOptions:
    """How the client talks to a server.

    Attributes:
        deadline_s: deadline of each RPC, seconds.
        connect_timeout_s: time allowed to connect and pass the health check, seconds.
        max_retries: retries of an RPC that failed with UNAVAILABLE.
        backoff_s: first back-off before a retry, seconds (doubles each retry).
        max_message_bytes: largest message sent or received, bytes.
    """

    deadline_s: float = 10.0
    connect_timeout_s: float = 5.0
    max_retries: int = 3
    backoff_s: float = 0.05
    max_message_bytes: int = 64 * 1024 * 1024


class BridgeTransport:
    """One channel to one bridge server."""

    def __init__(self, target: str, options: TransportOptions = TransportOptions(), *,
                 protocol_version: int = PROTOCOL_VERSION) -> None:
        self.target = target
        self.options = options
        self.protocol_version = protocol_version
        self.num_rpcs = 0
        self._channel = grpc.insecure_channel(target, options=[
            ("grpc.max_receive_message_length", options.max_message_bytes),
            ("grpc.max_send_message_length", options.max_message_bytes),
            ("grpc.enable_retries", 0),
        ])
        self._stub = pb_grpc.CostModelServiceStub(self._channel)

    def close(self) -> None:
        """Close the channel."""
        self._channel.close()

    def connect(self) -> pb.DescribeResponse:
        """Wait for the server, check its health, then ``Describe`` it and check versions.

        Raises:
            CostModelUnavailable: not reachable within ``connect_timeout_s``, not SERVING,
                or speaking another protocol version.
        """
        timeout = self.options.connect_timeout_s
        try:
            grpc.channel_ready_future(self._channel).result(timeout=timeout)
        except grpc.FutureTimeoutError as exc:
            raise CostModelUnavailable(
                f"cost bridge {self.target}: no server reachable within {timeout:g} s") from exc
        health = health_pb2_grpc.HealthStub(self._channel)
        reply = self._call(health.Check, health_pb2.HealthCheckRequest(service=SERVICE_NAME),
                           "health check", timeout)
        if reply.status != health_pb2.HealthCheckResponse.SERVING:
            status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
            raise CostModelUnavailable(f"cost bridge {self.target}: server is {status}")
        info = self._call(self._stub.Describe,
                          pb.DescribeRequest(protocol_version=self.protocol_version),
                          "Describe", timeout)
        if info.protocol_version != self.protocol_version:
            raise CostModelUnavailable(
                f"cost bridge {self.target}: protocol version mismatch: client speaks "
                f"{self.protocol_version}, server {info.server_name} speaks "
                f"{info.protocol_version}")
        return info

    def cost_batch(self, queries: Sequence[pb.OpQuery]) -> list[pb.OpAnswer]:
        """Price ``queries`` in one RPC; answers in query order.

        Raises:
            CostModelUnavailable: the call failed, or the answer count is wrong.
        """
        request = pb.CostBatchRequest(protocol_version=self.protocol_version, queries=queries)
        reply = self._call(self._stub.CostBatch, request, "CostBatch", self.options.deadline_s)
        if len(reply.answers) != len(queries):
            raise CostModelUnavailable(
                f"cost bridge {self.target}: {len(reply.answers)} answers for "
                f"{len(queries)} queries")
        return list(reply.answers)

    def _call(self, method, request, what: str, timeout_s: float):
        attempt = 0
        while True:
            self.num_rpcs += 1
            try:
                return method(request, timeout=timeout_s)
            except grpc.RpcError as exc:
                code = exc.code()
                if code is grpc.StatusCode.UNAVAILABLE and attempt < self.options.max_retries:
                    delay = self.options.backoff_s * (2 ** attempt)
                    attempt += 1
                    log.warning("cost bridge %s: %s UNAVAILABLE, retry %d/%d in %.3f s",
                                self.target, what, attempt, self.options.max_retries, delay)
                    time.sleep(delay)
                    continue
                detail = exc.details() or ""
                if code is grpc.StatusCode.DEADLINE_EXCEEDED:
                    detail = f"no answer within the {timeout_s:g} s deadline"
                raise CostModelUnavailable(
                    f"cost bridge {self.target}: {what} failed with {code.name}: {detail}"
                    + (f" (after {attempt} retries)" if attempt else "")) from exc
