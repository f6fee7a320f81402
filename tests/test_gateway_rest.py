"""The canonical REST surface over a real server: the routes are exactly the proto's google.api.http
annotations, each route works, and every kind of bad request is a JSON 4xx."""

from __future__ import annotations

from typing import Any

import pytest
from agentrun.v1 import run_service_pb2
from google.api import annotations_pb2

from tests import gateway_harness
from tests.gateway_harness import Gateway, GatewayLauncher

gateways = gateway_harness.gateways
database_url = gateway_harness.database_url
gw = gateway_harness.gw
OPS_ROUTES = {
    ("GET", "/health"),
    ("GET", "/ready"),
    ("GET", "/openapi.json"),
    ("GET", "/docs"),
    ("GET", "/docs/assets/{name}"),
    ("GET", "/console"),
    ("GET", "/console/{name}"),
    ("GET", "/metrics"),
}


def annotated_routes() -> set[tuple[str, str]]:
    """(method, path template) of every binding, read straight from the descriptor."""
    routes = set()
    for method in run_service_pb2.DESCRIPTOR.services_by_name["RunService"].methods:
        rule = method.GetOptions().Extensions[annotations_pb2.http]
        for each in [rule, *rule.additional_bindings]:
            verb = each.WhichOneof("pattern")
            assert verb is not None and verb != "custom"
            routes.add((verb.upper(), getattr(each, verb)))
    return routes


def served_path(template: str) -> str:
    """The path a template is served under: a dotted variable is named by its field's own name
    (`{run.agent_id}` -> `{agent_id}`; an id by its message's: `{run.id}` -> `{run_id}`), which
    OpenAPI tools can read."""
    from gateway.transcode import doc_path, to_route_path

    return doc_path(to_route_path(template)[0])


