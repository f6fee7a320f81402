"""Family C (WebAgent) as documented beyond the run routes: WebAgent's model/provider defaults for
the half of the pair not sent, every valid Draft-7 json_schema (pydantic's $defs/$ref, non-object
top levels), and the optional /api/tasks routes."""

from __future__ import annotations

import json
from typing import Any

import pytest
from jsonschema import Draft7Validator
from pydantic import BaseModel

from tests import gateway_harness
from tests.gateway_harness import GatewayLauncher
from tests.test_family_c import AGENT_RESPONSE_KEYS, conforms, family_c, poll


def plain_task(task_id: int, prompt: str) -> dict[str, Any]:
    """A task of a plain text run with the server's default model, as GET /api/tasks/{id} shows it."""
    return {
        "id": task_id,
        "prompt": prompt,
        "model": "demo",
        "provider": None,
        "webhook_url": None,
        "response_format": "text",
        "json_schema": None,
        "cached_workflow": None,
        "use_cached_workflow": False,
    }


gateways = gateway_harness.gateways
database_url = gateway_harness.database_url


class City(BaseModel):
    name: str
    population: int


class Atlas(BaseModel):
    title: str
    cities: list[City]


TREE: dict[str, Any] = {
    "$defs": {
        "node": {
            "type": "object",
            "properties": {
                "label": {"type": "string"},
                "children": {"type": "array", "items": {"$ref": "#/$defs/node"}},
            },
            "required": ["label"],
        }
    },
    "$ref": "#/$defs/node",
}


# ---- model and provider defaults ------------------------------------------------------------


@pytest.mark.parametrize(
    ("sent", "model", "provider", "key"),
    [
        ({"model": "gpt-4o"}, "gpt-4o", "openai", "OPENAI_API_KEY"),  # provider: WebAgent's default
        ({"provider": "anthropic"}, "o3", "anthropic", "ANTHROPIC_API_KEY"),  # model: WebAgent's default
        ({"model": "anthropic:claude-sonnet-4-5"}, "claude-sonnet-4-5", "anthropic", "ANTHROPIC_API_KEY"),
    ],
)
async def test_the_half_not_sent_takes_webagents_default(
    gateways: GatewayLauncher,
    monkeypatch: pytest.MonkeyPatch,
    sent: dict[str, str],
    model: str,
    provider: str,
    key: str,
) -> None:
    monkeypatch.delenv(key, raising=False)
    gw = await family_c(gateways)
    response = await gw.http.post("/api/runs", json={"prompt": "hello", **sent})
    assert response.status_code == 200, response.text  # no key here: the run fails, clearly
    body = response.json()
    assert (body["status"], body["is_successful"]) == ("failure", False)
    assert key in body["history"][-1]["actions"][-1]["error"]
    run = (await gw.http.get(f"/api/runs/{body['task_run_id']}")).json()
    assert (run["model"], run["provider"]) == (model, provider)


# ---- json_schema ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "schema",
    [
        Atlas.model_json_schema(),  # $defs + $ref, as pydantic writes nested models
        {
            "definitions": {"n": {"type": "integer"}},
            "type": "object",
            "properties": {"n": {"$ref": "#/definitions/n"}},
        },
        TREE,  # recursive
        {"type": "array", "items": {"type": "string"}},
        {"type": "string"},
        {"$schema": "http://json-schema.org/draft-07/schema#", "type": "array", "maxItems": 3},
        True,
    ],
    ids=["pydantic", "definitions", "recursive", "array", "string", "dialect", "true"],
)
async def test_every_draft7_schema_is_accepted(gateways: GatewayLauncher, schema: Any) -> None:
    gw = await family_c(gateways)
    sent = json.dumps(schema) if isinstance(schema, bool) else schema  # `true` as JSON text
    response = await gw.http.post("/api/runs", json={"prompt": "an answer", "json_schema": sent})
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == AGENT_RESPONSE_KEYS and body["status"] == "success", body
    Draft7Validator(schema).validate(body["result"])  # the client's shape, unwrapped
    assert json.loads(body["history"][-1]["actions"][-1]["extracted_content"]) == body["result"]
    run = await poll(gw, body["task_run_id"], lambda r: r["is_done"])
    assert json.loads(run["json_schema"]) == schema  # shown as the client wrote it
    assert json.loads(run["result"]) == body["result"]
    await conforms(gw, "TaskRun", run)


