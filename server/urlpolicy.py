"""Which URLs the server may be made to fetch (media) or call (webhooks): public http(s) only, so a
caller cannot point the server at loopback, private, link-local or multicast addresses (SSRF). An
allow-list admits chosen hosts and networks anyway (a webhook receiver on the same host, in tests)."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
RESOLVE_TIMEOUT_S = 2.0
_LOCAL_SUFFIXES = (".localhost", ".local", ".internal", ".localdomain", ".home.arpa")


def _public(address: Address) -> bool:
    mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
    return (mapped or address).is_global


def _network(entry: str) -> Network | None:
    try:
        return ipaddress.ip_network(entry, strict=False)
    except ValueError:
        return None


@dataclass(frozen=True)
class UrlPolicy:
    # Host names and IP addresses/networks allowed although not public, e.g. ("localhost", "10.0.0.0/8").
    allow: tuple[str, ...] = ()
    _hosts: frozenset[str] = field(init=False, repr=False)
    _networks: tuple[Network, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        networks = [n for n in map(_network, self.allow) if n is not None]
        hosts = frozenset(e.lower() for e in self.allow if _network(e) is None)
        object.__setattr__(self, "_networks", tuple(networks))
        object.__setattr__(self, "_hosts", hosts)

    @classmethod
    def parse(cls, allow: str) -> UrlPolicy:
        """From a comma-separated setting."""
        return cls(tuple(e.strip() for e in allow.split(",") if e.strip()))

    def allows_host(self, host: str) -> bool:
        """An allow-listed host name: allowed whatever it resolves to."""
        return host.lower() in self._hosts

    def allows_address(self, address: Address) -> bool:
        return _public(address) or any(address in n for n in self._networks)

    async def problem(self, url: str) -> str | None:
        """Why the server must not call `url`, or None. Host names are resolved and every address
        they resolve to must be allowed."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return "must be an http(s) URL with a host"
        if parts.username or parts.password:
            return "must not carry credentials"
        host = parts.hostname.lower()
        if self.allows_host(host):
            return None
        try:
            addresses: list[Address] = [ipaddress.ip_address(host)]
        except ValueError:
            if host == "localhost" or host.endswith(_LOCAL_SUFFIXES):
                return f"host {host!r} is local"
            try:
                addresses = await _resolve(host, parts.port or (443 if parts.scheme == "https" else 80))
            except (OSError, TimeoutError):
                return f"host {host!r} does not resolve"
        blocked = next((a for a in addresses if not self.allows_address(a)), None)
        return f"points to a non-public address ({blocked})" if blocked is not None else None


async def _resolve(host: str, port: int) -> list[Address]:
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(RESOLVE_TIMEOUT_S):
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [ipaddress.ip_address(info[4][0]) for info in infos]


async def url_problem(url: str) -> str | None:
    return await UrlPolicy().problem(url)


class PolicyResolver(AbstractResolver):
    """aiohttp resolver that drops addresses the policy refuses, checked when connecting: a name
    that passed the check and then resolves to a private address (DNS rebinding) is not called."""

    def __init__(self, policy: UrlPolicy) -> None:
        self._policy = policy
        self._inner = DefaultResolver()

    async def resolve(self, host: str, port: int = 0, family: Any = socket.AF_INET) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        if self._policy.allows_host(host):
            return results
        allowed = [r for r in results if self._policy.allows_address(ipaddress.ip_address(r["host"]))]
        if not allowed:
            raise OSError(f"refused: {host} resolves only to non-public addresses")
        return allowed

    async def close(self) -> None:
        await self._inner.close()
