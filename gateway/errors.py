"""One parsed error for every failure the gateway answers (upstream google.rpc.Status, bad HTTP
input, unknown routes, crashes), the canonical google-JSON rendering of it, and the middleware
that turns whatever a handler raises into an error response in the route's own shape."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from google.protobuf import any_pb2, json_format
from google.rpc import error_details_pb2, status_pb2

from common.errors import DOMAIN, HTTP_STATUS

log = logging.getLogger(__name__)

_DETAILS_KEY = "grpc-status-details-bin"
# Upstream failures without ErrorInfo come from the transport (connection refused, crashes): their
# text names addresses and internals, so clients get a fixed message and the log gets the rest.
_GENERIC_MESSAGES: Mapping[grpc.StatusCode, str] = {
    grpc.StatusCode.UNAVAILABLE: "the agentrun server is unavailable; try again later",
    grpc.StatusCode.INTERNAL: "internal error",
    grpc.StatusCode.UNKNOWN: "internal error",
    grpc.StatusCode.DATA_LOSS: "internal error",
}
# HTTP statuses aiohttp raises itself (routing, body limits) -> the closest gRPC code.
_HTTP_CODES: Mapping[int, grpc.StatusCode] = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    404: grpc.StatusCode.NOT_FOUND,
    405: grpc.StatusCode.UNIMPLEMENTED,
    413: grpc.StatusCode.INVALID_ARGUMENT,
    415: grpc.StatusCode.INVALID_ARGUMENT,
}


@dataclass(frozen=True)
class FieldViolation:
    field: str  # proto field path, e.g. "input.message" (the server's BadRequest spelling)
    description: str


@dataclass(eq=False)
class ApiError(Exception):
    """A failure ready to render: families map it to their own body shape (see ErrorRenderer)."""

    status: int  # HTTP status
    code: grpc.StatusCode  # canonical code; its name is the google-JSON "status"
    message: str
    reason: str = ""
    domain: str = DOMAIN
    metadata: Mapping[str, str] = field(default_factory=dict)
    violations: tuple[FieldViolation, ...] = ()
    headers: Mapping[str, str] = field(default_factory=dict)
    upstream: bool = False  # the server's answer (from_rpc), not the gateway's own judgement

    def __str__(self) -> str:
        return f"{self.status} {self.code.name}: {self.message}"

    @classmethod
    def invalid(
        cls, message: str, violations: Iterable[FieldViolation] = (), *, reason: str = "INVALID_ARGUMENT"
    ) -> ApiError:
        return cls(400, grpc.StatusCode.INVALID_ARGUMENT, message, reason, violations=tuple(violations))

    @classmethod
    def too_large(cls, limit: int) -> ApiError:
        return cls(
            413,
            grpc.StatusCode.INVALID_ARGUMENT,
            f"request body is larger than {limit} bytes",
            "BODY_TOO_LARGE",
        )

    @classmethod
    def internal(cls) -> ApiError:
        return cls(500, grpc.StatusCode.INTERNAL, "internal error", "INTERNAL")

    @classmethod
    def from_http(cls, exc: web.HTTPException) -> ApiError:
        code = _HTTP_CODES.get(exc.status, grpc.StatusCode.UNKNOWN)
        reason = exc.reason.upper().replace(" ", "_")
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else {}
        message = {404: "no such route", 405: "method not allowed on this route"}.get(exc.status, exc.reason)
        return cls(exc.status, code, message, reason, headers=headers)

    @classmethod
    def from_rpc(cls, error: grpc.aio.AioRpcError) -> ApiError:
        code = error.code()
        info, violations = _unpack(_status_details(error))
        message = error.details() or code.name.lower()
        if info is None and code in _GENERIC_MESSAGES:
            log.warning("upstream %s: %s", code.name, message)
            message = _GENERIC_MESSAGES[code]
        metadata = dict(info.metadata) if info is not None else {}
        return cls(
            HTTP_STATUS.get(code, 500),
            code,
            message,
            info.reason if info is not None else code.name,
            info.domain if info is not None and info.domain else DOMAIN,
            metadata,
            tuple(violations),
            _headers(code, metadata),
            upstream=True,
        )


def _headers(code: grpc.StatusCode, metadata: Mapping[str, str]) -> dict[str, str]:
    """HTTP headers an upstream error implies, whatever the family's body: when to retry after a
    fair-use refusal (429), how to authenticate (401)."""
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED and metadata.get("retry_after", "").isdigit():
        return {"Retry-After": metadata["retry_after"]}
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return {"WWW-Authenticate": "Bearer"}
    return {}


ErrorRenderer = Callable[[ApiError], web.StreamResponse]


def canonical_body(error: ApiError) -> dict[str, Any]:
    """google JSON error style: {"error": {code, status, message, details: [ErrorInfo, BadRequest]}}."""
    info = error_details_pb2.ErrorInfo(reason=error.reason, domain=error.domain, metadata=error.metadata)
    details = [_any_json(info)]
    if error.violations:
        bad = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
                for v in error.violations
            ]
        )
        details.append(_any_json(bad))
    body = {"code": error.status, "status": error.code.name, "message": error.message, "details": details}
    return {"error": body}


def render_canonical(error: ApiError) -> web.Response:
    return web.json_response(canonical_body(error), status=error.status, headers=error.headers)


# The server's refusals of a caller, which it gives before it looks at a request.
ACCESS_CODES = frozenset(
    {grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.RESOURCE_EXHAUSTED}
)
Refusal = Callable[[web.Request], Awaitable["ApiError | None"]]


def middleware(
    renderer_for: Callable[[web.Request], ErrorRenderer], refusal: Refusal | None = None
) -> Middleware:
    """Every failure leaves as a rendered ApiError in the shape `renderer_for` picks for the
    request (route or path prefix), so nothing reaches the client as aiohttp's text pages.

    The server authenticates, authorizes and rate-limits a call before it validates it. A request
    the gateway refuses itself (a bad body, path or query) never reaches the server, so before
    answering with that 4xx it asks `refusal` for the server's verdict on the caller: 401, 403 or
    429, when due, come first, as they would from the server."""

    @web.middleware
    async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except ApiError as exc:
            error = exc
        except grpc.aio.AioRpcError as exc:  # a handler that called a stub directly
            error = ApiError.from_rpc(exc)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise  # redirects and the like are answers, not errors
            error = ApiError.from_http(exc)
        except (asyncio.CancelledError, ConnectionResetError):
            raise  # the client left; there is nobody to answer
        except Exception:
            log.exception("unhandled error on %s %s", request.method, request.path)
            error = ApiError.internal()
        if refusal is not None and _own_verdict(error):
            error = await refusal(request) or error
        return renderer_for(request)(error)

    return errors


def _own_verdict(error: ApiError) -> bool:
    return not error.upstream and 400 <= error.status < 500 and error.code not in ACCESS_CODES


def _status_details(error: grpc.aio.AioRpcError) -> status_pb2.Status | None:
    # grpc.aio has no rpc_status.from_call equivalent that tolerates every call type; the details
    # are the serialized google.rpc.Status in the trailing metadata.
    metadata: Any = error.trailing_metadata() or ()  # aio Metadata: (key, value) pairs
    for key, value in metadata:
        if key == _DETAILS_KEY and isinstance(value, bytes):
            try:
                return status_pb2.Status.FromString(value)
            except Exception:  # a malformed trailer must not turn a 4xx into a 500
                log.warning("upstream sent undecodable status details")
    return None


def _unpack(
    status: status_pb2.Status | None,
) -> tuple[error_details_pb2.ErrorInfo | None, list[FieldViolation]]:
    info: error_details_pb2.ErrorInfo | None = None
    violations: list[FieldViolation] = []
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violations += [FieldViolation(v.field, v.description) for v in bad.field_violations]
    return info, violations


def _any_json(message: error_details_pb2.ErrorInfo | error_details_pb2.BadRequest) -> dict[str, Any]:
    packed = any_pb2.Any()
    packed.Pack(message)
    result: dict[str, Any] = json_format.MessageToDict(packed)
    return result