def error_of(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = response.json()["error"]
    assert body["code"] == status
    return body


def violations(error: dict[str, Any]) -> dict[str, str]:
    found: dict[str, str] = {}
    for detail in error["details"]:
        if detail["@type"].endswith("google.rpc.BadRequest"):
            found |= {v["field"]: v["description"] for v in detail["fieldViolations"]}
    return found


def reason(error: dict[str, Any]) -> str:
    infos = [d for d in error["details"] if d["@type"].endswith("google.rpc.ErrorInfo")]
    assert len(infos) == 1 and infos[0]["domain"] == "agentrun"
    value: str = infos[0]["reason"]
    return value


async def test_the_routes_are_exactly_the_annotated_ones(gw: Gateway) -> None:
    served = []
    for route in gw.running.app.router.routes():
        canonical = route.resource.canonical if route.resource is not None else ""
        served.append((route.method, canonical))
    assert len(served) == len(set(served))  # nothing registered twice (and no HEAD twins)
    assert set(served) - OPS_ROUTES == {(verb, served_path(path)) for verb, path in annotated_routes()}
    tricky = {
        ("POST", "/v1/agents/{agent_id}/runs:stream"),  # nested field (run.agent_id), custom verb
        ("GET", "/v1/runs/{run_id}:stream"),  # an additional binding
        ("GET", "/v1/runs:batchGet"),  # a verb on a collection, beside GET /v1/runs/{run_id}
        ("PATCH", "/v1/runs/{run_id}"),  # run.id: the same segment GET and DELETE name run_id
    }
    assert tricky <= set(served)


async def test_sync_and_background_runs(gw: Gateway) -> None:
    sync = await gw.run("echo", "hello gateway world", wait=True, sessionId="s-1")
    assert sync["state"] == "RUN_STATE_COMPLETED" and sync["output"] == "hello gateway world"
    assert sync["agentId"] == "echo" and sync["sessionId"] == "s-1"
    assert int(sync["number"]) >= 1 and int(sync["lastSeq"]) == 6  # ProtoJSON int64: strings
    # proto field names are accepted as well as lowerCamelCase
    background = await gw.run("slow", "tokens=3 delay_ms=10", wait=False, session_id="s-2")
    assert background["state"] == "RUN_STATE_QUEUED" and background["sessionId"] == "s-2"
    done = await gw.wait_until(background["id"], {"RUN_STATE_COMPLETED"})
    assert done["output"] == "t0 t1 t2 "


async def test_get_run_by_id_and_by_number(gw: Gateway) -> None:
    run = await gw.run("echo", "find me", wait=True)
    assert (await gw.get(run["id"]))["output"] == "find me"
    assert (await gw.get(run["number"]))["id"] == run["id"]
    error = error_of(await gw.http.get("/v1/runs/no-such-run"), 404)
    assert error["status"] == "NOT_FOUND"


async def test_batch_get_keeps_order_and_lists_missing_ids(gw: Gateway) -> None:
    runs = [await gw.run("echo", f"m{i}", wait=True) for i in range(3)]
    ids = [runs[2]["id"], "nope", runs[0]["id"], runs[1]["number"]]
    response = await gw.http.get("/v1/runs:batchGet", params={"run_ids": ids})
    assert response.status_code == 200, response.text
    body = response.json()
    assert [r["id"] for r in body["runs"]] == [runs[2]["id"], runs[0]["id"], runs[1]["id"]]
    assert body["missingRunIds"] == ["nope"]
    too_many = {"runIds": [f"id{i}" for i in range(101)]}  # the JSON name works in the query too
    error = error_of(await gw.http.get("/v1/runs:batchGet", params=too_many), 400)
    assert list(violations(error)) == ["run_ids"]


async def test_list_runs_filters_and_pages(gw: Gateway) -> None:
    for i in range(5):
        await gw.run("echo", f"m{i}", wait=True, sessionId="odd" if i % 2 else "even")
    await gw.run("tools", "what is 2 + 2", wait=True, sessionId="even")
    first = (await gw.http.get("/v1/runs", params={"session_id": "even", "page_size": "2"})).json()
    assert len(first["runs"]) == 2 and first["totalSize"] == "4" and first["nextPageToken"]
    rest = await gw.http.get(
        "/v1/runs", params={"sessionId": "even", "pageSize": "10", "pageToken": first["nextPageToken"]}
    )
    numbers = [int(r["number"]) for r in first["runs"] + rest.json()["runs"]]
    assert len(numbers) == 4 and numbers == sorted(numbers, reverse=True)
    tools = (await gw.http.get("/v1/runs", params={"agent_id": "tools"})).json()
    assert [r["agentId"] for r in tools["runs"]] == ["tools"]
    states = ["RUN_STATE_FAILED", "RUN_STATE_CANCELLED"]
    assert (await gw.http.get("/v1/runs", params={"states": states})).json().get("runs", []) == []
    states.append("RUN_STATE_COMPLETED")
    assert len((await gw.http.get("/v1/runs", params={"states": states})).json()["runs"]) == 6
    later = (await gw.http.get("/v1/runs", params={"create_time_after": "2999-01-01T00:00:00Z"})).json()
    assert later == {}  # ProtoJSON leaves out zero values: no runs, totalSize 0


async def test_continue_approves_a_paused_run(gw: Gateway) -> None:
    paused = await gw.run("approval", "send the report", wait=True)
    assert paused["state"] == "RUN_STATE_PAUSED"
    action = paused["pendingAction"]
    assert action["toolName"] == "send_email"
    response = await gw.http.post(
        f"/v1/runs/{paused['id']}:continue",
        json={"decision": "DECISION_APPROVE", "toolCallId": action["toolCallId"], "wait": True},
    )
    assert response.status_code == 200, response.text
    run = response.json()["run"]
    assert run["state"] == "RUN_STATE_COMPLETED"
    assert (
        run["toolCalls"][0]["name"] == "send_email" and run["decisions"][0]["decision"] == "DECISION_APPROVE"
    )
    again = await gw.http.post(f"/v1/runs/{paused['id']}:continue", json={"decision": "DECISION_REJECT"})
    assert error_of(again, 400)["status"] == "FAILED_PRECONDITION"


async def test_cancel_a_running_slow_run(gw: Gateway) -> None:
    run = await gw.run("slow", "tokens=200 delay_ms=20")
    await gw.wait_until(run["id"], {"RUN_STATE_RUNNING"})
    response = await gw.http.post(f"/v1/runs/{run['id']}:cancel", json={"reason": "enough"})
    assert response.status_code == 200, response.text
    await gw.wait_until(run["id"], {"RUN_STATE_CANCELLED"})
    assert (await gw.get(run["id"]))["error"]["message"] == "enough"


async def test_delete_a_finished_run(gw: Gateway) -> None:
    run = await gw.run("echo", "bye", wait=True)
    response = await gw.http.delete(f"/v1/runs/{run['id']}")
    assert response.status_code == 200 and response.json() == {}
    error_of(await gw.http.get(f"/v1/runs/{run['id']}"), 404)
    running = await gw.run("slow", "tokens=100 delay_ms=20")
    assert error_of(await gw.http.delete(f"/v1/runs/{running['id']}"), 400)["status"] == "FAILED_PRECONDITION"


async def test_patch_a_runs_metadata(gw: Gateway) -> None:
    run = await gw.run("echo", "keep me", wait=True, metadata={"a": 1})
    url = f"/v1/runs/{run['id']}"
    response = await gw.http.patch(url, params={"updateMask": "metadata"}, json={"metadata": {"b": [2]}})
    assert response.status_code == 200, response.text
    updated = response.json()["run"]
    assert (updated["metadata"], updated["output"], updated["state"]) == ({"b": [2]}, "keep me", run["state"])
    assert (await gw.get(run["number"]))["metadata"] == {"b": [2]}
    # No mask: the fields the body sets; `update_mask` in proto's spelling too; by number.
    implied = await gw.http.patch(f"/v1/runs/{run['number']}", json={"metadata": {"c": True}})
    assert implied.json()["run"]["metadata"] == {"c": True}
    error = error_of(await gw.http.patch(url, params={"updateMask": "agentId"}, json={"agentId": "x"}), 400)
    assert "agent_id" in violations(error)["update_mask"]
    error = error_of(await gw.http.patch(url, json={"state": "RUN_STATE_FAILED"}), 400)
    assert list(violations(error)) == ["run.state"]
    error = error_of(await gw.http.patch(url, json={"id": "other", "metadata": {}}), 400)
    assert "URL path" in violations(error)["run.id"]
    error_of(await gw.http.patch("/v1/runs/no-such-run", json={"metadata": {}}), 404)
    assert (await gw.get(run["id"]))["metadata"] == {"c": True}  # none of the refusals changed it
    masked = await gw.http.patch(url, params={"update_mask": "metadata"}, json={})
    assert "metadata" not in masked.json()["run"]  # the mask names it, the body clears it


async def test_list_run_events_pages(gw: Gateway) -> None:
    run = await gw.run("slow", "tokens=6 delay_ms=0", wait=True)
    first = (await gw.http.get(f"/v1/runs/{run['id']}/events", params={"page_size": 3})).json()
    assert [e["seq"] for e in first["events"]] == ["1", "2", "3"]
    rest = await gw.http.get(f"/v1/runs/{run['number']}/events", params={"pageToken": first["nextPageToken"]})
    seqs = [int(e["seq"]) for e in first["events"] + rest.json()["events"]]
    assert seqs == list(range(1, int(run["lastSeq"]) + 1))
    after = (await gw.http.get(f"/v1/runs/{run['id']}/events", params={"after_seq": 7})).json()
    assert [e["seq"] for e in after["events"]] == [str(s) for s in seqs[7:]]
    assert after["events"][-1]["type"] == "EVENT_TYPE_STOP"


async def test_agents(gw: Gateway) -> None:
    agents = (await gw.http.get("/v1/agents")).json()["agents"]
    assert {"echo", "tools", "approval", "slow"} <= {a["id"] for a in agents}
    paged = (await gw.http.get("/v1/agents", params={"page_size": 1})).json()
    assert len(paged["agents"]) == 1 and paged["nextPageToken"]
    approval = (await gw.http.get("/v1/agents/approval")).json()["agent"]
    assert approval["approvalTools"] == ["send_email"]
    error = error_of(await gw.http.get("/v1/agents/nobody"), 404)
    assert error["status"] == "NOT_FOUND"


# ---- errors -----------------------------------------------------------------------------------


async def test_unknown_agent_is_404_with_error_info(gw: Gateway) -> None:
    response = await gw.http.post("/v1/agents/nobody/runs", json={"input": {"message": "hi"}})
    error = error_of(response, 404)
    assert error["status"] == "NOT_FOUND" and "nobody" in error["message"]
    assert reason(error) == "AGENT_NOT_FOUND"


async def test_bad_fields_are_400_with_every_violation(gw: Gateway) -> None:
    response = await gw.http.post("/v1/agents/echo/runs", json={"input": {"message": "  "}, "timeout": "-1s"})
    error = error_of(response, 400)
    assert error["status"] == "INVALID_ARGUMENT"
    assert set(violations(error)) == {"input.message", "timeout"}  # the server's BadRequest, passed on


async def test_malformed_json_is_400(gw: Gateway) -> None:
    response = await gw.http.post(
        "/v1/agents/echo/runs",
        content=b'{"input": {"message": "hi"',
        headers={"content-type": "application/json"},
    )
    error = error_of(response, 400)
    assert reason(error) == "MALFORMED_JSON" and "line 1" in error["message"]
    error = error_of(await gw.http.post("/v1/agents/echo/runs", content=b"[1, 2]"), 400)
    assert "JSON object" in error["message"]
    error_of(await gw.http.post("/v1/agents/echo/runs", content=b'{"wait": NaN}'), 400)


@pytest.mark.parametrize(
    ("body", "field", "description"),
    [
        ({"wait": "yes"}, "wait", "true or false"),
        ({"input": {"message": 5}}, "input.message", "a string"),
        (
            {"input": {"message": "x", "responseFormat": "YAML"}},
            "input.response_format",
            "RESPONSE_FORMAT_JSON",
        ),
        ({"input": {"message": "x", "options": {"maxTokens": 1.5}}}, "input.options.max_tokens", "integer"),
        (
            {"input": {"message": "x", "media": [{"type": "a", "data": []}]}},
            "input.media[0].data",
            "a string",
        ),
        ({"timeout": "soon"}, "timeout", "duration"),
        ({"input": "hello"}, "input", "JSON object"),
        ({"input": {"message": "x"}, "metadata": [1]}, "metadata", "JSON object"),
    ],
)
async def test_wrong_types_are_400_naming_the_field(
    gw: Gateway, body: Any, field: str, description: str
) -> None:
    error = error_of(await gw.http.post("/v1/agents/echo/runs", json=body), 400)
    found = violations(error)
    assert list(found) == [field] and description in found[field], found


async def test_unknown_and_doubled_fields_are_400(gw: Gateway) -> None:
    body = {"input": {"mesage": "hi"}, "colour": 1, "agentId": "tools", "sessionId": "a", "session_id": "b"}
    error = error_of(await gw.http.post("/v1/agents/echo/runs", json=body), 400)
    found = violations(error)
    assert found["input.mesage"] == "unknown field" and found["colour"] == "unknown field"
    assert "URL path" in found["agent_id"] and "given twice" in found["session_id"]
    assert (await gw.http.get("/v1/runs")).json().get("runs", []) == []  # nothing was submitted


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("page_size=abc", "page_size"),
        ("page_size=1&page_size=2", "page_size"),
        ("states=RUN_STATE_COMPLETED&states=RUN_STATE_NOPE", "states[1]"),
        ("colour=red", "colour"),
        ("create_time_after=yesterday", "create_time_after"),
        ("page_token=garbage!", "page_token"),  # rejected by the server
    ],
)
async def test_bad_query_parameters_are_400(gw: Gateway, query: str, field: str) -> None:
    error = error_of(await gw.http.get(f"/v1/runs?{query}"), 400)
    assert list(violations(error)) == [field]


