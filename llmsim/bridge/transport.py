"""The client's gRPC side: connect, health check, version check, deadlines, retries.

Every call has a deadline. UNAVAILABLE (server down, connection refused or reset) is retried
a bounded number of times with exponential back-off; every other failure, and running out of
retries, raises :class:`~llmsim.errors.CostModelUnavailable` naming the server, the call and
the gRPC status. Nothing is ever substituted for a failed answer.

Two ways to price queries: :meth:`BridgeTransport.cost_batch` (one unary ``CostBatch``
call) and :class:`CostStream` (one ``CostStream`` call kept open for the whole run, one
request message per step: a message costs about half a unary call in Python gRPC, and the
server answers the needed queries before it prices the guesses). A stream has the same
guarantees as the unary call: every answer awaited is due within ``deadline_s`` (the call is
cancelled when it is late), and UNAVAILABLE reopens the stream and resends what is
unanswered, at most ``max_retries`` times. A server whose stream slots are all taken refuses
a new stream with RESOURCE_EXHAUSTED before answering anything: :meth:`CostStream.recv`
raises :class:`StreamRefused`, and the client carries on with unary calls.

Every duration option is checked once, at construction (:func:`check_seconds`): NaN,
infinite, negative or absurdly long timeouts are a :class:`~llmsim.errors.ConfigError`
instead of a call that never returns.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from llmsim.errors import ConfigError, CostModelUnavailable
from llmsim.v1 import cost_model_pb2 as pb
from llmsim.v1 import cost_model_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

_R = TypeVar("_R")
# What the stream's reader thread hands over: an answer, the call's error, or None at its end.
_Reply = pb.CostBatchResponse | grpc.RpcError | None

PROTOCOL_VERSION: int = pb.PROTOCOL_VERSION_CURRENT
SERVICE_NAME: str = pb.DESCRIPTOR.services_by_name["CostModelService"].full_name

MAX_TIMEOUT_S: float = 86_400.0
"""Longest deadline or connect timeout accepted, seconds (one day): far above any answer a
bridge server gives (a SCALE-Sim batch takes minutes at worst), and a bound that keeps a
mistyped value from turning into a call that never returns."""

MAX_RETRIES: int = 100
"""Most UNAVAILABLE retries accepted (the back-off doubles each time, so more is a hang)."""

MAX_BACKOFF_S: float = 60.0
"""Longest back-off before one retry, seconds (the doubling stops there)."""

MAX_MESSAGE_BYTES: int = 2**31 - 1
"""gRPC's own limit on one message, bytes (its size options are C ``int``)."""


def check_seconds(value: object, *, field: str, allow_zero: bool = False) -> float:
    """``value`` as a duration in seconds, or a :class:`ConfigError` naming ``field``.

    Accepted: a finite real number in ``(0, MAX_TIMEOUT_S]`` (``[0, ...]`` with
    ``allow_zero``). NaN, infinities, negative values and bools are refused: a NaN deadline
    makes gRPC wait forever.

    Raises:
        ConfigError: not such a number.
    """
    low = "[0" if allow_zero else "(0"
    if (isinstance(value, bool) or not isinstance(value, (int, float))
            or not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero)
            or value > MAX_TIMEOUT_S):
        raise ConfigError(f"{value!r} is not a number of seconds in {low}, {MAX_TIMEOUT_S:g}]",
                          field=field)
    return float(value)


def check_count(value: object, *, field: str, low: int, high: int) -> int:
    """``value`` as an integer in ``[low, high]``, or a :class:`ConfigError` naming ``field``.

    Raises:
        ConfigError: not such an integer.
    """
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(f"{value!r} is not an integer in [{low}, {high}]", field=field)
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class TransportOptions:
    """How the client talks to a server (checked at construction).

    Attributes:
        deadline_s: deadline of each RPC, seconds, in ``(0, MAX_TIMEOUT_S]``.
        connect_timeout_s: time allowed to connect and pass the health check, seconds, in
            ``(0, MAX_TIMEOUT_S]``.
        max_retries: retries of an RPC that failed with UNAVAILABLE, ``[0, MAX_RETRIES]``.
        backoff_s: first back-off before a retry, seconds (doubles each retry, up to
            ``MAX_BACKOFF_S``), in ``[0, MAX_BACKOFF_S]``.
        max_message_bytes: largest message sent or received, bytes, in
            ``[1, MAX_MESSAGE_BYTES]``.

    Raises:
        ConfigError: a value out of its range (the field is named).
    """

    deadline_s: float = 10.0
    connect_timeout_s: float = 5.0
    max_retries: int = 3
    backoff_s: float = 0.05
    max_message_bytes: int = 64 * 1024 * 1024

    def __post_init__(self) -> None:
        check_seconds(self.deadline_s, field="deadline_s")
        check_seconds(self.connect_timeout_s, field="connect_timeout_s")
        check_seconds(self.backoff_s, field="backoff_s", allow_zero=True)
        if self.backoff_s > MAX_BACKOFF_S:
            raise ConfigError(f"{self.backoff_s!r} is above {MAX_BACKOFF_S:g} s",
                              field="backoff_s")
        check_count(self.max_retries, field="max_retries", low=0, high=MAX_RETRIES)
        check_count(self.max_message_bytes, field="max_message_bytes", low=1,
                    high=MAX_MESSAGE_BYTES)


