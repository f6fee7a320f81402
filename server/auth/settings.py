"""Auth settings and the rule for when a server may run without auth: only on a loopback address
(nobody else can reach it), and `auto` (the command line's default) turns auth on as soon as keys or
a JWT key are configured."""

from __future__ import annotations

import dataclasses
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from server.auth.keys import AuthConfigError

ON, OFF, AUTO = "on", "off", "auto"


@dataclass(frozen=True)
class AuthSettings:
    # "off" by default for embedding (tests, the demo); the CLI passes "auto" unless told otherwise.
    mode: str = OFF
    keys_file: Path | None = None
    # org:user:role:sha256:<hex> entries (env AGENTRUN_API_KEYS); see server/auth/keys.py.
    api_keys: str = ""
    # JWT bearer tokens: an HS256 shared secret or an RS256 public key (PEM text or a PEM file path).
    jwt_secret: str = ""
    jwt_public_key: str = ""
    jwt_issuer: str = ""
    jwt_audience: str = ""
    jwt_org_claim: str = "org"
    jwt_user_claim: str = "sub"
    jwt_role_claim: str = "role"
    # Role of a token without a role claim.
    jwt_default_role: str = "user"

    @property
    def jwt_enabled(self) -> bool:
        return bool(self.jwt_secret or self.jwt_public_key)

    @property
    def keys_configured(self) -> bool:
        return self.keys_file is not None or bool(self.api_keys.strip())


def is_loopback(listen: str) -> bool:
    """True when `host:port` binds only to a loopback interface ("" and 0.0.0.0 bind to all)."""
    host = listen.rsplit(":", 1)[0].strip("[]") if ":" in listen else listen
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name could resolve to anything: treat it as reachable


def resolve(auth: AuthSettings, listen: str) -> AuthSettings:
    """The settings with `mode` decided ("on" or "off"); AuthConfigError when the server must not
    start: no auth on a non-loopback address, or auth on with no way to authenticate."""
    if auth.mode not in (ON, OFF, AUTO):
        raise AuthConfigError(f"--auth must be on, off or auto, not {auth.mode!r}")
    configured = auth.keys_configured or auth.jwt_enabled
    mode = auth.mode if auth.mode != AUTO else ON if configured else OFF
    if mode == OFF and not is_loopback(listen):
        raise AuthConfigError(
            f"refusing to serve {listen} without authentication: configure API keys "
            "(--keys-file / AGENTRUN_KEYS_FILE or AGENTRUN_API_KEYS; create one with "
            "`agentrun keys create`) or JWT (--jwt-secret / --jwt-public-key); "
            "auth may be off only on a loopback address such as 127.0.0.1"
        )
    if mode == ON and not configured:
        raise AuthConfigError(
            "--auth on needs API keys (--keys-file / AGENTRUN_API_KEYS) or a JWT key "
            "(--jwt-secret / --jwt-public-key): without them no request could be authenticated"
        )
    if auth.jwt_secret and auth.jwt_public_key:
        raise AuthConfigError("set --jwt-secret (HS256) or --jwt-public-key (RS256), not both")
    return dataclasses.replace(auth, mode=mode)
