"""Family C's PUT /api/tasks/{task_id} (API_FAMILIES.md §C.1, a partial update of a Task) against the
real gateway and server: what a PUT changes is what GET /api/tasks/{id} then shows and what
POST /api/tasks/{id}/runs then runs (its own overrides still on top), the task's first run is left
as it ran, and bad requests are WebAgent's 404s and FastAPI's 422s."""

from __future__ import annotations

import json
from typing import Any

from openapi_spec_validator import validate

from tests import gateway_harness
from tests.gateway_harness import Gateway, GatewayLauncher
from tests.test_family_c import conforms, family_c
from tests.test_family_c_tasks import plain_task

gateways = gateway_harness.gateways
database_url = gateway_harness.database_url


async def new_task(gw: Gateway, prompt: str = "hello there") -> int:
    response = await gw.http.post("/api/runs", json={"prompt": prompt})
    assert response.status_code == 200, response.text
    task_id: int = response.json()["task_id"]
    return task_id


async def put(gw: Gateway, task_id: int, body: Any, status: int = 200) -> Any:
    response = await gw.http.put(f"/api/tasks/{task_id}", json=body)
    assert response.status_code == status, response.text
    return response.json()


async def run_task(gw: Gateway, task_id: int, body: dict[str, Any]) -> dict[str, Any]:
    response = await gw.http.post(f"/api/tasks/{task_id}/runs", json=body)
    assert response.status_code == 200, response.text
    ran: dict[str, Any] = (await gw.http.get(f"/api/runs/{response.json()['task_run_id']}")).json()
    return ran


async def test_an_updated_task_is_shown_and_run_as_updated(gateways: GatewayLauncher) -> None:
    gw = await family_c(gateways)
    task_id = await new_task(gw)
    task = await put(gw, task_id, {"prompt": "updated words"})
    assert task == plain_task(task_id, "updated words")
    await conforms(gw, "Task", task)
    assert (await gw.http.get(f"/api/tasks/{task_id}")).json() == task
    assert (await gw.http.get("/api/tasks")).json()["tasks"] == [task]
    ran = await run_task(gw, task_id, {})
    assert (ran["task_id"], ran["prompt"], ran["result"]) == (task_id, "updated words", "updated words")
    overridden = await run_task(gw, task_id, {"prompt": "just this once"})
    assert overridden["result"] == "just this once"
    first = (await gw.http.get(f"/api/runs/{task_id}")).json()
    assert (first["prompt"], first["result"]) == ("hello there", "hello there")  # as it ran

    # Partial: a second update keeps the first one's fields.
    schema = {"type": "object", "properties": {"city": {"type": "string"}}}
    task = await put(gw, task_id, {"json_schema": json.dumps(schema), "webhook_url": None})
    assert (task["prompt"], task["response_format"], json.loads(task["json_schema"])) == (
        "updated words",
        "json",
        schema,
    )
    ran = await run_task(gw, task_id, {"wait_for_completion": True})
    assert (ran["prompt"], json.loads(ran["json_schema"]), ran["response_format"]) == (
        "updated words",
        schema,
        "json",
    )
    # "" clears a webhook URL or a schema, as WebAgent's editor sends them.
    task = await put(gw, task_id, {"json_schema": "", "webhook_url": ""})
    assert (task["json_schema"], task["response_format"], task["webhook_url"]) == (None, "text", None)
    runs = (await gw.http.get(f"/api/tasks/{task_id}/runs")).json()
    assert [r["description"] for r in runs] == [
        "updated words",
        "just this once",
        "updated words",
        "hello there",
    ]


async def test_model_and_provider_change_as_a_pair(gateways: GatewayLauncher) -> None:
    gw = await family_c(gateways)
    task_id = await new_task(gw)
    task = await put(gw, task_id, {"provider": "anthropic"})  # the model shown stays
    assert (task["model"], task["provider"]) == ("demo", "anthropic")
    task = await put(gw, task_id, {"model": "claude-sonnet-4-5"})
    assert (task["model"], task["provider"]) == ("claude-sonnet-4-5", "anthropic")
    # What GET shows, sent back as WebAgent's editor does (with the ignored fields), changes nothing.
    editor = {**task, "webhook_url": "", "json_schema": "", "use_cached_workflow": True, "id": 7}
    assert await put(gw, task_id, editor) == task
    assert await put(gw, task_id, {}) == task
    assert (await gw.http.get(f"/api/tasks/{task_id}")).json() == task


async def test_update_errors_are_webagents(gateways: GatewayLauncher) -> None:
    gw = await family_c(gateways)
    task_id = await new_task(gw)
    rerun = await run_task(gw, task_id, {})
    for missing in (rerun["id"], 99_999, 2**40):
        body = await put(gw, missing, {"prompt": "new words"}, 404)
        assert body == {"detail": f"Task with ID {missing} not found"}
    bad_path = await gw.http.put("/api/tasks/first", json={"prompt": "new words"})
    assert bad_path.status_code == 422 and bad_path.json()["detail"][0]["loc"] == ["path", "task_id"]
    for body, kind, field in (
        ({"prompt": "ab"}, "string_too_short", "prompt"),
        ({"provider": "nope"}, "enum", "provider"),
        ({"json_schema": "{"}, "value_error", "json_schema"),
        ({"json_schema": {"type": 5}}, "value_error", "json_schema"),
    ):
        [item] = (await put(gw, task_id, body, 422))["detail"]
        assert (item["type"], item["loc"]) == (kind, ["body", field]), item
    malformed = await gw.http.put(f"/api/tasks/{task_id}", content=b'{"prompt": ')
    assert malformed.status_code == 422 and malformed.json()["detail"][0]["type"] == "json_invalid"
    [item] = (await put(gw, task_id, {"prompt": "x" * 70_000}, 422))["detail"]  # over metadata's 64 KiB
    assert (item["type"], item["loc"]) == ("value_error", ["body"]) and "65536 bytes" in item["msg"]
    assert (await gw.http.get(f"/api/tasks/{task_id}")).json()["prompt"] == "hello there"  # unchanged


async def test_the_update_route_is_documented(gateways: GatewayLauncher) -> None:
    gw = await family_c(gateways)
    doc = (await gw.http.get("/openapi.json")).json()
    validate(doc)
    operation = doc["paths"]["/api/tasks/{task_id}"]["put"]
    assert set(operation["responses"]) == {"200", "404", "422", "default"}
    assert operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "webagent.Task"
    )
    body = doc["components"]["schemas"]["webagent.TaskUpdateRequest"]
    assert set(body["properties"]) >= {"prompt", "model", "provider", "webhook_url", "json_schema"}
    assert "required" not in body
