"""The checks every call passes before its handler runs: who is calling, from gRPC metadata, and
whether its role allows a RunService call. Their only caller is AuthInterceptor
(server/auth/interceptor.py), the grpc.aio server interceptor in front of every RPC."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from common.errors import PermissionDenied, Unauthenticated
from server.auth.identity import UNSCOPED, Identity
from server.auth.keys import KeyRing
from server.auth.settings import ON, AuthSettings
from server.auth.tokens import InvalidToken, JwtVerifier

Metadata = Iterable[tuple[str, Any]]


def _always(_: Any) -> bool:
    return True


# RPCs a reader may not call, each with "does this request write?". StreamRun writes only when it
# starts a run: re-attaching to one is a read.
WRITES: dict[str, Callable[[Any], bool]] = {
    "Run": _always,
    "StreamRun": lambda request: not request.run_id,
    "Continue": _always,
    "CancelRun": _always,
    "UpdateRun": _always,
    "DeleteRun": _always,
    "RetryWebhookDelivery": _always,
}


def _credential(metadata: Metadata) -> str | None:
    """The presented secret: `authorization: Bearer <x>` first, else `x-api-key: <x>`. An
    authorization header with another scheme is a credential that cannot be accepted ("")."""
    api_key = None
    for key, value in metadata:
        if key == "authorization" and isinstance(value, str):
            scheme, _, secret = value.strip().partition(" ")
            return (secret.strip() or None) if scheme.lower() == "bearer" else ""
        if key == "x-api-key" and isinstance(value, str):
            api_key = value.strip()
    return api_key


def _looks_like_jwt(credential: str) -> bool:
    # header.payload.signature; API keys contain no dots.
    return credential.count(".") == 2


class Guard:
    def __init__(self, settings: AuthSettings) -> None:
        self.enabled = settings.mode == ON
        self._keys = KeyRing.load(settings.keys_file, settings.api_keys) if self.enabled else KeyRing()
        self._jwt = JwtVerifier(settings) if self.enabled and settings.jwt_enabled else None

    def describe(self) -> str:
        if not self.enabled:
            return "off (loopback only): requests name their own org"
        jwt = f", JWT {self._jwt.algorithm}" if self._jwt is not None else ""
        return f"on: {len(self._keys)} API keys{jwt}"

    def authenticate(self, metadata: Metadata) -> Identity:
        if not self.enabled:
            return UNSCOPED
        credential = _credential(metadata)
        if not credential:
            raise Unauthenticated(
                "authentication required: send `authorization: Bearer <API key or token>` or "
                "`x-api-key: <API key>`"
                if credential is None
                else "unsupported credentials: use `authorization: Bearer <API key or token>`",
                reason="UNAUTHENTICATED" if credential is None else "INVALID_CREDENTIALS",
            )
        if self._jwt is not None and _looks_like_jwt(credential):
            try:
                return self._jwt.verify(credential)
            except InvalidToken as exc:
                raise Unauthenticated(str(exc), reason="INVALID_CREDENTIALS") from None
        identity = self._keys.lookup(credential)
        if identity is None:
            raise Unauthenticated("invalid API key", reason="INVALID_CREDENTIALS")
        return identity

    @staticmethod
    def authorize(identity: Identity, method: str, request: Any) -> None:
        writes = WRITES.get(method)
        if writes is not None and not identity.can_write and writes(request):
            raise PermissionDenied(
                f"role {identity.role!r} may read runs but not call {method}",
                metadata={"role": identity.role, "method": method},
            )
