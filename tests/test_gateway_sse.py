"""StreamRun as SSE through the gateway: frames carry id = seq, errors before the first event are
plain JSON, Last-Event-ID re-attaches without gaps or repeats, a disconnect leaves the run alone,
heartbeats fill silences, and many streams share the one channel."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
from httpx_sse import aconnect_sse

from tests import gateway_harness
from tests.gateway_harness import Gateway, GatewayLauncher, assert_well_formed, event

gateways = gateway_harness.gateways
gateway_transport = gateway_harness.both_transports  # in process and over loopback gRPC
database_url = gateway_harness.database_url
gw = gateway_harness.gw
START = "/v1/agents/{agent}/runs:stream"


def body(message: str) -> dict[str, Any]:
    return {"run": {"input": {"message": message}}}


async def test_stream_frames_are_ordered_and_carry_the_seq(gw: Gateway) -> None:
    async with aconnect_sse(
        gw.http, "POST", START.format(agent="echo"), json=body("one two three")
    ) as source:
        assert source.response.headers["content-type"].startswith("text/event-stream")
        assert source.response.headers["cache-control"] == "no-cache"
        frames = [frame async for frame in source.aiter_sse()]
    assert_well_formed(frames)
    events = [event(f) for f in frames]
    assert events[-1]["type"] == "EVENT_TYPE_STOP" and all(f.event == "message" for f in frames)
    text = "".join(e.get("text", "") for e in events if e["type"] == "EVENT_TYPE_CONTENT_DELTA")
    assert text == "one two three"
    run = await gw.get(events[0]["runId"])
    assert run["state"] == "RUN_STATE_COMPLETED" and run["lastSeq"] == events[-1]["seq"]


async def test_errors_before_the_first_event_are_json(gw: Gateway) -> None:
    response = await gw.http.post(START.format(agent="nobody"), json={"run": {"input": {"message": "hi"}}})
    assert response.status_code == 404 and response.headers["content-type"].startswith("application/json")
    assert response.json()["error"]["status"] == "NOT_FOUND"
    response = await gw.http.post(START.format(agent="echo"), json={"run": {"input": {"message": ""}}})
    assert response.status_code == 400
    fields = [v["field"] for d in response.json()["error"]["details"] for v in d.get("fieldViolations", [])]
    assert fields == ["run.input.message"]
    response = await gw.http.get("/v1/runs/missing:stream")
    assert response.status_code == 404 and response.json()["error"]["status"] == "NOT_FOUND"
    response = await gw.http.get("/v1/runs/missing:stream", headers={"Last-Event-ID": "abc"})
    assert response.status_code == 400


async def test_last_event_id_reattaches_with_exactly_the_missing_frames(gw: Gateway) -> None:
    seen = await gw.stream("POST", START.format(agent="slow"), json=body("tokens=30 delay_ms=20"), limit=5)
    run_id = event(seen[0])["runId"]
    assert (await gw.get(run_id))["state"] == "RUN_STATE_RUNNING"  # left mid-stream
    rest = await gw.stream("GET", f"/v1/runs/{run_id}:stream", headers={"Last-Event-ID": seen[-1].id})
    assert_well_formed(seen + rest)
    assert event(rest[-1])["type"] == "EVENT_TYPE_STOP"
    # the same from the query, for clients that cannot set headers; and by the proto field
    again = await gw.stream("GET", f"/v1/runs/{run_id}:stream?lastEventId=10")
    assert [f.id for f in again] == [f.id for f in (seen + rest)[10:]]
    by_field = await gw.stream("GET", f"/v1/runs/{run_id}:stream", params={"after_seq": 28})
    assert [f.id for f in by_field] == [f.id for f in (seen + rest)[28:]]
    # the largest of header and after_seq wins: never a repeat
    both = await gw.stream("GET", f"/v1/runs/{run_id}:stream?after_seq=3", headers={"Last-Event-ID": "20"})
    assert [f.id for f in both] == [f.id for f in (seen + rest)[20:]]
    nothing = await gw.stream("GET", f"/v1/runs/{run_id}:stream", headers={"Last-Event-ID": rest[-1].id})
    assert nothing == []


async def test_a_replayed_start_skips_frames_the_client_has(gw: Gateway) -> None:
    # POST :stream with an idempotency key replays the same run; Last-Event-ID trims the replay.
    payload = {"run": {"input": {"message": "a b c d"}, "idempotencyKey": "k-1"}}
    first = await gw.stream("POST", START.format(agent="echo"), json=payload)
    again = await gw.stream("POST", START.format(agent="echo"), json=payload, headers={"Last-Event-ID": "3"})
    assert event(again[0])["runId"] == event(first[0])["runId"]
    assert [f.id for f in again] == [f.id for f in first[3:]]
    # without a key the retry would be a second run: refused, nothing is started
    retry = await gw.http.post(START.format(agent="echo"), json=body("x"), headers={"Last-Event-ID": "3"})
    assert retry.status_code == 400 and "idempotency" in retry.json()["error"]["message"]
    assert (await gw.http.get("/v1/runs")).json()["totalSize"] == "1"


async def test_a_disconnect_cancels_only_the_stream(gw: Gateway) -> None:
    seen = await gw.stream("POST", START.format(agent="slow"), json=body("tokens=40 delay_ms=50"), limit=3)
    run_id = event(seen[0])["runId"]
    hub = gw.grpc.server.engine.hub
    async with asyncio.timeout(1.5):  # the gateway's gRPC stream unsubscribes long before the run ends
        while run_id in hub._subscribers:
            await asyncio.sleep(0.01)
    assert (await gw.get(run_id))["state"] == "RUN_STATE_RUNNING"
    run = await gw.wait_until(run_id, {"RUN_STATE_COMPLETED"})
    assert run["output"] == "".join(f"t{i} " for i in range(40))


async def test_heartbeats_fill_silences(gateways: GatewayLauncher) -> None:
    quick = await gateways(sse_heartbeat_s=0.05)
    lines: list[str] = []
    async with quick.http.stream(
        "POST", START.format(agent="slow"), json=body("tokens=3 delay_ms=300")
    ) as response:
        assert response.status_code == 200
        async for line in response.aiter_lines():
            lines.append(line)
    assert lines.count(": heartbeat") >= 5
    ids = [line.removeprefix("id: ") for line in lines if line.startswith("id: ")]
    data = [json.loads(line.removeprefix("data: ")) for line in lines if line.startswith("data: ")]
    assert ids == [d["event"]["seq"] for d in data] and data[-1]["event"]["type"] == "EVENT_TYPE_STOP"


async def test_a_cancel_ends_an_open_stream_with_its_error_event(gw: Gateway) -> None:
    frames = []
    async with aconnect_sse(
        gw.http, "POST", START.format(agent="slow"), json=body("tokens=100 delay_ms=20")
    ) as source:
        async for frame in source.aiter_sse():
            frames.append(frame)
            if len(frames) == 3:
                run_id = event(frames[0])["runId"]
                assert (await gw.http.post(f"/v1/runs/{run_id}:cancel", json={})).status_code == 200
    assert_well_formed(frames)
    assert event(frames[-1])["type"] == "EVENT_TYPE_ERROR"


async def test_fifty_concurrent_streams_complete(gw: Gateway) -> None:
    async def one(i: int) -> None:
        frames = await gw.stream("POST", START.format(agent="slow"), json=body(f"tokens=5 delay_ms=10 n{i}"))
        assert_well_formed(frames)
        assert event(frames[-1])["type"] == "EVENT_TYPE_STOP"

    await asyncio.gather(*(one(i) for i in range(50)))
    listed = (
        await gw.http.get("/v1/runs", params={"agent_id": "slow", "states": "RUN_STATE_COMPLETED"})
    ).json()
    assert listed["totalSize"] == "50"


async def test_a_closing_gateway_ends_its_streams(gateways: GatewayLauncher) -> None:
    gateway = await gateways()
    frames = []
    client = httpx.AsyncClient(base_url=gateway.running.url, timeout=30.0)
    async with (
        client,
        aconnect_sse(
            client, "POST", START.format(agent="slow"), json=body("tokens=50 delay_ms=50")
        ) as source,
    ):
        async for frame in source.aiter_sse():
            frames.append(frame)
            if len(frames) == 2:
                # shutting the gateway down ends the stream cleanly, well before the run ends
                closing = asyncio.create_task(gateways.stack.aclose())
    await asyncio.wait_for(closing, 5)
    assert len(frames) < 20
    run = await gateway.grpc.get(event(frames[0])["runId"])
    assert run.state in (2, 4)  # RUNNING or COMPLETED: the run was never cancelled