class StreamRefused(CostModelUnavailable):
    """The server refused a ``CostStream`` (RESOURCE_EXHAUSTED: all its stream slots are in
    use) before answering anything on it; unary ``CostBatch`` calls still work."""


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
        info: pb.DescribeResponse = self._call(self._stub.Describe,
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

    def open_stream(self) -> CostStream:
        """A :class:`CostStream` on this channel (the call opens with the first request)."""
        return CostStream(self)

    def _call(self, method: Callable[..., _R], request: object, what: str,
              timeout_s: float) -> _R:
        attempt = 0
        while True:
            self.num_rpcs += 1
            try:
                return method(request, timeout=timeout_s)
            except grpc.RpcError as exc:
                code = exc.code()
                if code is grpc.StatusCode.UNAVAILABLE and attempt < self.options.max_retries:
                    delay = _backoff_s(self.options, attempt)
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


def _backoff_s(options: TransportOptions, attempt: int) -> float:
    """Back-off before retry ``attempt + 1``, seconds: doubling, capped at MAX_BACKOFF_S."""
    return min(options.backoff_s * 2.0 ** attempt, MAX_BACKOFF_S)


@dataclass(slots=True)
class _Outstanding:
    """A stream request not fully answered yet.

    Attributes:
        tag: the caller's handle, returned with each part.
        queries: the queries still unanswered, in request order.
        offset: index of ``queries[0]`` in the caller's original request.
        parts: ``(first_query, count)`` of the responses still due, in order.
    """

    tag: object
    queries: list[pb.OpQuery]
    offset: int
    parts: deque[tuple[int, int]] = field(default_factory=deque)


def _parts(num_queries: int, num_needed: int) -> deque[tuple[int, int]]:
    if 0 < num_needed < num_queries:
        return deque([(0, num_needed), (num_needed, num_queries - num_needed)])
    return deque([(0, num_queries)])


class CostStream:
    """One ``CostStream`` call for a run: :meth:`send` requests, :meth:`recv` their answers.

    Requests are answered in order, a request with ``0 < num_needed < len(queries)`` in two
    parts (needed first). A reader thread takes each answer off the call as soon as it
    arrives, so a part that came while the simulation ran costs :meth:`recv` no wait.
    :meth:`recv` waits at most ``deadline_s`` for the next part. Not thread-safe: one
    simulation thread uses it.

    Raises (from :meth:`recv`):
        CostModelUnavailable: the stream failed (after ``max_retries`` reopenings on
            UNAVAILABLE), ended early, or the answer was late or malformed.
    """

    def __init__(self, transport: BridgeTransport) -> None:
        self._transport = transport
        self._options = transport.options
        self._outstanding: deque[_Outstanding] = deque()
        self._requests: queue.SimpleQueue[pb.CostBatchRequest | None] | None = None
        self._replies: queue.SimpleQueue[_Reply] | None = None
        self._call: grpc.Call | None = None
        self._answered_on_call = 0   # replies received on the current call
        self._failure: CostModelUnavailable | None = None   # a failed stream stays failed

    # -- public -----------------------------------------------------------------------

    @property
    def num_outstanding(self) -> int:
        """Requests with answers still due."""
        return len(self._outstanding)

    def send(self, queries: list[pb.OpQuery], num_needed: int, tag: object = None) -> None:
        """Queue one request (the first ``num_needed`` queries are needed now, 0 = all).

        Raises:
            CostModelUnavailable: the stream failed before.
        """
        if self._failure is not None:
            raise self._failure
        if self._call is None:
            self._open()
        entry = _Outstanding(tag=tag, queries=list(queries), offset=0,
                             parts=_parts(len(queries), num_needed))
        self._outstanding.append(entry)
        self._write(entry.queries, num_needed)

    def recv(self) -> tuple[object, int, list[pb.OpAnswer]]:
        """The next part: ``(tag, index of its first query in the request, answers)``."""
        if self._failure is not None:
            raise self._failure
        if not self._outstanding:
            raise RuntimeError("recv() with no request outstanding")
        try:
            return self._recv()
        except CostModelUnavailable as exc:
            self._failure = exc
            self._end_call()
            raise

    def take_unanswered(self) -> list[tuple[object, int, list[pb.OpQuery]]]:
        """Forget every outstanding request and return what is unanswered of each:
        ``(tag, index of its first unanswered query in the request, those queries)``.

        Used after :class:`StreamRefused` to ask the same queries by unary calls.
        """
        out = []
        for entry in self._outstanding:
            first = entry.parts[0][0]
            out.append((entry.tag, first, entry.queries[first - entry.offset:]))
        self._outstanding.clear()
        return out

    def _recv(self) -> tuple[object, int, list[pb.OpAnswer]]:
        attempt = 0
        while True:
            if self._replies is None:
                raise RuntimeError("recv() before the stream was opened")
            try:
                reply = self._replies.get(timeout=self._options.deadline_s)
            except queue.Empty:
                raise CostModelUnavailable(
                    f"cost bridge {self._transport.target}: CostStream failed with "
                    f"DEADLINE_EXCEEDED: no answer within the {self._options.deadline_s:g} s "
                    "deadline") from None
            if isinstance(reply, pb.CostBatchResponse):
                self._answered_on_call += 1
                return self._match(reply)
            if reply is None:
                raise CostModelUnavailable(
                    f"cost bridge {self._transport.target}: CostStream ended with answers "
                    "still due")
            code = reply.code()
            if code is grpc.StatusCode.UNAVAILABLE and attempt < self._options.max_retries:
                delay = _backoff_s(self._options, attempt)
                attempt += 1
                log.warning("cost bridge %s: CostStream UNAVAILABLE, retry %d/%d in %.3f s",
                            self._transport.target, attempt, self._options.max_retries, delay)
                time.sleep(delay)
                self._reopen()
                continue
            if code is grpc.StatusCode.RESOURCE_EXHAUSTED and not self._answered_on_call:
                raise StreamRefused(
                    f"cost bridge {self._transport.target}: CostStream refused with "
                    f"RESOURCE_EXHAUSTED: {reply.details() or ''}")
            name = code.name if code is not None else "UNKNOWN"
            raise CostModelUnavailable(
                f"cost bridge {self._transport.target}: CostStream failed with {name}: "
                f"{reply.details() or ''}" + (f" (after {attempt} retries)" if attempt else ""))

    def close(self) -> None:
        """End the call."""
        self._end_call()

    # -- internals --------------------------------------------------------------------

    def _open(self) -> None:
        requests: queue.SimpleQueue[pb.CostBatchRequest | None] = queue.SimpleQueue()
        replies: queue.SimpleQueue[_Reply] = queue.SimpleQueue()

        def request_iterator() -> Iterator[pb.CostBatchRequest]:
            while (request := requests.get()) is not None:
                yield request

        call = self._transport._stub.CostStream(request_iterator())

        def read() -> None:
            """Move every reply (then ``None``, or the call's error) to ``replies``."""
            try:
                for reply in call:
                    replies.put(reply)
                replies.put(None)
            except grpc.RpcError as exc:
                replies.put(exc)

        self._requests, self._replies, self._call = requests, replies, call
        self._answered_on_call = 0
        threading.Thread(target=read, daemon=True,
                         name=f"bridge-reader-{self._transport.target}").start()

    def _end_call(self) -> None:
        if self._requests is not None:
            self._requests.put(None)
        if self._call is not None:
            self._call.cancel()
        self._requests = self._call = None

    def _reopen(self) -> None:
        """New call; resend every unanswered query (a needed part stays needed)."""
        self._end_call()
        self._open()
        for entry in self._outstanding:
            first = entry.parts[0][0]
            entry.queries = entry.queries[first - entry.offset:]
            entry.offset = first
            self._write(entry.queries, entry.parts[0][1] if len(entry.parts) > 1 else 0)

    def _write(self, queries: list[pb.OpQuery], num_needed: int) -> None:
        if self._requests is None:
            raise RuntimeError("write before the stream was opened")
        self._transport.num_rpcs += 1
        self._requests.put(pb.CostBatchRequest(
            protocol_version=self._transport.protocol_version, queries=queries,
            num_needed=num_needed))

    def _match(self, reply: pb.CostBatchResponse) -> tuple[object, int, list[pb.OpAnswer]]:
        entry = self._outstanding[0]
        first, count = entry.parts[0]
        got_first = reply.first_query + entry.offset
        if got_first != first or len(reply.answers) != count:
            raise CostModelUnavailable(
                f"cost bridge {self._transport.target}: CostStream answered queries "
                f"{got_first}..{got_first + len(reply.answers)} where "
                f"{first}..{first + count} were due")
        entry.parts.popleft()
        if not entry.parts:
            self._outstanding.popleft()
        return entry.tag, first, list(reply.answers)
