"""Family A beyond the run routes: the POST stream re-attached by Last-Event-ID (`<run_id>:<seq>`)
instead of starting another run, the optional /api/sessions routes (Spring page shape), and the
single-use `?token=` of the EventSource stream GET /api/v1/runs/{runId}/events."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from httpx_sse import ServerSentEvent, aconnect_sse

from gateway.families import a, all_families
from tests import gateway_harness
from tests.conftest import Launcher
from tests.gateway_harness import Gateway, GatewayLauncher
from tests.test_auth import Tenants, tenants  # noqa: F401 - the fixture
from tests.test_family_a import payloads, problem

gateways = gateway_harness.gateways
database_url = gateway_harness.database_url
STREAM = "/api/agents/{agent}/runs/stream"


@pytest.fixture
async def gw(gateways: GatewayLauncher) -> Gateway:
    return await gateways(families=all_families())


async def frames_until(gw: Gateway, url: str, count: int, **kwargs: Any) -> list[ServerSentEvent]:
    """The first `count` frames of a stream; then the client drops the connection."""
    frames: list[ServerSentEvent] = []
    async with aconnect_sse(gw.http, kwargs.pop("method", "POST"), url, **kwargs) as source:
        assert source.response.status_code == 200, await source.response.aread()
        async for frame in source.aiter_sse():
            frames.append(frame)
            if len(frames) == count:
                break
    return frames


async def run_count(gw: Gateway) -> int:
    return int((await gw.http.get("/v1/runs")).json().get("totalSize", 0))


# ---- POST stream re-attach ------------------------------------------------------------------


async def test_a_retried_stream_post_reattaches_to_its_run(gw: Gateway) -> None:
    url, body = STREAM.format(agent="slow"), {"message": "tokens=8 delay_ms=60"}
    first = await frames_until(gw, url, 3, json=body)
    run_id = json.loads(payloads(first)[0]["data"])["runId"]
    assert first[-1].id == f"{run_id}:3"

    # fetch-event-source's retry: the same POST, with the id of the last frame it received
    rest = await gw.stream("POST", url, json=body, headers={"Last-Event-ID": first[-1].id})
    ids = [f.id for f in first + rest]
    assert ids == [f"{run_id}:{seq}" for seq in range(1, len(ids) + 1)]  # no gap, no repeat
    events = payloads(first + rest)
    assert "".join(e["data"] for e in events if e["event"] == "CONTENT_DELTA") == "t0 t1 t2 t3 t4 t5 t6 t7 "
    stop = json.loads(events[-1]["data"])
    assert stop == {
        "runId": run_id,
        "sessionId": json.loads(events[0]["data"])["sessionId"],
        "status": "COMPLETED",
    }
    assert await run_count(gw) == 1  # no second run

    query = await gw.stream("POST", f"{url}?lastEventId={run_id}:{len(ids) - 1}", json=body)
    assert [f.id for f in query] == [ids[-1]]


@pytest.mark.parametrize(
    ("agent", "last", "status"),
    [
        ("echo", "{run}:1", 404),  # the run is the slow agent's
        ("slow", "no-such-run:1", 404),
        ("slow", "{run}:soon", 400),
        ("slow", "3", 400),  # a bare seq names no run
    ],
)
async def test_a_reattach_names_a_run_of_this_agent(gw: Gateway, agent: str, last: str, status: int) -> None:
    first = await frames_until(gw, STREAM.format(agent="slow"), 1, json={"message": "tokens=2 delay_ms=1"})
    run_id = json.loads(payloads(first)[0]["data"])["runId"]
    response = await gw.http.post(
        STREAM.format(agent=agent), json={"message": "hi"}, headers={"Last-Event-ID": last.format(run=run_id)}
    )
    body = problem(response, status)
    if status == 404:
        assert body["resourceName"] == "AgentRun"
    assert await run_count(gw) == 1


async def test_a_reattach_sees_only_its_own_tenant(
    launch: Launcher,
    gateways: GatewayLauncher,
    tenants: Tenants,  # noqa: F811
) -> None:
    gw = await gateways(await launch(auth=tenants.settings), families=[a.setup])
    mine = {"Authorization": f"Bearer {tenants.a_user}"}
    first = await frames_until(
        gw, STREAM.format(agent="slow"), 1, json={"message": "tokens=2 delay_ms=1"}, headers=mine
    )
    other = {"Authorization": f"Bearer {tenants.b_user}", "Last-Event-ID": first[0].id}
    response = await gw.http.post(STREAM.format(agent="slow"), json={"message": "hi"}, headers=other)
    problem(response, 404)


# ---- sessions -------------------------------------------------------------------------------


async def test_sessions_list_get_runs_and_delete(gw: Gateway) -> None:
    runs = "/api/agents/echo/runs"
    one = [await gw.http.post(runs, json={"message": m, "sessionId": "s-1"}) for m in ("hi there", "again")]
    assert all(r.status_code == 200 for r in one)
    await gw.http.post("/api/agents/tools/runs", json={"message": "what is 6*7?", "sessionId": "s-2"})
    await gw.http.post("/api/v1/runs", json={"prompt": "a job", "session_id": "s-b"})  # family B's

    page = (await gw.http.get("/api/sessions")).json()
    assert (page["totalElements"], page["totalPages"], page["number"]) == (2, 1, 0)
    assert [s["sessionId"] for s in page["content"]] == ["s-2", "s-1"]  # newest activity first
    s1 = page["content"][1]
    assert s1["agentId"] == "echo" and s1["createdAt"] <= s1["updatedAt"]
    assert s1["messages"] == [
        {"role": "user", "content": "hi there"},
        {"role": "assistant", "content": "hi there"},
        {"role": "user", "content": "again"},
        {"role": "assistant", "content": "again"},
    ]
    small = (await gw.http.get("/api/sessions", params={"size": 1, "page": 1})).json()
    assert [s["sessionId"] for s in small["content"]] == ["s-1"] and small["totalPages"] == 2
    by_agent = (await gw.http.get("/api/sessions", params={"agentId": "tools"})).json()
    assert [s["sessionId"] for s in by_agent["content"]] == ["s-2"]

    assert (await gw.http.get("/api/sessions/s-1")).json() == s1
    session_runs = (await gw.http.get("/api/sessions/s-1/runs")).json()
    assert [r["input"] for r in session_runs] == ["hi there", "again"] and session_runs[0]["id"]
    assert problem(await gw.http.get("/api/sessions/s-b"), 404)["resourceName"] == "AgentSession"
    assert problem(await gw.http.get("/api/sessions/nope"), 404)["identifier"] == "nope"

    assert (await gw.http.delete("/api/sessions/s-1")).status_code == 204
    assert (await gw.http.get("/api/sessions/s-1")).status_code == 404
    assert (await gw.http.get("/api/sessions/s-1/runs")).json() == []
    assert (await gw.http.delete("/api/sessions/never")).status_code == 204
    assert (await gw.http.get("/api/sessions")).json()["totalElements"] == 1
    bad = await gw.http.get("/api/sessions", params={"page": "first"})
    assert problem(bad, 400)["invalidParams"][0]["name"] == "page"


# ---- EventSource stream and its query tokens ------------------------------------------------


async def test_an_sse_token_opens_one_stream_of_one_run(
    launch: Launcher,
    gateways: GatewayLauncher,
    tenants: Tenants,  # noqa: F811
) -> None:
    gw = await gateways(await launch(auth=tenants.settings), families=all_families())
    mine = {"Authorization": f"Bearer {tenants.a_user}"}
    done = await gw.http.post("/api/agents/echo/runs", json={"message": "one two"}, headers=mine)
    run_id = done.json()["runId"]
    events = f"/api/v1/runs/{run_id}/events"
    assert problem(await gw.http.get(events), 401)["status"] == 401  # EventSource sends no header

    issued = await gw.http.post(f"/api/v1/runs/{run_id}/sse-token", headers=mine)
    assert issued.status_code == 200 and set(issued.json()) == {"token", "expiresAt"}
    token = issued.json()["token"]
    frames = await gw.stream("GET", f"{events}?token={token}")
    kinds = [e["event"] for e in payloads(frames)]
    assert kinds[0] == "START" and kinds[-1] == "STOP" and frames[-1].id.startswith(f"{run_id}:")
    assert problem(await gw.http.get(f"{events}?token={token}"), 401)["detail"].startswith("SSE token")

    other = await gw.http.post("/api/agents/echo/runs", json={"message": "x"}, headers=mine)
    token = (await gw.http.post(f"/api/v1/runs/{run_id}/sse-token", headers=mine)).json()["token"]
    wrong_run = f"/api/v1/runs/{other.json()['runId']}/events?token={token}"
    assert (await gw.http.get(wrong_run)).status_code == 401
    foreign = await gw.http.post(
        f"/api/v1/runs/{run_id}/sse-token", headers={"Authorization": f"Bearer {tenants.b_user}"}
    )
    problem(foreign, 404)

    token = (await gw.http.post(f"/api/v1/runs/{run_id}/sse-token", headers=mine)).json()["token"]
    tail = await gw.stream("GET", f"{events}?token={token}", headers={"Last-Event-ID": frames[-2].id})
    assert [f.id for f in tail] == [frames[-1].id]  # resumable like the POST stream


async def test_sse_tokens_expire(gateways: GatewayLauncher) -> None:
    gw = await gateways(families=all_families(), sse_token_ttl_s=0.0)
    run_id = (await gw.http.post("/api/agents/echo/runs", json={"message": "hi"})).json()["runId"]
    token = (await gw.http.post(f"/api/v1/runs/{run_id}/sse-token")).json()["token"]
    response = await gw.http.get(f"/api/v1/runs/{run_id}/events", params={"token": token})
    assert isinstance(response, httpx.Response) and problem(response, 401)
    frames = await gw.stream("GET", f"/api/v1/runs/{run_id}/events", params={"sinceId": 2})
    assert frames[0].id == f"{run_id}:3"  # without auth, no token is needed
