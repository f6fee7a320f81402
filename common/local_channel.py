"""A grpc.aio channel that calls a server's handlers in the same process: what the gateway uses when
`agentrun serve` runs both, so a request costs no loopback HTTP/2 hop, no serialisation of the
answer and no gRPC core call objects (about half of an open SSE stream's memory).

Everything between the stub and the handler stays as over the network: the server's interceptors
run on every call (auth, roles), each call's handler runs in its own task with a fresh context (as
grpc.aio runs it), requests go through their serialiser and the handler's parser (a malformed one
fails the same way), the request size limit holds, deadlines expire as DEADLINE_EXCEEDED, aborts
arrive as AioRpcError with their trailing metadata (google.rpc.Status details), and cancelling a call
cancels its handler. Answers are handed over as the handler made them, not copied: callers must
not change them.

Only unary-request methods (all RunService and Health have) are served; a streamed request is
UNIMPLEMENTED."""

from __future__ import annotations

import asyncio
import contextvars
import inspect
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Generator
from typing import Any, Final, Generic, TypeVar, cast

import grpc
import grpc.aio
from grpc.aio import Metadata

from common.local_server import Context, Details, LocalServer, MetadataArg, error, failure

Resp = TypeVar("Resp")
_EOF: Final[Any] = grpc.aio.EOF  # type: ignore[attr-defined]  # in grpc.aio, not in its stubs

# grpc.aio's server default (grpc.max_receive_message_length), which the server does not raise.
MAX_REQUEST_BYTES: Final = 4 * 1024 * 1024
# Answers a stream's handler may run ahead of its reader: gRPC's flow control window plays this
# part on the network; a stalled reader stalls the handler rather than growing memory.
STREAM_BUFFER: Final = 64


class _Call(Generic[Resp]):
    """What unary and stream calls share: the request's way to the handler and the call's status."""

    def __init__(
        self,
        server: LocalServer,
        method: str,
        request: bytes,
        metadata: MetadataArg,
        timeout: float | None,
    ) -> None:
        loop = asyncio.get_running_loop()
        self._server, self._method, self._request = server, method, request
        self._deadline = None if timeout is None else loop.time() + timeout
        self._context = Context(metadata, self._deadline)
        self._status: grpc.aio.AioRpcError | None = None  # None while running, or ended OK
        self._ended = False
        self._callbacks: list[Callable[[Any], None]] = []
        self._cancelled = False  # by cancel(): grpc.aio then raises CancelledError to its awaiters

    async def _open(self) -> Any:
        """The handler's result for the request: a coroutine's answer or an async iterator."""
        if self._server.stopped:
            raise error(grpc.StatusCode.UNAVAILABLE, "the server is shutting down")
        if len(self._request) > MAX_REQUEST_BYTES:
            raise error(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"SERVER: Received message larger than max ({len(self._request)} vs. {MAX_REQUEST_BYTES})",
            )
        handler = await self._server.handler(Details(self._method, self._context.metadata))
        if handler is None:
            raise error(grpc.StatusCode.UNIMPLEMENTED, "Method not found!")
        parse = handler.request_deserializer
        request = parse(self._request) if parse is not None else self._request
        if handler.unary_unary is not None:
            return handler.unary_unary(request, self._context)
        if handler.unary_stream is not None:
            return handler.unary_stream(request, self._context)
        if handler.stream_stream is not None:  # e.g. a refusal that serves any arity

            async def one() -> AsyncIterator[Any]:
                yield request

            return handler.stream_stream(one(), self._context)
        raise error(grpc.StatusCode.UNIMPLEMENTED, "streamed requests are not served in process")

    def _end(self, status: grpc.aio.AioRpcError | None) -> None:
        if self._ended:
            return
        self._ended, self._status = True, status
        for callback in self._callbacks:
            callback(self)

    # grpc.aio.Call's surface
    def add_done_callback(self, callback: Callable[[Any], None]) -> None:
        if self._ended:
            callback(self)
        else:
            self._callbacks.append(callback)

    def done(self) -> bool:
        return self._ended

    def cancelled(self) -> bool:
        return self._cancelled

    def _cancel(self, task: asyncio.Task[Any]) -> bool:
        if self._ended:
            return False
        self._cancelled = True
        task.cancel()
        self._end(error(grpc.StatusCode.CANCELLED, "Locally cancelled by application!"))
        return True

    def time_remaining(self) -> float | None:
        return self._context.time_remaining()

    async def initial_metadata(self) -> Metadata:
        return Metadata()

    async def trailing_metadata(self) -> Metadata:
        if self._status is None:
            return Metadata()
        trailing = self._status.trailing_metadata()  # a Metadata: _error makes it so
        return trailing if isinstance(trailing, Metadata) else Metadata()

    async def code(self) -> grpc.StatusCode:
        return self._status.code() if self._status is not None else grpc.StatusCode.OK

    async def details(self) -> str:
        return (self._status.details() or "") if self._status is not None else ""

    async def wait_for_connection(self) -> None:
        pass


