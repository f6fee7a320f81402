"""Many streams at once: hundreds of SSE streams through one gateway all get their frames while all
are open (past HTTP/2's cap on the streams of one connection between gateway and server), and a
burst of thousands of calls waits for the server's event loop instead of being refused; the server
process's garbage collector does not walk thousands of long-lived streams over and over."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import grpc
import httpx
import pytest
from agentrun.v1 import run_service_pb2 as pb
from grpc_health.v1 import health_pb2, health_pb2_grpc
from httpx_sse import ServerSentEvent, aconnect_sse

from cli import heap
from gateway import keys, sse, upstream
from server import app as server_app
from server.engine import hub
from server.store.records import EventRecord
from tests import gateway_harness
from tests.conftest import Harness
from tests.gateway_harness import Gateway, GatewayLauncher, assert_well_formed, event
from tests.waiting import until

gateways = gateway_harness.gateways
database_url = gateway_harness.database_url
gateway_transport = gateway_harness.both_transports
QUIET_RUN = {"run": {"input": {"message": "tokens=1 delay_ms=600000"}}}  # START, then ten minutes


class Streams:
    """`count` SSE streams of new quiet `slow` runs, each read to its end."""

    def __init__(self, gw: Gateway, count: int) -> None:
        self.gw, self.count = gw, count
        self.run_ids: list[str] = []
        # Every stream is its own connection: httpx's default pool would queue all past 100.
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=0)
        self.http = httpx.AsyncClient(base_url=gw.running.url, limits=limits, timeout=60.0)

    async def one(self) -> list[ServerSentEvent]:
        frames: list[ServerSentEvent] = []
        async with aconnect_sse(self.http, "POST", "/v1/agents/slow/runs:stream", json=QUIET_RUN) as source:
            assert source.response.status_code == 200, await source.response.aread()
            async for frame in source.aiter_sse():
                frames.append(frame)
                if len(frames) == 1:
                    self.run_ids.append(event(frame)["runId"])
        return frames

    async def run(self) -> list[list[ServerSentEvent]]:
        """Open all, wait until every one has its first frame (all open at once), then cancel the
        runs: each stream ends with its ERROR event."""
        async with self.http:
            tasks = [asyncio.create_task(self.one()) for _ in range(self.count)]
            try:
                await until(lambda: len(self.run_ids) == self.count, 60, f"{self.count} streams open at once")
                app = self.gw.running.app
                assert len(app[sse.OPEN_STREAMS]) == self.count
                pool = app[keys.UPSTREAM].streams  # over gRPC: the channels' open calls
                assert pool is None or pool.open_calls == self.count
                await self.cancel_all()
                return await asyncio.gather(*tasks)
            finally:
                for task in tasks:
                    task.cancel()

    async def cancel_all(self) -> None:
        gate = asyncio.Semaphore(20)  # one connection: stay under any cap on its streams

        async def cancel(run_id: str) -> None:
            async with gate:
                await self.gw.grpc.stub.CancelRun(pb.CancelRunRequest(run_id=run_id))

        await asyncio.gather(*(cancel(i) for i in self.run_ids))


def assert_cancelled(streams: list[list[ServerSentEvent]]) -> None:
    for frames in streams:
        assert_well_formed(frames)
        assert event(frames[-1])["type"] == "EVENT_TYPE_ERROR"


async def test_three_hundred_streams_through_one_gateway_all_get_their_frames(
    gateways: GatewayLauncher,
) -> None:
    gw = await gateways()
    streams = await Streams(gw, 300).run()
    assert len(streams) == 300
    assert_cancelled(streams)
    assert not gw.running.app[sse.OPEN_STREAMS]
    pool = gw.running.app[keys.UPSTREAM].streams
    assert pool is None or pool.open_calls == 0  # every call's slot was given back


@pytest.mark.parametrize("gateway_transport", ["grpc"])  # connections are what this is about
async def test_streams_past_a_servers_cap_per_connection_go_over_more_connections(
    gateways: GatewayLauncher, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A server (or a proxy in front of it) that allows 40 streams per HTTP/2 connection: gRPC
    # queues calls past that until others end, so over one connection stream 41 would wait.
    monkeypatch.setattr(
        server_app, "SERVER_OPTIONS", [*server_app.SERVER_OPTIONS, ("grpc.max_concurrent_streams", 40)]
    )
    monkeypatch.setattr(upstream, "STREAMS_PER_CHANNEL", 40)
    gw = await gateways()
    streams = await Streams(gw, 120).run()
    assert_cancelled(streams)


async def test_a_burst_of_thousands_of_calls_waits_instead_of_being_refused(
    gateways: GatewayLauncher,
) -> None:
    # gRPC core holds calls until the event loop takes them; past its default queue (1,000, then
    # refusing more and more up to 3,000) a burst was answered CANCELLED.
    harness: Harness = (await gateways()).grpc
    health = health_pb2_grpc.HealthStub(harness.channel)
    check = health_pb2.HealthCheckRequest(service=server_app.SERVICE_NAME)
    answers: list[Any] = await asyncio.gather(
        *(health.Check(check) for _ in range(5000)), return_exceptions=True
    )
    refused = [a.code() for a in answers if isinstance(a, grpc.aio.AioRpcError)]
    assert refused == []
    assert {a.status for a in answers} == {health_pb2.HealthCheckResponse.SERVING}


def test_the_server_process_collects_garbage_rarely_and_not_its_startup_objects() -> None:
    # Thousands of long-lived stream objects: CPython's default thresholds walked them so often
    # that collections stalled the loop for seconds (cli/heap.py).
    thresholds = gc.get_threshold()
    try:
        heap.settle()
        assert gc.get_threshold() == heap.THRESHOLDS
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)


async def test_a_live_queue_that_overflows_or_is_woken_sends_its_follower_to_the_store() -> None:
    live = hub.Subscription("run")
    assert await live.get(0.01) is None  # quiet: a timeout, nothing held
    live.offer([EventRecord("run", 1, "START", {}, 0.0)])
    assert [e.seq for e in await live.get(1.0) or []] == [1]
    for seq in range(2, hub.QUEUE_BATCHES + 3):
        live.offer([EventRecord("run", seq, "CONTENT_DELTA", {}, 0.0)])
    assert live.lagged and await live.get(1.0) == []  # "lagged": re-read the store
    live.reset()
    waiting = asyncio.create_task(live.get(10.0))
    await asyncio.sleep(0)
    live.wake()  # committed elsewhere: the waiting follower re-reads now
    assert await waiting == [] and live.lagged
