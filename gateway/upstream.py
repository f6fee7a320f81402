"""The gateway's gRPC channels to the agentrun server, its stubs, and the calls families make.
Unary calls share one channel (HTTP/2: each call is a stream on it, so many are in flight at once).
StreamRun calls, which stay open as long as their SSE clients, go over a pool of channels, each of
its own connection, at most STREAMS_PER_CHANNEL of them on one: a server or proxy may cap the
streams of a connection (HTTP/2 MAX_CONCURRENT_STREAMS, often 100 or 128), and past the cap gRPC
holds new calls until others end (or the server refuses them), so on one connection the SSE stream
past the cap would hang while the others stay open."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TypeVar

import grpc
from agentrun.v1 import run_service_pb2, run_service_pb2_grpc
from aiohttp import web
from google.protobuf import message_factory
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc

from common.tracing import TRACE_HEADERS, current_traceparent
from gateway import keys
from gateway.errors import ACCESS_CODES, ApiError

R = TypeVar("R")
Metadata = Sequence[tuple[str, str]]
StreamCall = grpc.aio.UnaryStreamCall[run_service_pb2.StreamRunRequest, run_service_pb2.StreamRunResponse]

SERVICE = run_service_pb2.DESCRIPTOR.services_by_name["RunService"]
RUN_SERVICE = SERVICE.full_name
# Set on a request once the server has judged its caller (a call came back, whatever its answer).
CONSULTED: web.RequestKey[bool] = web.RequestKey("agentrun.gateway.consulted", bool)
# Request headers passed on as gRPC metadata: the server does auth and tenancy once for every
# transport, so the gateway forwards credentials rather than judging them.
FORWARDED_HEADERS = ("authorization", "x-api-key", "x-request-id", "traceparent", "tracestate")
_CHANNEL_OPTIONS = [
    # Runs carry whole answers, tool results and 1 MB inputs; gRPC's 4 MiB default is too tight.
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    # Idle HTTP/2 connections through NATs and proxies: ping so a dead upstream is noticed.
    ("grpc.keepalive_time_ms", 30_000),
    # An upstream like dns:///agentrun:50051 that resolves to several replicas: spread calls over all.
    ("grpc.lb_policy_name", "round_robin"),
]
# RFC 9113 asks servers to allow at least 100 concurrent streams on a connection.
STREAMS_PER_CHANNEL = 100
# Without it, channels with equal target and options share one connection (gRPC's global pool).
_OWN_CONNECTION = ("grpc.use_local_subchannel_pool", 1)


class StreamChannels:
    """Channels for long-lived streams, opened as needed so that none carries more than
    `per_channel` open calls; kept until the app closes (a quiet channel costs one connection)."""

    def __init__(self, target: str, per_channel: int = STREAMS_PER_CHANNEL) -> None:
        self.target = target
        self.per_channel = per_channel
        self._stubs: list[run_service_pb2_grpc.RunServiceStub] = []
        self._channels: list[grpc.aio.Channel] = []
        self._open: list[int] = []  # open calls per channel

    def open_call(self, message: run_service_pb2.StreamRunRequest, metadata: Metadata) -> StreamCall:
        index = self._free_channel()
        call: StreamCall = self._stubs[index].StreamRun(message, metadata=metadata)
        self._open[index] += 1
        call.add_done_callback(lambda _: self._ended(index))
        return call

    def _free_channel(self) -> int:
        for index, count in enumerate(self._open):
            if count < self.per_channel:
                return index
        channel = grpc.aio.insecure_channel(self.target, options=[*_CHANNEL_OPTIONS, _OWN_CONNECTION])
        self._channels.append(channel)
        self._stubs.append(run_service_pb2_grpc.RunServiceStub(channel))
        self._open.append(0)
        return len(self._channels) - 1

    def _ended(self, index: int) -> None:
        self._open[index] -= 1

    @property
    def open_calls(self) -> int:
        return sum(self._open)

    async def close(self) -> None:
        for channel in self._channels:
            await channel.close(None)


class Upstream:
    def __init__(self, channel: grpc.aio.Channel, streams: StreamChannels | None = None) -> None:
        self.channel = channel
        self.runs = run_service_pb2_grpc.RunServiceStub(channel)
        self._health = health_pb2_grpc.HealthStub(channel)
        self.streams = streams

    async def call(
        self,
        rpc: Callable[..., Awaitable[R]],
        message: Message,
        request: web.Request | None = None,
        *,
        timeout: float | None = None,
    ) -> R:
        """One unary call, e.g. `await up.call(up.runs.GetRun, GetRunRequest(...), request)`;
        a gRPC failure leaves as ApiError (the parsed google.rpc.Status)."""
        try:
            response = await rpc(message, metadata=forwarded_metadata(request), timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            if request is not None and exc.code() not in ACCESS_CODES:
                request[CONSULTED] = True
            raise ApiError.from_rpc(exc) from None
        if request is not None:
            request[CONSULTED] = True
        return response

    async def refusal(self, rpc: str, request: web.Request, timeout: float) -> ApiError | None:
        """The server's refusal of this request's caller for RunService's `rpc` (401, 403, 429),
        or None. Asked with an empty request, which the server refuses as invalid (or answers,
        for reads) only after it has authenticated, authorized and rate-limited the caller, and
        which never starts, changes or deletes anything."""
        method = SERVICE.methods_by_name[rpc]
        message = message_factory.GetMessageClass(method.input_type)()
        if "page_size" in method.input_type.fields_by_name:
            setattr(message, "page_size", 1)  # noqa: B010 - any of several message types
        call: Callable[..., Awaitable[Message]] = getattr(self.runs, rpc)
        try:
            await call(message, metadata=forwarded_metadata(request), timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            if exc.code() in ACCESS_CODES:
                return ApiError.from_rpc(exc)
        return None

    def stream_run(
        self, message: run_service_pb2.StreamRunRequest, request: web.Request | None = None
    ) -> StreamCall:
        """Opens StreamRun; the caller reads it and must cancel it (see gateway.sse)."""
        metadata = forwarded_metadata(request)
        if self.streams is not None:
            return self.streams.open_call(message, metadata)
        call: StreamCall = self.runs.StreamRun(message, metadata=metadata)
        return call

    async def serving(self, timeout: float) -> tuple[bool, str]:
        """The standard gRPC health check of RunService: (serving?, status or error code name)."""
        check = health_pb2.HealthCheckRequest(service=RUN_SERVICE)
        try:
            response = await self._health.Check(check, timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            return False, exc.code().name
        status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
        return response.status == health_pb2.HealthCheckResponse.SERVING, status


def forwarded_metadata(request: web.Request | None) -> Metadata:
    if request is None:
        return ()
    metadata = []
    # The gateway's own span is the server span's parent when tracing is on; otherwise the caller's
    # trace headers pass through unchanged.
    traceparent = current_traceparent()
    for name in FORWARDED_HEADERS:
        value = request.headers.get(name)
        if traceparent and name in TRACE_HEADERS:
            continue
        if value is not None and value.isascii() and value.isprintable():  # gRPC rejects the rest
            metadata.append((name, value))
    if traceparent:
        metadata.append(("traceparent", traceparent))
    return tuple(metadata)


def upstream(request: web.Request) -> Upstream:
    return request.app[keys.UPSTREAM]


async def channel_ctx(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: the channels for the app's lifetime; closing them cancels calls still open. A
    channel the app was given (keys.CHANNEL, in process) is its owner's to close."""
    if keys.CHANNEL in app:
        app[keys.UPSTREAM] = Upstream(app[keys.CHANNEL])
        yield
        return
    target = app[keys.SETTINGS].upstream
    channel = grpc.aio.insecure_channel(target, options=_CHANNEL_OPTIONS)
    streams = StreamChannels(target, STREAMS_PER_CHANNEL)
    app[keys.UPSTREAM] = Upstream(channel, streams)
    try:
        yield
    finally:
        await streams.close()
        await channel.close(None)
