"""Typed application keys for the shared pieces, in one place so every module (and every family)
reaches them the same way without importing each other."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    import grpc.aio

    from gateway.registry import Registry
    from gateway.settings import GatewaySettings
    from gateway.upstream import Upstream

SETTINGS: web.AppKey[GatewaySettings] = web.AppKey("agentrun.gateway.settings")
# Set by the upstream cleanup context at startup: the one gRPC channel and its stubs.
UPSTREAM: web.AppKey[Upstream] = web.AppKey("agentrun.gateway.upstream")
# A channel given by the process that holds the server too (common.local_channel): calls reach the
# service in process instead of over loopback gRPC to `SETTINGS.upstream`.
CHANNEL: web.AppKey[grpc.aio.Channel] = web.AppKey("agentrun.gateway.channel")
# Routes with their error renderer and OpenAPI operation; families add theirs before startup.
REGISTRY: web.AppKey[Registry] = web.AppKey("agentrun.gateway.registry")
