"""JWT bearer tokens from an identity provider: signature (HS256 secret or RS256 public key), `exp`
always, `iss` and `aud` when configured; org, user and role come from configurable claims."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import jwt

from server.auth.identity import ROLES, Identity
from server.auth.keys import AuthConfigError
from server.auth.settings import AuthSettings

log = logging.getLogger(__name__)
# Clock skew tolerated between the identity provider and this server for exp/nbf/iat.
LEEWAY_S = 30.0


class InvalidToken(Exception):
    """The token is not acceptable; the message says why (sent to the caller: it names no secret)."""


def _public_key(value: str) -> str:
    # PEM text as is; anything else is a path to a PEM file.
    if value.lstrip().startswith("-----BEGIN"):
        return value
    try:
        return Path(value).read_text()
    except OSError as exc:
        raise AuthConfigError(f"--jwt-public-key: {exc}") from None


class JwtVerifier:
    def __init__(self, settings: AuthSettings) -> None:
        self._settings = settings
        if settings.jwt_public_key:
            self.algorithm = "RS256"
            self._key: Any = _load_rsa(_public_key(settings.jwt_public_key))
        else:
            self.algorithm, self._key = "HS256", settings.jwt_secret
        if settings.jwt_default_role not in ROLES:
            raise AuthConfigError(f"--jwt-default-role must be one of {', '.join(ROLES)}")
        if not settings.jwt_issuer or not settings.jwt_audience:
            log.warning("JWT issuer or audience not configured: tokens are not checked against them")
        required = ["exp"] + [
            name for name, on in (("iss", settings.jwt_issuer), ("aud", settings.jwt_audience)) if on
        ]
        self._options: Any = {"require": required}

    def verify(self, token: str) -> Identity:
        s = self._settings
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=[self.algorithm],  # never the token's own choice ("none", HS/RS confusion)
                audience=s.jwt_audience or None,
                issuer=s.jwt_issuer or None,
                leeway=LEEWAY_S,
                options=self._options,
            )
        except jwt.ExpiredSignatureError:
            raise InvalidToken("token expired") from None
        except jwt.InvalidAudienceError:
            raise InvalidToken("token audience not accepted") from None
        except jwt.InvalidIssuerError:
            raise InvalidToken("token issuer not accepted") from None
        except jwt.InvalidTokenError as exc:
            raise InvalidToken(f"invalid token: {exc}") from None
        return self._identity(claims)

    def _identity(self, claims: dict[str, Any]) -> Identity:
        s = self._settings
        org, user = claims.get(s.jwt_org_claim), claims.get(s.jwt_user_claim)
        role = claims.get(s.jwt_role_claim, s.jwt_default_role)
        if not isinstance(org, str) or not org or len(org) > 128:
            raise InvalidToken(f"token has no usable {s.jwt_org_claim!r} claim")
        if not isinstance(user, str) or len(user) > 128:
            raise InvalidToken(f"token has no usable {s.jwt_user_claim!r} claim")
        if role not in ROLES:
            raise InvalidToken(f"token role {role!r} is not one of {', '.join(ROLES)}")
        return Identity(org, user, role)


def _load_rsa(pem: str) -> Any:
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    try:
        return load_pem_public_key(pem.encode())
    except ValueError as exc:
        raise AuthConfigError(f"--jwt-public-key: not a PEM public key ({exc})") from None
