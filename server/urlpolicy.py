"""Which URLs the server may be made to fetch (media) or call (webhooks): public http(s) only, so a
caller cannot point the server at loopback, private or link-local addresses (SSRF)."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
RESOLVE_TIMEOUT_S = 2.0
_LOCAL_SUFFIXES = (".localhost", ".local", ".internal", ".localdomain", ".home.arpa")


def _non_public(address: Address) -> bool:
    mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
    return not (mapped or address).is_global


async def _resolve(host: str, port: int) -> list[Address]:
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(RESOLVE_TIMEOUT_S):
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [ipaddress.ip_address(info[4][0]) for info in infos]


async def url_problem(url: str, *, allow_private: bool = False) -> str | None:
    """Why the server must not fetch `url`, or None. Host names are resolved and every address
    they resolve to must be public."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "must be an http(s) URL with a host"
    if parts.username or parts.password:
        return "must not carry credentials"
    if allow_private:
        return None
    host = parts.hostname
    try:
        addresses: list[Address] = [ipaddress.ip_address(host)]
    except ValueError:
        if host == "localhost" or host.endswith(_LOCAL_SUFFIXES):
            return f"host {host!r} is local"
        try:
            addresses = await _resolve(host, parts.port or (443 if parts.scheme == "https" else 80))
        except (OSError, TimeoutError):
            return f"host {host!r} does not resolve"
    blocked = next((a for a in addresses if _non_public(a)), None)
    if blocked is not None:
        return f"points to a non-public address ({blocked})"
    return None
