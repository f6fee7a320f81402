"""Family C (WebAgent "Run Agent") against the real gateway and server: both wait modes, polling by
integer id, JSON answers, FastAPI-shaped 422s, WebAgent's 404/500 bodies, model overrides and the
AgentResponse webhook at a real receiver."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import socket
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate
from referencing import Registry
from referencing.jsonschema import DRAFT202012

from gateway.families import c
from tests import gateway_harness
from tests.conftest import Launcher
from tests.gateway_harness import Gateway, GatewayLauncher
from tests.test_webhooks import FAST, Receiver

gateways = gateway_harness.gateways
database_url = gateway_harness.database_url

AGENT_RESPONSE_KEYS = {"task_id", "task_run_id", "history", "result", "is_done", "is_successful", "status"}
TASK_RUN_KEYS = {
    *("id", "task_id", "prompt", "model", "provider", "webhook_url", "response_format", "json_schema"),
    *("result", "is_done", "is_successful", "webhook_result_success", "webhook_result_status_code"),
    *("webhook_result_message", "steps", "status"),
}
ACTION_KEYS = {"name", "params", "is_done", "success", "extracted_content", "error", "include_in_memory"}
SCHEMA = {
    "type": "object",
    "properties": {"answer": {"type": "string", "minLength": 1}, "n": {"type": "integer"}},
    "required": ["answer", "n"],
}
PROVIDERS = "'openai', 'deepseek', 'anthropic', 'google', 'groq', 'mistral' or 'together'"


async def family_c(gateways: GatewayLauncher, **settings: Any) -> Gateway:
    return await gateways(families=[c.setup], **settings)


async def poll(gw: Gateway, run_id: int, until: Any, timeout: float = 10.0) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        while True:
            response = await gw.http.get(f"/api/runs/{run_id}")
            assert response.status_code == 200, response.text
            body: dict[str, Any] = response.json()
            if until(body):
                return body
            await asyncio.sleep(0.02)


async def conforms(gw: Gateway, name: str, body: Any) -> None:
    """`body` satisfies the schema /openapi.json documents for it."""
    doc = (await gw.http.get("/openapi.json")).json()
    registry: Registry[Any] = Registry().with_resource("urn:doc", DRAFT202012.create_resource(doc))
    ref = {"$ref": f"urn:doc#/components/schemas/webagent.{name}"}
    Draft202012Validator(ref, registry=registry).validate(body)


@pytest.mark.parametrize("wait", [{}, {"wait_for_completion": True}, {"wait_for_completion": None}])
async def test_a_waiting_run_answers_the_agent_response(
    gateways: GatewayLauncher, wait: dict[str, Any]
) -> None:
    gw = await family_c(gateways)
    response = await gw.http.post("/api/runs", json={"prompt": "hello there", **wait})
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == AGENT_RESPONSE_KEYS
    assert type(body["task_id"]) is int and body["task_run_id"] == body["task_id"] >= 1
    assert (body["status"], body["is_done"], body["is_successful"]) == ("success", True, True)
    assert body["result"] == "hello there"
    done = body["history"][-1]["actions"][-1]
    assert set(done) == ACTION_KEYS and (done["name"], done["is_done"]) == ("done", True)
    await conforms(gw, "AgentResponse", body)


async def test_a_background_run_answers_ids_and_is_polled_until_done(gateways: GatewayLauncher) -> None:
    gw = await family_c(gateways, family_c_agent="slow")
    response = await gw.http.post(
        "/api/runs", json={"prompt": "tokens=4 delay_ms=100", "wait_for_completion": False}
    )
    assert response.status_code == 200, response.text
    ids = response.json()
    assert set(ids) == {"task_id", "task_run_id"}
    assert type(ids["task_run_id"]) is int and ids["task_id"] == ids["task_run_id"]

    running = (await gw.http.get(f"/api/runs/{ids['task_run_id']}")).json()
    assert (running["is_done"], running["is_successful"], running["status"]) == (False, None, "in_progress")
    assert running["result"] is None

    run = await poll(gw, ids["task_run_id"], lambda r: r["is_done"])
    assert set(run) == TASK_RUN_KEYS
    assert (run["id"], run["task_id"]) == (ids["task_run_id"], ids["task_id"])
    assert (run["status"], run["is_successful"], run["result"]) == ("success", True, "t0 t1 t2 t3 ")
    assert (run["prompt"], run["response_format"], run["json_schema"]) == (
        "tokens=4 delay_ms=100",
        "text",
        None,
    )
    assert (run["model"], run["provider"], run["webhook_url"]) == ("slow", "python", None)
    assert run["webhook_result_success"] is run["webhook_result_status_code"] is None
    step = run["steps"][-1]
    assert (step["task_run_id"], step["step_number"], step["screenshot"]) == (
        run["id"],
        len(run["steps"]),
        None,
    )
    action = step["actions"][0]
    assert set(action) == ACTION_KEYS | {"id", "task_run_id", "step_number", "action_number"}
    assert type(action["id"]) is int
    assert (action["task_run_id"], action["step_number"], action["action_number"]) == (
        run["id"],
        step["step_number"],
        1,
    )
    await conforms(gw, "TaskRun", run)
    await conforms(gw, "AsyncAgentResponse", ids)


async def test_tool_calls_are_steps_with_numbered_actions(gateways: GatewayLauncher) -> None:
    gw = await family_c(gateways, family_c_agent="ai-tools")
    body = (await gw.http.post("/api/runs", json={"prompt": "what is 2+3?"})).json()
    call = body["history"][0]["actions"][0]
    assert (call["name"], call["params"], call["extracted_content"]) == (
        "calculator",
        {"expression": "2+3"},
        "5",
    )
    run = (await gw.http.get(f"/api/runs/{body['task_run_id']}")).json()
    assert [s["step_number"] for s in run["steps"]] == [1, 2]
    assert [s["actions"][0]["name"] for s in run["steps"]] == ["calculator", "done"]
    assert len({a["id"] for s in run["steps"] for a in s["actions"]}) == 2
    assert (run["model"], run["provider"]) == ("demo", None)


@pytest.mark.parametrize(
    "fields",
    [
        {"response_format": "json", "json_schema": SCHEMA},
        {"response_format": "json", "json_schema": json.dumps(SCHEMA)},
        {"json_schema": SCHEMA},  # WebAgent shapes the answer by the schema alone
    ],
)
async def test_json_answers_are_objects(gateways: GatewayLauncher, fields: dict[str, Any]) -> None:
    gw = await family_c(gateways)
    response = await gw.http.post("/api/runs", json={"prompt": "hello there", **fields})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "success"
    assert body["result"] == {"answer": "hello there", "n": 0}
    assert type(body["result"]["n"]) is int  # not 0.0
    run = (await gw.http.get(f"/api/runs/{body['task_run_id']}")).json()
    assert run["response_format"] == "json"
    assert json.loads(run["result"]) == body["result"] and json.loads(run["json_schema"]) == SCHEMA
    assert '"minLength": 1' in run["json_schema"]  # not 1.0


async def test_json_without_a_schema_is_an_object_too(gateways: GatewayLauncher) -> None:
    gw = await family_c(gateways)
    body = (await gw.http.post("/api/runs", json={"prompt": "hello there", "response_format": "json"})).json()
    assert body["result"] == {"answer": "hello there"}


def error(kind: str, field: str | None, msg: str, value: Any, ctx: Any = None) -> dict[str, Any]:
    result = {"type": kind, "loc": ["body", field] if field else ["body"], "msg": msg, "input": value}
    return result if ctx is None else {**result, "ctx": ctx}


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (
            {"prompt": "ab"},
            [
                error(
                    "string_too_short",
                    "prompt",
                    "String should have at least 3 characters",
                    "ab",
                    {"min_length": 3},
                )
            ],
        ),
        ({"model": "x"}, [error("missing", "prompt", "Field required", {"model": "x"})]),
        (
            {"prompt": "abc", "provider": "openrouter"},
            [
                error(
                    "enum", "provider", f"Input should be {PROVIDERS}", "openrouter", {"expected": PROVIDERS}
                )
            ],
        ),
        (
            {"prompt": "abc", "wait_for_completion": "maybe", "model": 5},
            [
                error("string_type", "model", "Input should be a valid string", 5),
                error(
                    "bool_parsing",
                    "wait_for_completion",
                    "Input should be a valid boolean, unable to interpret input",
                    "maybe",
                ),
            ],
        ),
        (
            {"prompt": 123, "response_format": ["json"]},
            [
                error("string_type", "prompt", "Input should be a valid string", 123),
                error("string_type", "response_format", "Input should be a valid string", ["json"]),
            ],
        ),
        (
            {"prompt": "abc", "json_schema": "{nope"},
            [
                error(
                    "value_error",
                    "json_schema",
                    "Value error, Invalid JSON string: Expecting property name enclosed in double quotes",
                    "{nope",
                    {"error": {}},
                )
            ],
        ),
        (
            {"prompt": "abc", "json_schema": {"type": "nope"}},
            [
                error(
                    "value_error",
                    "json_schema",
                    "Value error, Invalid JSON Schema: 'nope' is not valid under any of the given schemas",
                    {"type": "nope"},
                    {"error": {}},
                )
            ],
        ),
        (
            ["prompt"],
            [
                error(
                    "model_attributes_type",
                    None,
                    "Input should be a valid dictionary or object to extract fields from",
                    ["prompt"],
                )
            ],
        ),
    ],
)
async def test_invalid_bodies_are_fastapi_422s(
    gateways: GatewayLauncher, body: Any, detail: list[dict[str, Any]]
) -> None:
    gw = await family_c(gateways)
    response = await gw.http.post("/api/runs", json=body)
    assert response.status_code == 422, response.text
    assert response.json() == {"detail": detail}
    await conforms(gw, "HTTPValidationError", response.json())


async def test_a_bad_schema_type_is_a_422_too(gateways: GatewayLauncher) -> None:
    gw = await family_c(gateways)
    response = await gw.http.post("/api/runs", json={"prompt": "abc", "json_schema": 5})
    assert response.status_code == 422
    assert [(d["type"], d["loc"]) for d in response.json()["detail"]] == [
        ("string_type", ["body", "json_schema", "str"]),
        ("dict_type", ["body", "json_schema", "dict[any,any]"]),
    ]


@pytest.mark.parametrize(
    ("fields", "field", "words"),
    [
        ({"model": "nope:thing"}, "model", "unknown provider 'nope'"),
        ({"prompt": "     "}, "prompt", "must not be empty"),
        ({"webhook_url": "http://127.0.0.1:9/hook"}, "webhook_url", "URL"),
    ],
)
async def test_what_the_server_refuses_is_a_422_on_the_clients_field(
    gateways: GatewayLauncher, fields: dict[str, Any], field: str, words: str
) -> None:
    gw = await family_c(gateways)
    body = {"prompt": "hello there", **fields}
    response = await gw.http.post("/api/runs", json=body)
    assert response.status_code == 422, response.text
    [item] = response.json()["detail"]
    assert (item["type"], item["loc"], item["input"], item["ctx"]) == (
        "value_error",
        ["body", field],
        body.get(field),
        {"error": {}},
    )
    assert item["msg"].startswith("Value error, ") and words in item["msg"]


@pytest.mark.parametrize(
    ("content", "detail"),
    [
        (
            b'{"prompt": "abc",}',
            [
                {
                    "type": "json_invalid",
                    "loc": ["body", 17],
                    "msg": "JSON decode error",
                    "input": {},
                    "ctx": {"error": "Expecting property name enclosed in double quotes"},
                }
            ],
        ),
        (b"", [{"type": "missing", "loc": ["body"], "msg": "Field required", "input": None}]),
        (b"null", [{"type": "missing", "loc": ["body"], "msg": "Field required", "input": None}]),
    ],
)
async def test_malformed_or_absent_json_is_a_422(
    gateways: GatewayLauncher, content: bytes, detail: list[dict[str, Any]]
) -> None:
    gw = await family_c(gateways)
    response = await gw.http.post("/api/runs", content=content, headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert response.json() == {"detail": detail}


async def test_undecodable_and_oversized_bodies(gateways: GatewayLauncher) -> None:
    gw = await family_c(gateways, max_body_bytes=1000)
    bad = await gw.http.post("/api/runs", content=b'{"prompt": "\xff\xfe"}')
    assert (bad.status_code, bad.json()) == (400, {"detail": "There was an error parsing the body"})
    big = await gw.http.post("/api/runs", json={"prompt": "x" * 2000})
    assert big.status_code == 413 and "1000 bytes" in big.json()["detail"]


@pytest.mark.parametrize(
    ("run_id", "number"), [("999999", 999999), ("-1", -1), ("007", 7), ("99999999999", 99999999999)]
)
@pytest.mark.parametrize(("method", "suffix"), [("GET", ""), ("POST", "/set-as-cached-workflow")])
async def test_unknown_runs_are_404(
    gateways: GatewayLauncher, run_id: str, number: int, method: str, suffix: str
) -> None:
    gw = await family_c(gateways)
    await gw.http.post("/api/runs", json={"prompt": "hello there"})  # run 1 exists
    response = await gw.http.request(method, f"/api/runs/{run_id}{suffix}")
    assert response.status_code == 404
    assert response.json() == {"detail": f"Task run with ID {number} not found"}  # as FastAPI's int


@pytest.mark.parametrize("run_id", ["abc", "1.5", "\u0663", "1e3"])
@pytest.mark.parametrize(("method", "suffix"), [("GET", ""), ("POST", "/set-as-cached-workflow")])
async def test_non_integer_run_ids_are_422(
    gateways: GatewayLauncher, run_id: str, method: str, suffix: str
) -> None:
    gw = await family_c(gateways)
    response = await gw.http.request(method, f"/api/runs/{run_id}{suffix}")
    assert response.status_code == 422
    assert response.json() == {
        "detail": [
            {
                "type": "int_parsing",
                "loc": ["path", "run_id"],
                "msg": "Input should be a valid integer, unable to parse string as an integer",
                "input": run_id,
            }
        ]
    }


async def test_unknown_routes_and_methods_under_api(gateways: GatewayLauncher) -> None:
    gw = await family_c(gateways)
    for path in ("/api/tasks/1/nothing", "/api/runs/1/nothing"):
        missing = await gw.http.get(path)
        assert (missing.status_code, missing.json()) == (404, {"detail": "Not Found"})
    wrong = await gw.http.get("/api/runs")
    assert (wrong.status_code, wrong.json()) == (405, {"detail": "Method Not Allowed"})
    assert "POST" in wrong.headers["allow"]


async def test_a_paused_run_is_in_progress(gateways: GatewayLauncher) -> None:
    gw = await family_c(gateways, family_c_agent="approval")
    body = (await gw.http.post("/api/runs", json={"prompt": "send the report"})).json()
    assert (body["status"], body["is_done"], body["is_successful"], body["result"]) == (
        "in_progress",
        False,
        None,
        None,
    )
    run = (await gw.http.get(f"/api/runs/{body['task_run_id']}")).json()
    assert (run["status"], run["is_done"]) == ("in_progress", False)


async def test_a_provider_without_a_key_fails_the_run_clearly(
    gateways: GatewayLauncher, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    gw = await family_c(gateways)
    response = await gw.http.post(
        "/api/runs", json={"prompt": "hello", "model": "gpt-4o", "provider": "openai"}
    )
    assert response.status_code == 200, response.text  # a failed run is an answer, not an HTTP error
    body = response.json()
    assert (body["status"], body["is_done"], body["is_successful"], body["result"]) == (
        "failure",
        True,
        False,
        None,
    )
    assert "OPENAI_API_KEY" in body["history"][-1]["actions"][-1]["error"]
    run = (await gw.http.get(f"/api/runs/{body['task_run_id']}")).json()
    assert (run["model"], run["provider"], run["status"], run["is_successful"]) == (
        "gpt-4o",
        "openai",
        "failure",
        False,
    )


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_server_trouble_is_webagents_500(gateways: GatewayLauncher) -> None:
    down = await family_c(gateways, upstream=f"127.0.0.1:{closed_port()}")
    response = await down.http.post("/api/runs", json={"prompt": "hello there"})
    assert (response.status_code, response.json()) == (500, {"detail": "Error while executing agent"})
    response = await down.http.get("/api/runs/1")
    assert (response.status_code, response.json()) == (500, {"detail": "Error while fetching run"})
    misconfigured = await family_c(gateways, family_c_agent="no-such-agent")
    response = await misconfigured.http.post("/api/runs", json={"prompt": "hello there"})
    assert (response.status_code, response.json()) == (500, {"detail": "Error while executing agent"})


async def test_the_agent_response_webhook_reaches_a_receiver(
    launch: Launcher, gateways: GatewayLauncher
) -> None:
    receiver = Receiver(statuses=[])
    failing = Receiver(statuses=[500, 503])
    for r in (receiver, failing):
        await r.start()
    try:
        h = await launch(webhooks=dataclasses.replace(FAST, max_attempts=2))
        gw = await gateways(h, families=[c.setup])
        ok = (
            await gw.http.post("/api/runs", json={"prompt": "hello there", "webhook_url": receiver.url})
        ).json()
        bad = (
            await gw.http.post("/api/runs", json={"prompt": "hello there", "webhook_url": failing.url})
        ).json()

        delivered = await poll(gw, ok["task_run_id"], lambda r: r["webhook_result_success"] is not None)
        assert receiver.bodies() == [ok]  # the AgentResponse, as the waiting client got it
        assert (delivered["webhook_url"], delivered["webhook_result_success"]) == (receiver.url, True)
        assert (delivered["webhook_result_status_code"], delivered["webhook_result_message"]) == (
            200,
            "delivered",
        )

        refused = await poll(gw, bad["task_run_id"], lambda r: r["webhook_result_success"] is not None)
        assert len(failing.received) == 2
        assert (refused["webhook_result_success"], refused["webhook_result_status_code"]) == (False, 503)
        assert "503" in refused["webhook_result_message"]
    finally:
        for r in (receiver, failing):
            await r.stop()


async def test_set_as_cached_workflow_is_accepted(gateways: GatewayLauncher) -> None:
    gw = await family_c(gateways)
    run = (
        await gw.http.post("/api/runs", json={"prompt": "hello there", "use_cached_workflow": True})
    ).json()
    response = await gw.http.post(f"/api/runs/{run['task_run_id']}/set-as-cached-workflow")
    assert response.status_code == 200
    body = response.json()
    assert (body["success"], body["task_id"], body["workflow"]) == (
        True,
        run["task_id"],
        {"parameters": [], "steps": []},
    )
    await conforms(gw, "CachedWorkflow", body)


async def test_the_routes_are_documented(gateways: GatewayLauncher) -> None:
    gw = await family_c(gateways)
    doc = (await gw.http.get("/openapi.json")).json()
    validate(doc)
    run = doc["paths"]["/api/runs"]["post"]
    assert run["requestBody"]["required"] is True
    assert set(run["responses"]) == {"200", "422", "default"}
    assert set(doc["paths"]["/api/runs/{run_id}"]["get"]["responses"]) == {"200", "404", "default"}
    request = doc["components"]["schemas"]["webagent.AgentRequest"]
    assert request["required"] == ["prompt"] and request["properties"]["prompt"]["minLength"] == 3
    assert doc["components"]["schemas"]["webagent.Provider"]["enum"][0] == "openai"
