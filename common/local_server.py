"""The server side of the in-process channel (common/local_channel.py): a server's handlers
collected as grpc.aio collects them, the interceptors that run before each, and the context a
handler sees, whose abort ends the call as over the network."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from typing import Any

import grpc
import grpc.aio
from grpc.aio import Metadata

MetadataPairs = Sequence[tuple[str, str | bytes]]
MetadataArg = Metadata | MetadataPairs
# grpc.RpcMethodHandler and GenericRpcHandler: their stubs are generic in ways handlers never fill in.
Handler = Any
GenericHandler = Any


class Details(grpc.HandlerCallDetails):
    def __init__(self, method: str, metadata: MetadataPairs) -> None:
        self.method = method
        self.invocation_metadata = tuple(metadata)


class Aborted(grpc.aio.AbortError):
    def __init__(self, code: grpc.StatusCode, details: str, trailing: MetadataArg) -> None:
        super().__init__(details)
        self.code, self.details, self.trailing = code, details, tuple(trailing)


def error(code: grpc.StatusCode, details: str, trailing: MetadataArg = ()) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, Metadata(), Metadata(*trailing), details, None)


def failure(exc: BaseException) -> grpc.aio.AioRpcError:
    """What a caller sees of a handler that raised: its abort, or UNKNOWN as grpc.aio reports it."""
    if isinstance(exc, Aborted):
        return error(exc.code, exc.details, exc.trailing)
    if isinstance(exc, grpc.aio.AioRpcError):
        return exc
    return error(grpc.StatusCode.UNKNOWN, f"Unexpected {type(exc)}: {exc}")


class Context(grpc.aio.ServicerContext[Any, Any]):
    """The handler's view of its call: metadata in, abort out; the rest is a network's concern."""

    def __init__(self, metadata: MetadataArg, deadline: float | None) -> None:
        self.metadata = tuple(metadata)
        self._deadline = deadline
        self._code: grpc.StatusCode | None = None
        self._details: str | None = None
        self._trailing: tuple[tuple[str, str | bytes], ...] = ()

    async def abort(
        self, code: grpc.StatusCode, details: str = "", trailing_metadata: MetadataArg = ()
    ) -> Any:
        raise Aborted(code, details, trailing_metadata)

    async def abort_with_status(self, status: Any) -> Any:
        raise Aborted(status.code, status.details, status.trailing_metadata)

    def invocation_metadata(self) -> Metadata:
        return Metadata(*self.metadata)

    def time_remaining(self) -> float | None:  # type: ignore[override]  # None: no deadline, as grpc.aio
        if self._deadline is None:
            return None
        return max(0.0, self._deadline - asyncio.get_running_loop().time())

    def set_code(self, code: grpc.StatusCode) -> None:
        self._code = code

    def set_details(self, details: str) -> None:
        self._details = details

    def set_trailing_metadata(self, trailing_metadata: MetadataArg) -> None:
        self._trailing = tuple(trailing_metadata)

    def peer(self) -> str:
        return "local:"

    def peer_identities(self) -> Iterable[bytes] | None:
        return None

    def peer_identity_key(self) -> str | None:
        return None

    def auth_context(self) -> dict[str, Iterable[bytes]]:
        return {}

    async def read(self) -> Any:
        raise NotImplementedError("unary requests only")

    async def write(self, message: Any) -> None:
        raise NotImplementedError("answers are returned or yielded")

    async def send_initial_metadata(self, initial_metadata: MetadataArg) -> None:
        pass

    def set_compression(self, compression: grpc.Compression) -> None:
        pass

    def disable_next_message_compression(self) -> None:
        pass

    def ended(self) -> grpc.aio.AioRpcError | None:
        """A status set without an abort (set_code), as the call's end."""
        if self._code is None or self._code == grpc.StatusCode.OK:
            return None
        return error(self._code, self._details or "", self._trailing)


class LocalServer:
    """Collects handlers as a grpc.aio server does (pass it to `add_*Servicer_to_server`) and runs
    calls through `interceptors` to them."""

    def __init__(self, interceptors: Sequence[grpc.aio.ServerInterceptor[Any, Any]] = ()) -> None:
        self._interceptors = tuple(interceptors)
        self._methods: dict[str, Handler] = {}
        self._generic: list[GenericHandler] = []
        self.stopped = False

    def add_generic_rpc_handlers(self, handlers: Iterable[GenericHandler]) -> None:
        self._generic.extend(handlers)

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Handler]) -> None:
        self._methods.update({f"/{service}/{name}": h for name, h in handlers.items()})

    async def handler(self, details: grpc.HandlerCallDetails) -> Handler | None:
        return await self._chain(0, details)

    async def _chain(self, index: int, details: grpc.HandlerCallDetails) -> Handler | None:
        if index == len(self._interceptors):
            return self._lookup(details)

        async def next_(d: grpc.HandlerCallDetails) -> Handler:
            return await self._chain(index + 1, d)

        return await self._interceptors[index].intercept_service(next_, details)

    def _lookup(self, details: grpc.HandlerCallDetails) -> Handler | None:
        found = self._methods.get(details.method)
        if found is not None:
            return found
        for generic in self._generic:
            found = generic.service(details)
            if found is not None:
                return found
        return None
