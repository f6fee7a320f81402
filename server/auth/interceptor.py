"""Where auth happens: one grpc.aio server interceptor (installed by server/app.py) in front of every
call, so that no RPC can be added without it.

Every method but health and reflection needs credentials while auth is on, including methods no
service implements (an unauthenticated caller cannot even probe which exist). The interceptor
authenticates the caller from the call's metadata (`Guard.authenticate`), checks its role against the
deserialized request of RunService methods (`Guard.authorize`), and only then runs the handler, with
the caller in a context variable that handlers read with `current_identity()`. A refused call aborts
with the error's google.rpc.Status before its handler starts. While auth is off every call is
UNSCOPED.

The request is parsed here too, after authentication: gRPC hands the handler the raw bytes, and bytes
that are no valid request message (truncated, wrong wire types, invalid UTF-8 in a string) end the
call with INVALID_ARGUMENT and a generic message, not with UNKNOWN and the decoder's text."""

from __future__ import annotations

import contextlib
import contextvars
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc
from agentrun.v1 import run_service_pb2

from common.errors import AgentrunError, Internal, InvalidArgument
from server.auth.guard import Guard
from server.auth.identity import Identity

log = logging.getLogger(__name__)
Ctx = grpc.aio.ServicerContext[Any, Any]
if TYPE_CHECKING:
    Handler = grpc.RpcMethodHandler[Any, Any]
    _ServerInterceptor = grpc.aio.ServerInterceptor[Any, Any]
else:  # neither is generic at run time
    Handler = grpc.RpcMethodHandler
    _ServerInterceptor = grpc.aio.ServerInterceptor

_RUN_SERVICE = run_service_pb2.DESCRIPTOR.services_by_name["RunService"]
RUN_SERVICE = f"/{_RUN_SERVICE.full_name}/"
RUN_SERVICE_METHODS = _RUN_SERVICE.methods_by_name
# Open without credentials: clients and load balancers call these before they have any.
OPEN = ("/grpc.health.v1.Health/", "/grpc.reflection.")

# Set by the interceptor inside each call's handler; grpc.aio runs every call in its own task, so
# the value is that call's and goes with it.
_caller: contextvars.ContextVar[Identity] = contextvars.ContextVar("agentrun_caller")


def current_identity() -> Identity:
    """Who is making the call being handled. Raises in a handler the interceptor did not admit: no
    handler may fall back to unscoped access."""
    try:
        return _caller.get()
    except LookupError:
        raise RuntimeError("no caller identity: this call did not pass through AuthInterceptor") from None


async def _abort(context: Ctx, exc: Exception) -> None:
    if not isinstance(exc, AgentrunError):
        log.error("unexpected %s in auth", type(exc).__name__, exc_info=exc)
        exc = Internal("internal error")
    status = exc.to_status()
    await context.abort(status.code, status.details, status.trailing_metadata)


def _refusal(exc: Exception) -> Handler:
    """A handler of any arity that fails the call with `exc` before reading its request."""

    async def refuse(requests: Any, context: Ctx) -> None:
        await _abort(context, exc)

    return grpc.stream_stream_rpc_method_handler(refuse)


def _request_type(method: str | None) -> str:
    if method is not None and method in RUN_SERVICE_METHODS:
        return str(RUN_SERVICE_METHODS[method].input_type.full_name)
    return "request"


def _admitted(handler: Handler, caller: Identity, method: str | None) -> Handler:
    """`handler` taking the request's raw bytes: it parses them, runs the role check of RunService's
    `method` (None: another service) on the request, and sets the caller for it."""
    parse: Callable[[bytes], Any] | None = handler.request_deserializer

    def admit(data: Any) -> Any:
        """The request, for the caller to go on with; raises what the call must end with."""
        try:
            request = parse(data) if parse is not None else data
        except Exception:  # whatever the decoder makes of the bytes, they are the caller's
            # Built here, not per call: only a malformed request needs it.
            raise InvalidArgument(f"request is not a valid {_request_type(method)} message") from None
        if method is not None:
            Guard.authorize(caller, method, request)
        _caller.set(caller)
        return request

    if handler.unary_unary is not None:
        unary: Callable[[Any, Ctx], Awaitable[Any]] = handler.unary_unary  # type: ignore[assignment]

        async def unary_unary(data: Any, context: Ctx) -> Any:
            try:
                request = admit(data)
            except Exception as exc:
                await _abort(context, exc)
            return await unary(request, context)

        return grpc.unary_unary_rpc_method_handler(unary_unary, None, handler.response_serializer)

    streaming: Callable[[Any, Ctx], AsyncGenerator[Any, None]] = handler.unary_stream  # type: ignore[assignment]

    async def unary_stream(data: Any, context: Ctx) -> AsyncIterator[Any]:
        try:
            request = admit(data)  # before anything is sent
        except Exception as exc:
            await _abort(context, exc)
        async with contextlib.aclosing(streaming(request, context)) as responses:
            async for response in responses:
                yield response

    return grpc.unary_stream_rpc_method_handler(unary_stream, None, handler.response_serializer)


class AuthInterceptor(_ServerInterceptor):
    def __init__(self, guard: Guard) -> None:
        self.guard = guard

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler:
        method = handler_call_details.method
        handler = await continuation(handler_call_details)
        if method.startswith(OPEN):
            return handler
        try:
            caller = self.guard.authenticate(handler_call_details.invocation_metadata or ())
        except Exception as exc:
            return _refusal(exc)
        if handler is None:  # no such method: UNIMPLEMENTED, told to an authenticated caller only
            return handler
        if handler.request_streaming:
            # No request to check a role against before the handler runs: refuse rather than skip.
            log.error("%s takes a request stream, which AuthInterceptor does not support", method)
            return _refusal(Internal("internal error"))
        run_service_method = method.removeprefix(RUN_SERVICE) if method.startswith(RUN_SERVICE) else None
        return _admitted(handler, caller, run_service_method)
