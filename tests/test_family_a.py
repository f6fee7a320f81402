"""Family A (Operativus Agent Manager) through the real gateway and server: every route's documented
shape, its error statuses as problem+json, the data-only SSE frames, teams, approval, cancel,
background polling and batch status."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import datetime
from typing import Any

import httpx
import pytest
from httpx_sse import ServerSentEvent, aconnect_sse
from openapi_spec_validator import validate

from gateway.families import a
from tests import gateway_harness
from tests.gateway_harness import Gateway, GatewayLauncher

gateways = gateway_harness.gateways
database_url = gateway_harness.database_url
RUNS = "/api/agents/{agent}/runs"
PROBLEM_KEYS = {"type", "title", "status", "detail", "instance"}
RUN_RESPONSE_KEYS = {
    "runId",
    "sessionId",
    "content",
    "metadata",
    "tools",
    "reasoningSteps",
    "status",
    "metrics",
}
METRICS_TYPES = {
    "inputTokens": int,
    "outputTokens": int,
    "reasoningTokens": int,
    "llmCallCount": int,
    "errorCount": int,
    "durationMs": int,
    "model": str,
}
TOOL_TYPES = {"toolName": str, "toolInput": str, "toolOutput": str, "durationMs": int, "isError": bool}


@pytest.fixture
async def gw(gateways: GatewayLauncher) -> Gateway:
    return await gateways(families=[a.setup])


def problem(response: httpx.Response, status: int) -> dict[str, Any]:
    """The RFC 7807 body of an error response, after checking its status and media type."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert set(body) >= PROBLEM_KEYS and body["status"] == status
    assert body["instance"] == response.request.url.path
    assert body["type"].startswith("urn:problem-type:")
    return body


async def run(gw: Gateway, agent: str, body: dict[str, Any]) -> dict[str, Any]:
    response = await gw.http.post(RUNS.format(agent=agent), json=body)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    assert set(result) == RUN_RESPONSE_KEYS
    return result


async def status(gw: Gateway, agent: str, run_id: str) -> dict[str, Any]:
    response = await gw.http.get(f"{RUNS.format(agent=agent)}/{run_id}/status")
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


async def poll(gw: Gateway, agent: str, run_id: str, wanted: str, timeout: float = 10.0) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        while (current := await status(gw, agent, run_id))["status"] != wanted:
            await asyncio.sleep(0.02)
    return current


async def stream(gw: Gateway, agent: str, body: dict[str, Any]) -> list[ServerSentEvent]:
    async with aconnect_sse(gw.http, "POST", f"{RUNS.format(agent=agent)}/stream", json=body) as source:
        assert source.response.status_code == 200
        assert source.response.headers["content-type"].startswith("text/event-stream")
        return [frame async for frame in source.aiter_sse()]


def payloads(frames: list[ServerSentEvent]) -> list[dict[str, Any]]:
    """The AgentStreamEvents; every frame is a data-only message carrying exactly those keys."""
    events = [json.loads(f.data) for f in frames]
    assert all(f.event == "message" for f in frames)  # no `event:` line
    assert all(set(e) == {"event", "data", "timestamp"} and isinstance(e["data"], str) for e in events)
    return events


# ---- agents ---------------------------------------------------------------------------------


async def test_agents_are_agent_definitions(gw: Gateway) -> None:
    response = await gw.http.get("/api/agents", params={"includeInactive": "true"})
    assert response.status_code == 200 and response.headers["content-type"].startswith("application/json")
    agents = response.json()
    assert all(set(x) == {"id", "name", "description", "is_team"} for x in agents)
    assert all(isinstance(x["is_team"], bool) and isinstance(x["name"], str) for x in agents)
    teams = {x["id"]: x["is_team"] for x in agents}
    assert teams["ai-team"] is True and teams["echo"] is False
    one = (await gw.http.get("/api/agents/approval")).json()
    assert one == next(x for x in agents if x["id"] == "approval") and one["name"] == "Approval"
    missing = problem(await gw.http.get("/api/agents/nobody"), 404)
    assert missing["title"] == "Resource Not Found" and missing["identifier"] == "nobody"
    assert missing["resourceName"] == "Agent"


