"""Assembles the gateway: the shared pieces, the ops routes, the canonical REST surface and any
family modules; and runs it on a TCP site inside an existing event loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass

import grpc.aio
from aiohttp import web

from gateway import console, docs, errors, keys, metrics, ops, sse, tracing, transcode, upstream
from gateway.registry import Registry
from gateway.settings import GatewaySettings

log = logging.getLogger(__name__)

# A family module: adds its routes (registry.add), error shape and OpenAPI docs to the app.
Family = Callable[[web.Application], None]


def create_app(
    settings: GatewaySettings,
    families: Sequence[Family] = (),
    refresh_metrics: metrics.Refresh | None = None,
    channel: grpc.aio.Channel | None = None,
) -> web.Application:
    """`channel`: the server's in-process channel when both share the process (instead of
    `settings.upstream`)."""
    # client_max_size makes aiohttp refuse larger bodies while reading; codec.read_json turns
    # that into a JSON 413 in the route's error shape.
    app = web.Application(client_max_size=settings.max_body_bytes)
    registry = Registry(app.router)
    app[keys.SETTINGS] = settings
    app[keys.REGISTRY] = registry
    if channel is not None:
        app[keys.CHANNEL] = channel
    app.middlewares.append(errors.middleware(registry.renderer_for, registry.refusal))
    app.cleanup_ctx.append(upstream.channel_ctx)
    sse.setup(app)
    transcode.setup(app)
    for family in families:
        family(app)
    docs.setup(app)
    console.setup(app)
    metrics.setup(app, refresh_metrics)
    tracing.setup(app)  # outermost: the request's span covers everything else
    ops.setup(app)  # last: it leaves GET /health to a family that documents its own
    return app


@dataclass(frozen=True)
class RunningGateway:
    app: web.Application
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


@contextlib.asynccontextmanager
async def running_gateway(
    settings: GatewaySettings,
    families: Sequence[Family] = (),
    refresh_metrics: metrics.Refresh | None = None,
    channel: grpc.aio.Channel | None = None,
) -> AsyncIterator[RunningGateway]:
    """Serves HTTP until the context exits (port 0 picks a free port). On exit open SSE streams
    end (clients re-attach with Last-Event-ID), unary calls get the runner's grace to finish."""
    app = create_app(settings, families, refresh_metrics, channel)
    # handler_cancellation: a client that disconnects cancels its handler, and with it the
    # in-flight gRPC call (never the run: runs belong to the server, not to calls).
    runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=10.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, settings.host, settings.port)
        await site.start()
        port = int(runner.addresses[0][1])
        target = "the server in process" if channel is not None else settings.upstream
        log.info("agentrun gateway on %s:%d -> %s", settings.host, port, target)
        yield RunningGateway(app, settings.host, port)
    finally:
        await runner.cleanup()


async def serve_gateway(
    settings: GatewaySettings, stop: asyncio.Event, families: Sequence[Family] = ()
) -> None:
    """Serves until `stop` is set; for a CLI that already runs an event loop (and signals)."""
    async with running_gateway(settings, families) as gateway:
        print(f"agentrun-gateway: HTTP on {gateway.host}:{gateway.port}", flush=True)
        await stop.wait()
