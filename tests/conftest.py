"""Fixtures: a real agentrun gRPC server on port 0 (in this event loop) over a real SQLite
database, a file or in-memory, and a client stub talking to it over TCP."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from agentrun.v1 import run_pb2, run_service_pb2_grpc
from agentrun.v1 import run_service_pb2 as pb

from server.agents.registry import DEFAULT_AGENTS_FILE
from server.app import RunningServer, running
from server.auth.limits import LimitSettings
from server.auth.settings import AuthSettings
from server.engine.engine import EngineSettings
from server.settings import Settings
from server.webhooks.deliverer import WebhookSettings
from tests import postgres

FAST = EngineSettings(lease_s=2.0, sweep_interval_s=0.3, poll_interval_s=0.2, cancel_grace_s=2.0)


def server_settings(
    database_url: str,
    agents_file: Path | None = None,
    webhooks: WebhookSettings | None = None,
    auth: AuthSettings | None = None,
    limits: LimitSettings | None = None,
    metrics_listen: str = "",
    **engine: Any,
) -> Settings:
    return Settings(
        metrics_listen=metrics_listen,
        listen="127.0.0.1:0",
        database_url=database_url,
        agents_file=agents_file or DEFAULT_AGENTS_FILE,
        shutdown_grace_s=1.0,
        log_level="WARNING",
        engine=dataclasses.replace(FAST, **engine),
        webhooks=webhooks or WebhookSettings(),
        auth=auth or AuthSettings(),
        limits=limits or LimitSettings(),
    )


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    yield from postgres.server()


@pytest.fixture
def postgres_url(postgres_server: str) -> Iterator[str]:
    url, name = postgres.fresh_database(postgres_server)
    yield url
    postgres.drop_database(postgres_server, name)


@pytest.fixture(params=["file", "memory", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The same store and engine tests run on each backend."""
    if request.param == "postgres":
        url: str = request.getfixturevalue("postgres_url")
        return url
    return f"sqlite:///{tmp_path / 'agentrun.db'}" if request.param == "file" else "sqlite:///:memory:"


@pytest.fixture(params=["file", "postgres"])
def durable_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database that outlives one server or store (restarts, a second process): every backend but
    the in-memory one, which ends with the store that opened it."""
    if request.param == "postgres":
        url: str = request.getfixturevalue("postgres_url")
        return url
    return f"sqlite:///{tmp_path / 'agentrun.db'}"


@pytest.fixture
def gateway_transport() -> str:
    """How tests/gateway_harness.py's gateways reach their server: in process, as in `agentrun
    serve`. A module runs both ways with `gateway_transport = gateway_harness.both_transports`."""
    return "inprocess"


@dataclasses.dataclass
class Harness:
    server: RunningServer
    channel: grpc.aio.Channel
    stub: run_service_pb2_grpc.RunServiceStub

    async def run(self, agent_id: str, message: str, **fields: Any) -> run_pb2.Run:
        request = pb.RunRequest(agent_id=agent_id, input=run_pb2.RunInput(message=message), **fields)
        return (await self.stub.Run(request)).run

    async def get(self, run_id: str) -> run_pb2.Run:
        return (await self.stub.GetRun(pb.GetRunRequest(run_id=run_id))).run

    async def events(self, **request: Any) -> list[run_pb2.RunEvent]:
        return [r.event async for r in self.stub.StreamRun(pb.StreamRunRequest(**request))]


@dataclasses.dataclass
class Launcher:
    """Starts servers with chosen settings; all are stopped at the end of the test."""

    database_url: str
    stack: Any

    async def __call__(
        self,
        agents_file: Path | None = None,
        webhooks: WebhookSettings | None = None,
        auth: AuthSettings | None = None,
        limits: LimitSettings | None = None,
        metrics_listen: str = "",
        **engine: Any,
    ) -> Harness:
        settings = server_settings(
            self.database_url, agents_file, webhooks, auth, limits, metrics_listen, **engine
        )
        server = await self.stack.enter_async_context(running(settings))
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
        self.stack.push_async_callback(channel.close)
        return Harness(server, channel, run_service_pb2_grpc.RunServiceStub(channel))


@pytest.fixture
async def launch(database_url: str) -> AsyncIterator[Callable[..., Any]]:
    import contextlib

    async with contextlib.AsyncExitStack() as stack:
        yield Launcher(database_url, stack)


@pytest.fixture
async def h(launch: Launcher) -> Harness:
    return await launch()