# ---- sync run -------------------------------------------------------------------------------


async def test_sync_run_answers_a_run_response(gw: Gateway) -> None:
    body = {
        "message": "what is 6 * 7",
        "session_id": "s-a-1",  # the spelling of some doc pages
        "userId": "u-1",
        "generateFollowups": True,
        "options": {"temperature": 0.5, "maxTokens": 100, "systemPrompt": "be brief"},
        "stream": False,
        "somethingNew": 1,  # unknown fields are ignored, as the product's JSON binding does
    }
    result = await run(gw, "tools", body)
    assert result["status"] == "COMPLETED" and result["sessionId"] == "s-a-1"
    assert result["content"] == "The calculator tool says: 42"
    assert result["reasoningSteps"] == ["I will use the calculator tool."]
    [call] = result["tools"]
    assert {k: type(v) for k, v in call.items()} == TOOL_TYPES
    assert call["toolName"] == "calculator" and json.loads(call["toolInput"]) == {"expression": "6 * 7"}
    assert call["toolOutput"] == "42" and call["isError"] is False
    metadata = result["metadata"]
    assert metadata["model"] == "python:tools"
    assert isinstance(metadata["followUpSuggestions"], str)  # a JSON array as text, as documented
    assert len(json.loads(metadata["followUpSuggestions"])) == 3
    assert "requiredAction" not in metadata
    metrics = result["metrics"]
    assert {k: type(metrics[k]) for k in METRICS_TYPES} == METRICS_TYPES
    assert metrics["errorType"] is None and metrics["errorMessage"] is None and metrics["errorCount"] == 0
    run_record = await gw.grpc.get(result["runId"])
    assert run_record.user_id == "u-1" and run_record.input.options.max_tokens == 100
    assert run_record.input.options.system_prompt == "be brief"


async def test_followups_only_when_asked_and_model_override(gw: Gateway) -> None:
    result = await run(
        gw, "echo", {"message": "hi there", "options": {"model": "gpt-x", "provider": "openai"}}
    )
    assert "followUpSuggestions" not in result["metadata"]
    assert result["metadata"]["model"] == result["metrics"]["model"] == "openai:gpt-x"
    assert result["content"] == "hi there" and result["tools"] == []


# ---- request errors -------------------------------------------------------------------------


@pytest.mark.parametrize("route", ["", "/stream", "/background"])
@pytest.mark.parametrize(
    ("content", "title", "params"),
    [
        ('{"message": "hi",', "Malformed Request Body", None),
        ("[1, 2]", "Malformed Request Body", None),
        ("", "Malformed Request Body", None),
        ('{"sessionId": "s"}', "Invalid Request Content", ["message"]),
        ('{"message": "  "}', "Invalid Request Content", ["message"]),
        ('{"message": "hi", "options": {"maxTokens": -1}}', "Invalid Request Content", ["options.maxTokens"]),
        (
            '{"message": "hi", "sessionId": 5, "media": "x"}',
            "Invalid Request Content",
            ["media", "sessionId"],
        ),
    ],
)
async def test_bad_run_bodies_are_400_problems(
    gw: Gateway, route: str, content: str, title: str, params: list[str] | None
) -> None:
    response = await gw.http.post(
        RUNS.format(agent="echo") + route, content=content, headers={"Content-Type": "application/json"}
    )
    body = problem(response, 400)
    assert body["title"] == title
    if params is None:
        assert body["type"] == "urn:problem-type:malformed-request-body" and "invalidParams" not in body
    else:
        assert sorted(p["name"] for p in body["invalidParams"]) == params
        assert all(isinstance(p["reason"], str) and p["reason"] for p in body["invalidParams"])


@pytest.mark.parametrize("route", ["", "/stream", "/background"])
async def test_unknown_agent_is_404_on_every_run_route(gw: Gateway, route: str) -> None:
    response = await gw.http.post(RUNS.format(agent="nobody") + route, json={"message": "hi"})
    assert problem(response, 404)["resourceName"] == "Agent"


