"""Run lifecycles written once and run over both transports: gRPC straight to the server, and the
gateway's canonical REST (JSON and SSE). Both speak ProtoJSON here, so each scenario asserts the
same values whichever way it went."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any, Protocol

import grpc
import pytest
from agentrun.v1 import run_service_pb2 as pb
from google.protobuf import json_format
from httpx_sse import aconnect_sse

from tests import gateway_harness
from tests.conftest import Harness, Launcher
from tests.gateway_harness import Gateway, GatewayLauncher

gateways = gateway_harness.gateways
Json = dict[str, Any]


class Failed(Exception):
    """A call failed; `code` is the gRPC code name (over HTTP, the error body's `status`)."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


class Client(Protocol):
    async def call(self, method: str, body: Json) -> Json: ...
    async def stream(self, body: Json) -> list[Json]: ...


class GrpcClient:
    def __init__(self, h: Harness) -> None:
        self.h = h

    async def call(self, method: str, body: Json) -> Json:
        stub_method = getattr(self.h.stub, method)
        request = json_format.ParseDict(body, getattr(pb, f"{method}Request")())
        try:
            return json_format.MessageToDict(await stub_method(request))
        except grpc.aio.AioRpcError as exc:
            raise Failed(exc.code().name) from None

    async def stream(self, body: Json) -> list[Json]:
        request = json_format.ParseDict(body, pb.StreamRunRequest())
        return [json_format.MessageToDict(r)["event"] async for r in self.h.stub.StreamRun(request)]


# (HTTP method, path template, body fields) of each RPC on the canonical surface.
ROUTES = {
    "Run": ("POST", "/v1/agents/{agent_id}/runs", True),
    "GetRun": ("GET", "/v1/runs/{run_id}", False),
    "BatchGetRuns": ("GET", "/v1/runs:batchGet", False),
    "Continue": ("POST", "/v1/runs/{run_id}:continue", True),
    "CancelRun": ("POST", "/v1/runs/{run_id}:cancel", True),
}


class HttpClient:
    def __init__(self, gw: Gateway) -> None:
        self.http = gw.http

    async def call(self, method: str, body: Json) -> Json:
        verb, template, has_body = ROUTES[method]
        rest = dict(body)
        path = template.format(
            **{k: rest.pop(k) for k in ("agent_id", "run_id") if "{" + k + "}" in template}
        )
        if has_body:
            response = await self.http.request(verb, path, json=rest)
        else:
            response = await self.http.request(verb, path, params=rest)
        if response.status_code != 200:
            raise Failed(response.json()["error"]["status"])
        result: Json = response.json()
        return result

    async def stream(self, body: Json) -> list[Json]:
        path = f"/v1/agents/{body['run']['agentId']}/runs:stream"
        async with aconnect_sse(self.http, "POST", path, json=body) as source:
            if source.response.status_code != 200:
                raise Failed(json.loads(await source.response.aread())["error"]["status"])
            return [json.loads(frame.data)["event"] async for frame in source.aiter_sse()]


@pytest.fixture(params=["grpc", "http"])
async def client(
    request: pytest.FixtureRequest, launch: Launcher, gateways: GatewayLauncher
) -> AsyncIterator[Client]:
    h = await launch()
    yield GrpcClient(h) if request.param == "grpc" else HttpClient(await gateways(h))


def run_body(agent: str, message: str, **extra: Any) -> Json:
    return {"agent_id": agent, "input": {"message": message}, **extra}


async def test_sync_run(client: Client) -> None:
    run = (await client.call("Run", run_body("echo", "hello there", wait=True)))["run"]
    assert run["state"] == "RUN_STATE_COMPLETED" and run["output"] == "hello there"
    again = (await client.call("GetRun", {"run_id": run["number"]}))["run"]  # by number
    assert again["id"] == run["id"]


async def test_background_run_then_poll(client: Client) -> None:
    run = (await client.call("Run", run_body("slow", "tokens=3 delay_ms=20")))["run"]
    assert run["state"] in ("RUN_STATE_QUEUED", "RUN_STATE_RUNNING")
    async with asyncio.timeout(10):
        while run["state"] != "RUN_STATE_COMPLETED":
            await asyncio.sleep(0.02)
            run = (await client.call("GetRun", {"run_id": run["id"]}))["run"]


async def test_stream_is_ordered(client: Client) -> None:
    events = await client.stream({"run": {"agentId": "echo", "input": {"message": "one two three"}}})
    assert [int(e["seq"]) for e in events] == list(range(1, len(events) + 1))
    assert events[0]["type"] == "EVENT_TYPE_START" and events[-1]["type"] == "EVENT_TYPE_STOP"
    text = "".join(e.get("text", "") for e in events if e["type"] == "EVENT_TYPE_CONTENT_DELTA")
    assert text == "one two three"


async def test_approval_then_continue(client: Client) -> None:
    paused = (await client.call("Run", run_body("approval", "email the team", wait=True)))["run"]
    assert paused["state"] == "RUN_STATE_PAUSED" and paused["pendingAction"]["toolName"] == "send_email"
    body = {"run_id": paused["id"], "decision": "DECISION_APPROVE", "wait": True}
    done = (await client.call("Continue", body))["run"]
    assert done["state"] == "RUN_STATE_COMPLETED" and done["toolCalls"][0]["name"] == "send_email"
    # The same Continue again (a client retrying, no tool_call_id): applied once, answered the same.
    again = (await client.call("Continue", body))["run"]
    assert (again["id"], again["state"], len(again["toolCalls"])) == (done["id"], "RUN_STATE_COMPLETED", 1)
    with pytest.raises(Failed) as stale:
        await client.call("Continue", {**body, "decision": "DECISION_REJECT"})
    assert stale.value.code == "FAILED_PRECONDITION"


async def test_cancel_a_running_run(client: Client) -> None:
    run = (await client.call("Run", run_body("slow", "tokens=100 delay_ms=50")))["run"]
    cancelled = (await client.call("CancelRun", {"run_id": run["id"]}))["run"]
    assert cancelled["state"] == "RUN_STATE_CANCELLED" and cancelled["error"]["reason"] == "CANCELLED"


async def test_idempotent_submission(client: Client) -> None:
    first = (await client.call("Run", run_body("echo", "once", idempotency_key="k-1", wait=True)))["run"]
    again = (await client.call("Run", run_body("echo", "once", idempotency_key="k-1")))["run"]
    assert again["id"] == first["id"]
    with pytest.raises(Failed) as conflict:
        await client.call("Run", run_body("echo", "twice", idempotency_key="k-1"))
    assert conflict.value.code == "ALREADY_EXISTS"


async def test_batch_get_and_errors(client: Client) -> None:
    run = (await client.call("Run", run_body("echo", "x", wait=True)))["run"]
    batch = await client.call("BatchGetRuns", {"run_ids": ["nope", run["id"]]})
    assert [r["id"] for r in batch["runs"]] == [run["id"]] and batch["missingRunIds"] == ["nope"]
    with pytest.raises(Failed) as missing:
        await client.call("GetRun", {"run_id": "nope"})
    assert missing.value.code == "NOT_FOUND"
    with pytest.raises(Failed) as unknown:
        await client.call("Run", run_body("no-such-agent", "x"))
    assert unknown.value.code == "NOT_FOUND"
    with pytest.raises(Failed) as bad:
        await client.call("Run", run_body("echo", ""))
    assert bad.value.code == "INVALID_ARGUMENT"
