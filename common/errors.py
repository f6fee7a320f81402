"""One error table for every transport: each error kind has a gRPC code and an HTTP status, and
travels as google.rpc.Status with ErrorInfo (and BadRequest for field errors)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

DOMAIN = "agentrun"

# gRPC code -> canonical HTTP status (the mapping of google.rpc.Code; families refine it).
HTTP_STATUS: Mapping[grpc.StatusCode, int] = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}


class AgentrunError(Exception):
    code = grpc.StatusCode.INTERNAL
    reason = "INTERNAL"

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
        violations: Sequence[tuple[str, str]] = (),
    ) -> None:
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason
        self.metadata = dict(metadata or {})
        # (field path, description) pairs, sent as google.rpc.BadRequest.
        self.violations = list(violations)

    @property
    def http_status(self) -> int:
        return HTTP_STATUS[self.code]

    def trailers(self) -> tuple[tuple[str, str], ...]:
        """Plain trailing metadata sent besides the status (e.g. `retry-after`)."""
        return ()

    def to_status(self) -> grpc.Status:
        info = error_details_pb2.ErrorInfo(reason=self.reason, domain=DOMAIN, metadata=self.metadata)
        details = [_pack(info)]
        if self.violations:
            bad = error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(field=f, description=d)
                    for f, d in self.violations
                ]
            )
            details.append(_pack(bad))
        status = status_pb2.Status(code=self.code.value[0], message=self.message, details=details)
        packed = rpc_status.to_status(status)
        if not self.trailers():
            return packed
        return _Status(packed.code, packed.details, (*packed.trailing_metadata, *self.trailers()))


class InvalidArgument(AgentrunError):
    code = grpc.StatusCode.INVALID_ARGUMENT
    reason = "INVALID_ARGUMENT"

    @classmethod
    def fields(cls, violations: Sequence[tuple[str, str]]) -> InvalidArgument:
        summary = "; ".join(f"{f}: {d}" for f, d in violations)
        return cls(f"invalid request: {summary}", violations=violations)


class NotFound(AgentrunError):
    code = grpc.StatusCode.NOT_FOUND
    reason = "NOT_FOUND"


class AlreadyExists(AgentrunError):
    code = grpc.StatusCode.ALREADY_EXISTS
    reason = "ALREADY_EXISTS"


class FailedPrecondition(AgentrunError):
    code = grpc.StatusCode.FAILED_PRECONDITION
    reason = "FAILED_PRECONDITION"


class PermissionDenied(AgentrunError):
    code = grpc.StatusCode.PERMISSION_DENIED
    reason = "PERMISSION_DENIED"


class Unauthenticated(AgentrunError):
    """Missing credentials (reason UNAUTHENTICATED) or ones that are not accepted
    (INVALID_CREDENTIALS: unknown key, bad or expired token)."""

    code = grpc.StatusCode.UNAUTHENTICATED
    reason = "UNAUTHENTICATED"


class ResourceExhausted(AgentrunError):
    """A fair-use limit (reason RATE_LIMITED or QUEUE_FULL). When to try again travels twice: as
    ErrorInfo metadata `retry_after` and as trailing metadata `retry-after` (whole seconds), so a
    gateway can answer 429 with Retry-After without parsing the details."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    reason = "RESOURCE_EXHAUSTED"

    def __init__(
        self,
        message: str,
        *,
        retry_after_s: int,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        self.retry_after_s = max(1, retry_after_s)
        retry = {"retry_after": str(self.retry_after_s)}
        super().__init__(message, reason=reason, metadata={**(metadata or {}), **retry})

    def trailers(self) -> tuple[tuple[str, str], ...]:
        return (("retry-after", str(self.retry_after_s)),)


class Unavailable(AgentrunError):
    code = grpc.StatusCode.UNAVAILABLE
    reason = "UNAVAILABLE"


class Internal(AgentrunError):
    code = grpc.StatusCode.INTERNAL
    reason = "INTERNAL"


@dataclass(frozen=True)
class _Status(grpc.Status):
    code: grpc.StatusCode
    details: str
    trailing_metadata: tuple[tuple[str, str | bytes], ...]


def _pack(message: error_details_pb2.ErrorInfo | error_details_pb2.BadRequest) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed
