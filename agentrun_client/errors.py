"""Errors of the agentrun client: every failed call raises one `AgentrunError`, a subclass per status
code, carrying the google.rpc details the server sends (ErrorInfo reason and metadata, BadRequest
field violations)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import grpc
from google.rpc import error_details_pb2, status_pb2

from common.errors import DOMAIN

_DETAILS_KEY = "grpc-status-details-bin"


class AgentrunError(Exception):
    """A call that failed. `code` is the gRPC status code; `reason` the machine-readable reason of the
    server's ErrorInfo (for example RUN_NOT_FOUND), or the code's name when there is none; `metadata`
    the ErrorInfo metadata; `violations` the (field, description) pairs of a BadRequest."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(
        self,
        message: str,
        *,
        code: grpc.StatusCode | None = None,
        reason: str = "",
        metadata: Mapping[str, str] | None = None,
        violations: Sequence[tuple[str, str]] = (),
        trailing_metadata: Sequence[tuple[str, str | bytes]] = (),
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.reason = reason or self.code.name
        self.metadata: dict[str, str] = dict(metadata or {})
        self.violations: list[tuple[str, str]] = list(violations)
        self.trailing_metadata: tuple[tuple[str, str | bytes], ...] = tuple(trailing_metadata)

    def __str__(self) -> str:
        reason = "" if self.reason == self.code.name else f" ({self.reason})"
        return f"{self.code.name}{reason}: {self.message}"

    def __repr__(self) -> str:
        name = type(self).__name__
        return f"{name}(code={self.code.name}, reason={self.reason!r}, message={self.message!r})"


class InvalidArgument(AgentrunError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(AgentrunError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(AgentrunError):
    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(AgentrunError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class Unauthenticated(AgentrunError):
    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(AgentrunError):
    code = grpc.StatusCode.PERMISSION_DENIED


class ResourceExhausted(AgentrunError):
    """A fair-use limit (reason RATE_LIMITED or QUEUE_FULL); `retry_after` is the number of seconds the
    server asks to wait before trying again (None when it did not say)."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED

    @property
    def retry_after(self) -> float | None:
        values = [self.metadata.get("retry_after", "")]
        values += [v for k, v in self.trailing_metadata if k == "retry-after" and isinstance(v, str)]
        for value in values:
            try:
                return float(value)
            except ValueError:
                continue
        return None


class Unavailable(AgentrunError):
    """The server could not be reached (also after the client's retries ran out)."""

    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(AgentrunError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class Internal(AgentrunError):
    code = grpc.StatusCode.INTERNAL


_BY_CODE: dict[grpc.StatusCode, type[AgentrunError]] = {
    cls.code: cls
    for cls in (
        InvalidArgument,
        NotFound,
        AlreadyExists,
        FailedPrecondition,
        Unauthenticated,
        PermissionDenied,
        ResourceExhausted,
        Unavailable,
        DeadlineExceeded,
        Internal,
    )
}


def from_rpc_error(error: grpc.RpcError) -> AgentrunError:
    """The AgentrunError for a failed call (grpc.aio.AioRpcError or a sync grpc.Call error)."""
    code = error.code() or grpc.StatusCode.UNKNOWN
    message = error.details() or ""
    raw: Any = error.trailing_metadata() or ()  # a tuple of pairs, or aio Metadata (iterates pairs)
    trailing: list[tuple[str, str | bytes]] = [(str(k), v) for k, v in raw]
    reason, metadata, violations = "", dict[str, str](), list[tuple[str, str]]()
    for key, value in trailing:
        if key == _DETAILS_KEY and isinstance(value, bytes):
            reason, metadata, violations = _parse_details(value)
    cls = _BY_CODE.get(code, AgentrunError)
    return cls(
        message,
        code=code,
        reason=reason,
        metadata=metadata,
        violations=violations,
        trailing_metadata=[(k, v) for k, v in trailing if k != _DETAILS_KEY],
    )


def _parse_details(blob: bytes) -> tuple[str, dict[str, str], list[tuple[str, str]]]:
    try:
        status = status_pb2.Status.FromString(blob)
    except Exception:  # a malformed trailer must not hide the error itself
        return "", {}, []
    reason, metadata, violations = "", dict[str, str](), list[tuple[str, str]]()
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            if info.domain == DOMAIN or not reason:
                reason, metadata = info.reason, dict(info.metadata)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violations += [(v.field, v.description) for v in bad.field_violations]
    return reason, metadata, violations
