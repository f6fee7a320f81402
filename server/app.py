"""Assembles the gRPC server: RunService, health, reflection, the engine, the store and the webhook
deliverer; `running()` serves until its context exits."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
from agentrun.v1 import run_service_pb2, run_service_pb2_grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from common.local_server import LocalServer
from server import metrics
from server.agents.registry import AgentRegistry
from server.auth.guard import Guard
from server.auth.interceptor import AuthInterceptor
from server.auth.settings import resolve
from server.engine.engine import Engine
from server.engine.hub import Hub
from server.engine.retention import Retention
from server.metrics_http import serving_metrics
from server.service import RunService
from server.settings import Settings
from server.store.contract import open_store
from server.store.deliveries import Outbox
from server.store.records import EventRecord
from server.webhooks.deliverer import Deliverer
from server.webhooks.payloads import render

log = logging.getLogger(__name__)
SERVICE_NAME = run_service_pb2.DESCRIPTOR.services_by_name["RunService"].full_name
SERVER_OPTIONS = [
    ("grpc.so_reuseport", 0),
    # Calls wait in gRPC core until the event loop takes them. Past core's defaults (1,000, then
    # more and more refused up to 3,000) a burst of streams, say thousands of SSE clients through
    # the gateway, was answered CANCELLED; let such a burst wait (30 s at most, core's own limit).
    ("grpc.server.max_pending_requests", 20_000),
    ("grpc.server.max_pending_requests_hard_limit", 20_000),
]


class ListenError(Exception):
    """The listen address cannot be bound."""


@dataclass
class RunningServer:
    port: int
    engine: Engine
    grpc_server: grpc.aio.Server
    health: Any  # grpc_health.v1.health.aio.HealthServicer (untyped)
    # Port of --metrics-listen's /metrics (None: not served by the server itself).
    metrics_port: int | None = None
    # Deletes old finished runs when --retention is set; its counters are for metrics.
    retention: Retention | None = None
    # The same services for callers in this process (the gateway of `agentrun serve`): `.channel()`.
    local: LocalServer | None = None

    async def refresh_metrics(self) -> None:
        """Read the gauges that come from the database (the queue's), e.g. before a scrape."""
        await metrics.refresh_queue(self.engine.store.queue_stats)


@contextlib.asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[RunningServer]:
    """Serve until the context exits; on exit stop accepting, let runs finish for the grace
    period, then release the rest to the queue."""
    agents = AgentRegistry.load(settings.agents_file)
    # Refuses to start (AuthConfigError) without auth on a reachable address or with bad keys.
    guard = Guard(resolve(settings.auth, settings.listen))
    metrics.count_statements()
    hub = Hub(settings.engine.poll_interval_s, settings.engine.recheck_s)
    deliverer = Deliverer(settings.webhooks, owner=f"webhooks-{uuid.uuid4().hex[:12]}")

    def publish(events: list[EventRecord]) -> None:
        hub.publish(events)
        metrics.committed(events)
        if any(e.final and e.run is not None and e.run.webhook_url for e in events):
            deliverer.wake()  # the run's outbox row was committed with this event

    outbox = Outbox(render, settings.webhooks.max_age_s)
    async with (
        open_store(settings.database_url, publish, outbox) as store,
        contextlib.AsyncExitStack() as stack,
    ):
        engine = Engine(store, hub, agents, settings.engine, settings.limits)
        interceptors = [AuthInterceptor(guard)]
        server = grpc.aio.server(interceptors=interceptors, options=SERVER_OPTIONS)
        local = LocalServer(interceptors)
        service = RunService(engine, deliverer, settings.limits)
        health_servicer = health.aio.HealthServicer()  # type: ignore[attr-defined]
        for target in (server, local):
            run_service_pb2_grpc.add_RunServiceServicer_to_server(service, target)
            health_pb2_grpc.add_HealthServicer_to_server(health_servicer, target)
        reflection.enable_server_reflection(
            [
                SERVICE_NAME,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ],
            server,
        )
        try:
            port = server.add_insecure_port(settings.listen)
        except RuntimeError:  # grpc's only word for it: "Failed to bind to address"
            raise ListenError(
                f"cannot listen on {settings.listen} (gRPC): the address is in use or not available"
            ) from None
        await engine.start()
        await stack.enter_async_context(
            store.listen(hub.poke, engine.wake, engine.cancel_here, engine.notifications)
        )
        await deliverer.start(store.deliveries)
        metrics_port = None
        if settings.metrics_listen:
            try:
                metrics_port = await stack.enter_async_context(
                    serving_metrics(settings.metrics_listen, store.queue_stats)
                )
            except OSError as exc:
                where = f"{settings.metrics_listen} (metrics)"
                raise ListenError(f"cannot listen on {where}: {exc.strerror}") from None
        await server.start()
        for name in ("", SERVICE_NAME):
            await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info("agentrun serving on port %d (%s, %d agents)", port, settings.database_url, len(agents))
        log.info("auth %s", guard.describe())
        retention = Retention(settings.retention)
        retention.start(store)  # here: nothing between this and the try below can fail
        try:
            yield RunningServer(port, engine, server, health_servicer, metrics_port, retention, local)
        finally:
            local.stopped = True
            await health_servicer.enter_graceful_shutdown()
            await retention.stop()
            await asyncio.gather(
                server.stop(settings.shutdown_grace_s), engine.shutdown(settings.shutdown_grace_s)
            )
            await deliverer.stop()
