"""Fixtures for the gateway tests: the real gateway (create_app on an AppRunner/TCPSite at port 0,
as `python -m gateway` runs it) in front of a real agentrun gRPC server from tests.conftest's
`launch`, and an httpx client for it. Test modules load it with `pytest_plugins`."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from httpx_sse import ServerSentEvent, aconnect_sse

from common.local_channel import LocalChannel
from gateway.app import Family, RunningGateway, running_gateway
from gateway.settings import GatewaySettings
from tests.conftest import Harness, Launcher

TERMINAL = {"RUN_STATE_COMPLETED", "RUN_STATE_FAILED", "RUN_STATE_CANCELLED"}


@dataclasses.dataclass
class Gateway:
    grpc: Harness  # the server behind the gateway, for checks that bypass HTTP
    running: RunningGateway
    http: httpx.AsyncClient

    async def run(self, agent_id: str, message: str, **fields: Any) -> dict[str, Any]:
        response = await self.http.post(
            f"/v1/agents/{agent_id}/runs", json={"input": {"message": message}, **fields}
        )
        assert response.status_code == 200, response.text
        run: dict[str, Any] = response.json()["run"]
        return run

    async def get(self, run_id: str) -> dict[str, Any]:
        response = await self.http.get(f"/v1/runs/{run_id}")
        assert response.status_code == 200, response.text
        run: dict[str, Any] = response.json()["run"]
        return run

    async def wait_until(self, run_id: str, states: set[str], timeout: float = 10.0) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while (run := await self.get(run_id))["state"] not in states:
                await asyncio.sleep(0.02)
        return run

    async def stream(
        self, method: str, path: str, *, limit: int | None = None, **kwargs: Any
    ) -> list[ServerSentEvent]:
        """SSE frames of a stream (the first `limit`, then the client disconnects)."""
        frames: list[ServerSentEvent] = []
        async with aconnect_sse(self.http, method, path, **kwargs) as source:
            assert source.response.status_code == 200, await source.response.aread()
            async for frame in source.aiter_sse():
                frames.append(frame)
                if limit is not None and len(frames) == limit:
                    break
        return frames


def event(frame: ServerSentEvent) -> dict[str, Any]:
    """The RunEvent of a canonical frame (`data` is a StreamRunResponse in ProtoJSON)."""
    data: dict[str, Any] = json.loads(frame.data)["event"]
    return data


def assert_well_formed(frames: list[ServerSentEvent]) -> None:
    """Canonical SSE of a whole run: id = seq = 1..n, START first, one STOP/ERROR last."""
    events = [event(f) for f in frames]
    seqs = [int(e["seq"]) for e in events]
    assert seqs == list(range(1, len(events) + 1))
    assert [f.id for f in frames] == [str(s) for s in seqs]
    assert events[0]["type"] == "EVENT_TYPE_START"
    ends = [e for e in events if e["type"] in ("EVENT_TYPE_STOP", "EVENT_TYPE_ERROR")]
    assert ends == [events[-1]]


@dataclasses.dataclass
class GatewayLauncher:
    """Starts gateways with chosen settings in front of a server; all stop at the end of the test."""

    launch: Launcher
    stack: contextlib.AsyncExitStack
    transport: str = "inprocess"  # or "grpc": over loopback gRPC, as a gateway of its own

    async def __call__(
        self, harness: Harness | None = None, families: Sequence[Family] = (), **settings: Any
    ) -> Gateway:
        """A gateway in front of `harness`'s server, in process as in `agentrun serve` (unless the
        transport is "grpc" or an explicit `upstream` is given)."""
        harness = harness or await self.launch()
        local = self.transport == "inprocess" and "upstream" not in settings and harness.server.local
        upstream = settings.pop("upstream", f"127.0.0.1:{harness.server.port}")
        config = GatewaySettings(listen="127.0.0.1:0", upstream=upstream, **settings)
        channel = LocalChannel(local) if local else None
        running = await self.stack.enter_async_context(running_gateway(config, families, None, channel))
        http = await self.stack.enter_async_context(httpx.AsyncClient(base_url=running.url, timeout=30.0))
        return Gateway(harness, running, http)


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """The gateway translates; it never touches the store, whose backends the store and engine
    tests already cover. One backend keeps the HTTP suites quick."""
    return f"sqlite:///{tmp_path / 'agentrun.db'}"


@pytest.fixture(params=["inprocess", "grpc"])
def both_transports(request: pytest.FixtureRequest) -> str:
    """A module that sets `gateway_transport = gateway_harness.both_transports` runs its gateway
    tests both ways: in process (`agentrun serve`) and over loopback gRPC (a gateway of its own)."""
    return str(request.param)


@pytest.fixture
async def gateways(launch: Launcher, gateway_transport: str) -> AsyncIterator[GatewayLauncher]:
    async with contextlib.AsyncExitStack() as stack:
        yield GatewayLauncher(launch, stack, gateway_transport)


@pytest.fixture
async def gw(gateways: GatewayLauncher) -> Gateway:
    return await gateways()