async def test_a_query_cannot_override_the_path_or_a_body_method(gw: Gateway) -> None:
    run = await gw.run("echo", "x", wait=True)
    error = error_of(await gw.http.get(f"/v1/runs/{run['id']}?run_id=other"), 400)
    assert violations(error) == {"run_id": "is set by the URL path"}
    error = error_of(
        await gw.http.post("/v1/agents/echo/runs?wait=true", json={"input": {"message": "x"}}), 400
    )
    assert "JSON body" in violations(error)["wait"]


async def test_bools_and_enums_in_the_query(gw: Gateway) -> None:
    await gw.run("echo", "x", wait=True)
    response = await gw.http.get("/v1/runs", params={"states": "4"})  # enum by number as well as name
    assert len(response.json()["runs"]) == 1
    error = error_of(await gw.http.get("/v1/runs:batchGet?run_ids="), 400)  # empty id: the server says no
    assert list(violations(error)) == ["run_ids"]


async def test_unknown_routes_and_methods_are_json(gw: Gateway) -> None:
    error = error_of(await gw.http.get("/v1/nothing/here"), 404)
    assert error["status"] == "NOT_FOUND"
    error_of(await gw.http.get("/v1/runs/x:explode"), 404)
    response = await gw.http.put("/v1/runs")
    error = error_of(response, 405)
    assert response.headers["allow"] == "GET"