@pytest.mark.parametrize(
    ("schema", "words"),
    [
        ({"$ref": "https://example.com/schema.json"}, "only references within the schema"),
        ({"$ref": "#/$defs/missing"}, "points at nothing"),
        ({"type": 5}, "Invalid JSON Schema"),
    ],
)
async def test_unusable_schemas_are_422(gateways: GatewayLauncher, schema: Any, words: str) -> None:
    gw = await family_c(gateways)
    response = await gw.http.post("/api/runs", json={"prompt": "an answer", "json_schema": schema})
    assert response.status_code == 422, response.text
    [item] = response.json()["detail"]
    assert item["type"] == "value_error" and item["loc"] == ["body", "json_schema"] and words in item["msg"]


# ---- tasks ----------------------------------------------------------------------------------


async def test_tasks_list_get_and_run_again(gateways: GatewayLauncher) -> None:
    gw = await family_c(gateways)
    first = (await gw.http.post("/api/runs", json={"prompt": "hello there"})).json()
    second = (
        await gw.http.post("/api/runs", json={"prompt": "a city", "json_schema": {"type": "string"}})
    ).json()
    tasks = (await gw.http.get("/api/tasks")).json()["tasks"]
    assert [t["id"] for t in tasks] == [second["task_id"], first["task_id"]]
    task = (await gw.http.get(f"/api/tasks/{first['task_id']}")).json()
    assert task == plain_task(first["task_id"], "hello there")
    await conforms(gw, "Task", task)

    again = await gw.http.post(f"/api/tasks/{first['task_id']}/runs", json={"prompt": "other words"})
    assert again.status_code == 200, again.text
    rerun = again.json()
    assert rerun["task_id"] == first["task_id"] and rerun["task_run_id"] > second["task_run_id"]
    assert rerun["result"] == "other words"
    shown = (await gw.http.get(f"/api/runs/{rerun['task_run_id']}")).json()
    assert (shown["task_id"], shown["prompt"]) == (first["task_id"], "other words")
    later = (
        await gw.http.post(f"/api/tasks/{second['task_id']}/runs", json={"wait_for_completion": False})
    ).json()
    assert later == {"task_id": second["task_id"], "task_run_id": later["task_run_id"]}
    done = await poll(gw, later["task_run_id"], lambda r: r["is_done"])
    assert (done["prompt"], json.loads(done["json_schema"])) == (
        "a city",
        {"type": "string"},
    )  # the task's own

    runs = (await gw.http.get(f"/api/tasks/{first['task_id']}/runs")).json()
    assert runs == [
        {"id": rerun["task_run_id"], "description": "other words", "is_done": True, "is_successful": True},
        {"id": first["task_run_id"], "description": "hello there", "is_done": True, "is_successful": True},
    ]
    await conforms(gw, "LightTaskRuns", runs)
    assert len((await gw.http.get("/api/tasks")).json()["tasks"]) == 2  # runs of a task are no tasks


async def test_task_errors(gateways: GatewayLauncher) -> None:
    gw = await family_c(gateways)
    first = (await gw.http.post("/api/runs", json={"prompt": "hello there"})).json()
    rerun = (await gw.http.post(f"/api/tasks/{first['task_id']}/runs", json={})).json()
    for path in (f"/api/tasks/{rerun['task_run_id']}", "/api/tasks/99", "/api/tasks/99/runs"):
        missing = await gw.http.get(path)
        assert missing.status_code == 404 and missing.json()["detail"].startswith("Task with ID ")
    bad = await gw.http.get("/api/tasks/first")
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["path", "task_id"]
    short = await gw.http.post(f"/api/tasks/{first['task_id']}/runs", json={"prompt": "ab"})
    assert short.status_code == 422 and short.json()["detail"][0]["type"] == "string_too_short"
    cached = await gw.http.post(f"/api/tasks/{first['task_id']}/runs", json={"use_cached_workflow": True})
    assert cached.status_code == 400 and "no cached workflow" in cached.json()["detail"]
