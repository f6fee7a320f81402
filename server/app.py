"""Assembles the gRPC server: RunService, health, reflection; runs until told to stop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
from agentrun.v1 import run_service_pb2, run_service_pb2_grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from server.agents.registry import AgentRegistry
from server.engine.engine import Engine
from server.engine.hub import Hub
from server.service import RunService
from server.settings import Settings
from server.store.sql import SqlStore

log = logging.getLogger(__name__)
SERVICE_NAME = run_service_pb2.DESCRIPTOR.services_by_name["RunService"].full_name


@dataclass
class RunningServer:
    port: int
    engine: Engine
    grpc_server: grpc.aio.Server
    health: Any  # grpc_health.v1.health.aio.HealthServicer (untyped)


@contextlib.asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[RunningServer]:
    """Serve until the context exits; on exit stop accepting, let runs finish for the grace
    period, then release the rest to the queue."""
    agents = AgentRegistry.load(settings.agents_file)
    hub = Hub()
    async with SqlStore.open(settings.database_url, hub.publish) as store:
        engine = Engine(store, hub, agents, settings.engine)
        server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        run_service_pb2_grpc.add_RunServiceServicer_to_server(RunService(engine), server)
        health_servicer = health.aio.HealthServicer()  # type: ignore[attr-defined]
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        reflection.enable_server_reflection(
            [
                SERVICE_NAME,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ],
            server,
        )
        port = server.add_insecure_port(settings.listen)
        await engine.start()
        await server.start()
        for name in ("", SERVICE_NAME):
            await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info("agentrun serving on port %d (%s, %d agents)", port, settings.database_url, len(agents))
        try:
            yield RunningServer(port, engine, server, health_servicer)
        finally:
            await health_servicer.enter_graceful_shutdown()
            await asyncio.gather(
                server.stop(settings.shutdown_grace_s), engine.shutdown(settings.shutdown_grace_s)
            )


async def serve(settings: Settings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with running(settings) as server:
        print(f"agentrun: gRPC on {settings.listen.rsplit(':', 1)[0]}:{server.port}", flush=True)
        await stop.wait()
        log.info("shutting down")
