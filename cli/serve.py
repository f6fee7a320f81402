"""`agentrun serve`: the gRPC server and, unless --no-gateway, the HTTP gateway in front of it, in one
process, until SIGTERM/SIGINT. The gateway reaches the server over loopback gRPC like any client."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import signal

from gateway.app import running_gateway
from gateway.families import all_families
from gateway.settings import GatewaySettings
from server.app import running
from server.settings import Settings

log = logging.getLogger(__name__)


async def serve(settings: Settings, gateway: GatewaySettings | None = None) -> None:
    """Serve until SIGTERM/SIGINT. On the way out the gateway stops first (its streams end; clients
    re-attach elsewhere), then the server lets runs finish for its grace period."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with running(settings) as server, contextlib.AsyncExitStack() as stack:
        print(f"agentrun: gRPC on {settings.listen.rsplit(':', 1)[0]}:{server.port}", flush=True)
        if gateway is not None:
            local = dataclasses.replace(gateway, upstream=f"127.0.0.1:{server.port}")
            http = await stack.enter_async_context(running_gateway(local, all_families()))
            print(f"agentrun-gateway: HTTP on {http.host}:{http.port}", flush=True)
        await stop.wait()
        log.info("shutting down")