async def test_unknown_routes_under_api_are_problems(gw: Gateway) -> None:
    body = problem(await gw.http.get("/api/agents/echo/elsewhere"), 404)
    assert body["title"] == "Endpoint Not Found" and body["type"] == "urn:problem-type:not-found"
    response = await gw.http.put("/api/agents")
    assert problem(response, 405)["title"] == "Method Not Allowed" and "GET" in response.headers["allow"]
    assert "error" in (await gw.http.get("/v1/elsewhere")).json()  # other surfaces keep their shape


# ---- stream ---------------------------------------------------------------------------------


async def test_stream_frames(gw: Gateway) -> None:
    before = time.time() * 1000
    frames = await stream(gw, "echo", {"message": "one two three", "generateFollowups": True})
    events = payloads(frames)
    run_id = json.loads(events[0]["data"])["runId"]
    assert [f.id for f in frames] == [f"{run_id}:{i}" for i in range(1, len(frames) + 1)]  # run:seq
    kinds = [e["event"] for e in events]
    assert kinds[0] == "START" and kinds[-1] == "STOP" and kinds.count("STOP") == 1
    assert set(kinds) == {"START", "REASONING_DELTA", "CONTENT_DELTA", "STOP"}
    start = json.loads(events[0]["data"])
    assert set(start) == {"runId", "sessionId"} and start["sessionId"]
    text = "".join(e["data"] for e in events if e["event"] == "CONTENT_DELTA")
    assert text == "one two three"
    stop = json.loads(events[-1]["data"])
    assert {k: stop[k] for k in ("runId", "sessionId", "status")} == {**start, "status": "COMPLETED"}
    assert isinstance(stop["followUpSuggestions"], list) and len(stop["followUpSuggestions"]) == 3
    assert all(
        isinstance(e["timestamp"], int) and before - 5000 < e["timestamp"] < before + 60_000 for e in events
    )
    run_status = await status(gw, "echo", start["runId"])
    assert run_status["status"] == "COMPLETED" and run_status["output"] == text


async def test_stream_without_followups_has_none_on_stop(gw: Gateway) -> None:
    events = payloads(await stream(gw, "echo", {"message": "hello"}))
    assert "followUpSuggestions" not in json.loads(events[-1]["data"])


async def test_team_stream_names_the_member(gw: Gateway) -> None:
    events = payloads(await stream(gw, "ai-team", {"message": "what is 2 + 3"}))
    starts = [json.loads(e["data"]) for e in events if e["event"] == "TOOL_START"]
    ends = [json.loads(e["data"]) for e in events if e["event"] == "TOOL_END"]
    assert starts == [{"toolName": "ai-tools", "toolInput": {"instruction": "what is 2 + 3"}}]
    assert ends[0]["toolName"] == "ai-tools" and "5" in ends[0]["toolOutput"]
    assert events[-1]["event"] == "STOP"


async def test_a_cancelled_stream_ends_with_an_error_frame(gw: Gateway) -> None:
    url = f"{RUNS.format(agent='slow')}/stream"
    async with aconnect_sse(gw.http, "POST", url, json={"message": "tokens=300 delay_ms=20"}) as source:
        assert source.response.status_code == 200
        frames = []
        async for frame in source.aiter_sse():
            frames.append(frame)
            if len(frames) == 3:
                run_id = json.loads(json.loads(frames[0].data)["data"])["runId"]
                assert (await gw.http.delete(f"{RUNS.format(agent='slow')}/{run_id}")).status_code == 204
    events = payloads(frames)
    assert events[-1]["event"] == "ERROR" and "cancel" in events[-1]["data"]
    assert [e["event"] for e in events].count("STOP") == 0


async def test_a_paused_stream_ends_with_paused(gw: Gateway) -> None:
    frames = await stream(gw, "approval", {"message": "send the report"})
    events = payloads(frames)
    paused = json.loads(events[-1]["data"])
    assert frames[-1].id == f"{paused['runId']}:{len(frames)}" and events[-1]["event"] == "PAUSED"
    assert paused["status"] == "PAUSED" and paused["requiredAction"]["tool"] == "send_email"
    assert paused["runId"] == json.loads(events[0]["data"])["runId"]