async def test_oversized_body_is_413_json(gateways: GatewayLauncher) -> None:
    small = await gateways(max_body_bytes=2048)
    response = await small.http.post("/v1/agents/echo/runs", json={"input": {"message": "x" * 4096}})
    error = error_of(response, 413)
    assert reason(error) == "BODY_TOO_LARGE" and "2048" in error["message"]
    assert (await small.run("echo", "x" * 1000, wait=True))["state"] == "RUN_STATE_COMPLETED"


async def test_forwarded_headers_do_not_break_calls(gw: Gateway) -> None:
    headers = [(b"Authorization", b"Bearer abc"), (b"X-Request-ID", b"r-1"), (b"X-Api-Key", "café".encode())]
    response = await gw.http.get("/v1/agents", headers=headers)  # non-ASCII values are not forwarded
    assert response.status_code == 200, response.text


def test_route_paths_keep_verbs_literal() -> None:
    from gateway.transcode import to_route_path

    path, variables = to_route_path("/v1/agents/{run.agent_id}/runs:stream")
    assert path == "/v1/agents/{agent_id:[^/:]+}/runs:stream"
    assert variables == [("agent_id", "run.agent_id")]
    assert to_route_path("/v1/{a.id}/{b.id}")[1] == [("a_id", "a.id"), ("b_id", "b.id")]
    assert to_route_path("/v1/x/{name=**}")[0] == "/v1/x/{name:[^:]+}"
    with pytest.raises(ValueError, match="unsupported"):
        to_route_path("/v1/{name=projects/*}")