def _task(coro: Awaitable[Any]) -> asyncio.Task[Any]:
    # A fresh context, as grpc.aio gives each call: the caller's context variables (its identity,
    # its span) are not the handler's, and the handler's do not leak back.
    return asyncio.get_running_loop().create_task(_run(coro), context=contextvars.Context())


async def _run(coro: Awaitable[Any]) -> Any:
    return await coro


class LocalUnaryCall(_Call[Resp], grpc.aio.UnaryUnaryCall[Any, Resp]):
    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self._task = _task(self._answer())

    async def _answer(self) -> Any:
        opened = await self._open()
        answer = await opened
        ended = self._context.ended()
        if ended is not None:
            raise ended
        return answer

    def cancel(self) -> bool:
        return self._cancel(self._task)

    def __await__(self) -> Generator[Any, None, Resp]:
        return self._result().__await__()

    async def _result(self) -> Resp:
        try:
            timeout = None if self._deadline is None else self._deadline - asyncio.get_running_loop().time()
            async with asyncio.timeout(timeout):
                answer = await self._task  # a cancelled caller cancels the handler with it
        except TimeoutError:
            self._task.cancel()
            raise self._ending(error(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")) from None
        except asyncio.CancelledError:
            self._cancel(self._task)  # the caller was cancelled: so is the call (a no-op after cancel())
            raise
        except Exception as exc:
            raise self._ending(failure(exc)) from None
        self._end(None)
        return cast(Resp, answer)

    def _ending(self, status: grpc.aio.AioRpcError) -> grpc.aio.AioRpcError:
        self._end(status)
        return status


class LocalStreamCall(_Call[Resp], grpc.aio.UnaryStreamCall[Any, Resp]):
    """A server-streaming call: the handler runs in its own task, at most STREAM_BUFFER answers
    ahead of the reader; `read_nowait` hands over answers already made, so a reader can take
    several at once."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self._buffer: deque[Resp] = deque()
        self._readable: asyncio.Future[None] | None = None  # set while read() waits
        self._writable: asyncio.Future[None] | None = None  # set while the handler waits for room
        self._task = _task(self._pump())

    async def _pump(self) -> None:
        status: grpc.aio.AioRpcError | None = None
        try:
            timeout = None if self._deadline is None else self._deadline - asyncio.get_running_loop().time()
            async with asyncio.timeout(timeout):
                await self._drain(await self._open())
            status = self._context.ended()
        except TimeoutError:
            status = error(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")
        except asyncio.CancelledError:
            status = error(grpc.StatusCode.CANCELLED, "Locally cancelled by application!")
        except Exception as exc:
            status = failure(exc)
        finally:
            self._end(status)
            self._wake()

    async def _drain(self, answers: Any) -> None:
        if not inspect.isasyncgen(answers) and inspect.isawaitable(answers):
            await answers  # a handler that only aborts
            return
        async for answer in answers:
            self._buffer.append(cast(Resp, answer))
            self._wake()
            while len(self._buffer) >= STREAM_BUFFER:
                self._writable = asyncio.get_running_loop().create_future()
                await self._writable

    def _wake(self) -> None:
        if self._readable is not None and not self._readable.done():
            self._readable.set_result(None)

    def read_nowait(self) -> Resp | None:
        """The next answer if one is ready; None if the reader would have to wait (or it ended)."""
        if not self._buffer:
            return None
        answer = self._buffer.popleft()
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)
        return answer

    async def read(self) -> Any:
        while True:
            answer = self.read_nowait()
            if answer is not None:
                return answer
            if self._ended:
                if self._cancelled:
                    raise asyncio.CancelledError()  # as grpc.aio: reading a call one cancelled
                if self._status is not None:
                    raise self._status
                return _EOF
            self._readable = asyncio.get_running_loop().create_future()
            try:
                await self._readable
            finally:
                self._readable = None

    async def _answers(self) -> AsyncIterator[Resp]:
        while True:
            answer = await self.read()
            if answer is _EOF:
                return
            yield answer

    def __aiter__(self) -> AsyncIterator[Resp]:
        return self._answers()

    def cancel(self) -> bool:
        if not self._cancel(self._task):
            return False
        if self._readable is not None and not self._readable.done():
            self._readable.cancel()
        return True


class _Method(grpc.aio.UnaryUnaryMultiCallable[Any, Any], grpc.aio.UnaryStreamMultiCallable[Any, Any]):
    """One method of the channel: each call starts a `call` (LocalUnaryCall or LocalStreamCall)."""

    def __init__(
        self,
        call: type[_Call[Any]],
        server: LocalServer,
        method: str,
        serialize: Callable[[Any], bytes] | None,
    ) -> None:
        self._call, self._server, self._method, self._serialize = call, server, method, serialize or bytes

    def __call__(
        self,
        request: Any,
        timeout: float | None = None,
        metadata: MetadataArg | None = None,
        credentials: grpc.CallCredentials | None = None,
        wait_for_ready: bool | None = None,
        compression: grpc.Compression | None = None,
    ) -> Any:
        return self._call(self._server, self._method, self._serialize(request), metadata or (), timeout)


class LocalChannel(grpc.aio.Channel):
    """Stubs built on it (`RunServiceStub(channel)`) call `server`'s handlers directly."""

    def __init__(self, server: LocalServer) -> None:
        self._server = server

    def unary_unary(
        self,
        method: str,
        request_serializer: Callable[[Any], bytes] | None = None,
        response_deserializer: Callable[[bytes], Any] | None = None,
        _registered_method: bool | None = False,
    ) -> _Method:
        return _Method(LocalUnaryCall, self._server, method, request_serializer)

    def unary_stream(
        self,
        method: str,
        request_serializer: Callable[[Any], bytes] | None = None,
        response_deserializer: Callable[[bytes], Any] | None = None,
        _registered_method: bool | None = False,
    ) -> _Method:
        return _Method(LocalStreamCall, self._server, method, request_serializer)

    def stream_unary(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("streamed requests are not served in process")

    def stream_stream(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("streamed requests are not served in process")

    async def close(self, grace: float | None = None) -> None:
        pass  # calls belong to their callers, which cancel them

    def get_state(self, try_to_connect: bool = False) -> grpc.ChannelConnectivity:
        return grpc.ChannelConnectivity.READY

    async def wait_for_state_change(self, last_observed_state: grpc.ChannelConnectivity) -> None:
        await asyncio.Event().wait()  # never changes

    async def channel_ready(self) -> None:
        pass

    async def __aenter__(self) -> LocalChannel:
        return self

    async def __aexit__(self, *exc: object) -> None:
        pass