# ---- approval -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("decision", "approved"),
    [({"action": "APPROVE"}, True), ({"decision": "APPROVED"}, True), ({"action": "REJECT"}, False)],
)
async def test_approval_round_trip(gw: Gateway, decision: dict[str, str], approved: bool) -> None:
    paused = await run(gw, "approval", {"message": "send the report"})
    assert paused["status"] == "PAUSED" and paused["content"] == "" and paused["tools"] == []
    action = paused["metadata"]["requiredAction"]
    assert action["type"] == "TOOL_APPROVAL" and action["tool"] == "send_email" and action["approvalId"]
    assert json.loads(action["args"])["body"] == "send the report"
    polled = await status(gw, "approval", paused["runId"])
    assert polled["status"] == "PAUSED" and polled["completedAt"] is None

    url = f"{RUNS.format(agent='approval')}/{paused['runId']}/continue"
    response = await gw.http.post(url, json=decision)
    assert response.status_code == 200, response.text
    done = response.json()
    assert set(done) == RUN_RESPONSE_KEYS and done["status"] == "COMPLETED"
    assert done["runId"] == paused["runId"] and done["sessionId"] == paused["sessionId"]
    [call] = done["tools"]
    assert call["toolName"] == "send_email" and call["isError"] is (not approved)
    assert done["content"] == (
        "The email was sent." if approved else "The email was not sent because the request was refused."
    )
    assert "requiredAction" not in done["metadata"]

    # The same decision again (a retry) is applied once and answered the same; another is refused.
    again = await gw.http.post(url, json=decision)
    assert again.status_code == 200 and again.json()["runId"] == done["runId"]
    assert again.json()["status"] == "COMPLETED" and len(again.json()["tools"]) == 1
    other = {"action": "REJECT" if approved else "APPROVE"}
    refused = problem(await gw.http.post(url, json=other), 400)
    assert refused["detail"] == "Run is not in PAUSED state (status: COMPLETED)"


async def test_continue_errors(gw: Gateway) -> None:
    paused = await run(gw, "approval", {"message": "send it"})
    url = f"{RUNS.format(agent='approval')}/{paused['runId']}/continue"
    for body in ({}, {"action": "MAYBE"}, {"action": 1}):
        bad = problem(await gw.http.post(url, json=body), 400)
        assert [p["name"] for p in bad["invalidParams"]] == ["action"]
    assert problem(await gw.http.post(url, content="{"), 400)["title"] == "Malformed Request Body"
    missing = problem(
        await gw.http.post(f"{RUNS.format(agent='approval')}/nope/continue", json={"action": "APPROVE"}), 404
    )
    assert missing["resourceName"] == "AgentRun" and missing["identifier"] == "nope"
    assert (await status(gw, "approval", paused["runId"]))[
        "status"
    ] == "PAUSED"  # bad requests changed nothing


# ---- background, status, cancel -------------------------------------------------------------


async def test_background_then_poll_until_completed(gw: Gateway) -> None:
    response = await gw.http.post(f"{RUNS.format(agent='echo')}/background", json={"message": "later please"})
    assert response.status_code == 200
    queued = response.json()
    assert set(queued) == {"runId", "status"} and queued["status"] == "QUEUED"
    done = await poll(gw, "echo", queued["runId"], "COMPLETED")
    assert done["id"] == done["runId"] == queued["runId"] and done["agentId"] == "echo"
    assert done["output"] == "later please" and done["errorMessage"] is None
    assert isinstance(done["sessionId"], str) and done["sessionId"]
    created, completed, updated = (
        datetime.fromisoformat(done[k]) for k in ("createdAt", "completedAt", "updatedAt")
    )
    assert created.tzinfo is not None and created <= completed <= updated
    missing = problem(await gw.http.get(f"{RUNS.format(agent='echo')}/nope/status"), 404)
    assert missing["title"] == "Resource Not Found"


async def test_cancel_a_running_run(gw: Gateway) -> None:
    slow = RUNS.format(agent="slow")
    queued = (await gw.http.post(f"{slow}/background", json={"message": "tokens=300 delay_ms=20"})).json()
    running = await poll(gw, "slow", queued["runId"], "RUNNING")
    assert running["completedAt"] is None and running["output"] is None
    response = await gw.http.delete(f"{slow}/{queued['runId']}")
    assert response.status_code == 204 and response.content == b""
    cancelled = await status(gw, "slow", queued["runId"])
    assert cancelled["status"] == "CANCELLED" and cancelled["completedAt"] is not None
    assert cancelled["errorMessage"] and cancelled["output"] is None
    again = await gw.http.delete(f"{slow}/{queued['runId']}")  # terminal: still 204, unchanged
    assert again.status_code == 204 and (await status(gw, "slow", queued["runId"]))["status"] == "CANCELLED"
    unknown = await gw.http.delete(f"{slow}/no-such-run")
    assert unknown.status_code == 204 and unknown.content == b""


async def test_cancel_leaves_a_completed_run_alone(gw: Gateway) -> None:
    done = await run(gw, "echo", {"message": "fine"})
    assert (await gw.http.delete(f"{RUNS.format(agent='echo')}/{done['runId']}")).status_code == 204
    assert (await status(gw, "echo", done["runId"]))["status"] == "COMPLETED"


# ---- batch status ---------------------------------------------------------------------------


async def test_batch_status_order_missing_and_duplicates(gw: Gateway) -> None:
    first = await run(gw, "echo", {"message": "first"})
    second = await run(gw, "echo", {"message": "second"})
    a_id, b_id = first["runId"], second["runId"]
    url = f"{RUNS.format(agent='echo')}/status"
    comma = (await gw.http.get(url, params={"runIds": f"{b_id},missing,{a_id},{b_id}"})).json()
    assert [r["id"] for r in comma] == [b_id, a_id]
    assert [r["output"] for r in comma] == ["second", "first"] and all(r["runId"] == r["id"] for r in comma)
    repeated = await gw.http.get(
        url, params=[("runIds", a_id), ("runIds", f"missing,{b_id}"), ("runIds", a_id)]
    )
    assert [r["id"] for r in repeated.json()] == [a_id, b_id]
    assert (await gw.http.get(url, params={"runIds": "missing"})).json() == []
    empty = await gw.http.get(url, params={"runIds": ""})
    assert empty.status_code == 200 and empty.json() == []


async def test_batch_status_errors(gw: Gateway) -> None:
    url = f"{RUNS.format(agent='echo')}/status"
    absent = problem(await gw.http.get(url), 400)
    assert [p["name"] for p in absent["invalidParams"]] == ["runIds"]
    ids = ",".join(f"r{i}" for i in range(101))
    assert (
        problem(await gw.http.get(url, params={"runIds": ids}), 400)["detail"]
        == "Maximum 100 runIds per request"
    )
    ok = await gw.http.get(url, params={"runIds": ",".join(f"r{i}" for i in range(100))})
    assert ok.status_code == 200 and ok.json() == []


# ---- OpenAPI --------------------------------------------------------------------------------


async def test_openapi_documents_every_route(gw: Gateway) -> None:
    doc = (await gw.http.get("/openapi.json")).json()
    validate(doc)
    runs = "/api/agents/{agentId}/runs"
    expected = {
        ("/api/agents", "get"): "200",
        ("/api/agents/{agentId}", "get"): "200",
        (runs, "post"): "200",
        (f"{runs}/stream", "post"): "200",
        (f"{runs}/background", "post"): "200",
        (f"{runs}/status", "get"): "200",
        (runs + "/{runId}/status", "get"): "200",
        (runs + "/{runId}/continue", "post"): "200",
        (runs + "/{runId}", "delete"): "204",
    }
    for (path, method), code in expected.items():
        assert code in doc["paths"][path][method]["responses"], (path, method)
    assert "text/event-stream" in doc["paths"][f"{runs}/stream"]["post"]["responses"]["200"]["content"]
    assert {"operativus.RunResponse", "operativus.AgentRun", "operativus.Problem"} <= set(
        doc["components"]["schemas"]
    )
