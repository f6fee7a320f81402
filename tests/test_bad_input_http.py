"""Bad input over HTTP gets a clear 4xx in the route's own shape, never a 500, and /openapi.json says
what is accepted: one regression test per fuzzing finding (deep JSON, resume points out of range,
lone surrogates, family C validating before authenticating, the document looser than the server,
SSE typed as a string, Allow headers naming unserved methods, dotted path parameters), through
the real gateway in front of a real server."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from httpx import Response
from httpx_sse import aconnect_sse
from jsonschema import Draft202012Validator

from gateway import codec
from gateway.families import all_families
from tests import gateway_harness
from tests.conftest import Launcher
from tests.gateway_harness import Gateway, GatewayLauncher
from tests.test_auth import Tenants, tenants  # noqa: F401 - the fixture

gateways = gateway_harness.gateways
database_url = gateway_harness.database_url

TOO_DEEP = "arrays and objects nested deeper than 64 levels"
MAX_SEQ = 2**31 - 1
PROBLEM = "application/problem+json"
ERROR_INFO = "type.googleapis.com/google.rpc.ErrorInfo"
BAD_REQUEST = "type.googleapis.com/google.rpc.BadRequest"
# Every route that reads a JSON body, with values for its path and the family it belongs to.
JSON_BODY_ROUTES = [
    ("/v1/agents/echo/runs", "canonical"),
    ("/v1/agents/echo/runs:stream", "canonical"),
    ("/v1/runs/r-1:continue", "canonical"),
    ("/v1/runs/r-1:cancel", "canonical"),
    ("/v1/runs/r-1/webhookDeliveries/d-1:retry", "canonical"),
    ("/api/agents/echo/runs", "A"),
    ("/api/agents/echo/runs/stream", "A"),
    ("/api/agents/echo/runs/background", "A"),
    ("/api/agents/echo/runs/r-1/continue", "A"),
    ("/api/v1/runs", "B"),
    ("/api/runs", "C"),
]


@pytest.fixture
async def gw(gateways: GatewayLauncher) -> Gateway:
    return await gateways(families=all_families())


def canonical_error(
    message: str, reason: str, violations: list[tuple[str, str]] | None = None
) -> dict[str, Any]:
    details: list[dict[str, Any]] = [{"@type": ERROR_INFO, "reason": reason, "domain": "agentrun"}]
    if violations:
        items = [{"field": field, "description": text} for field, text in violations]
        details.append({"@type": BAD_REQUEST, "fieldViolations": items})
    return {"error": {"code": 400, "status": "INVALID_ARGUMENT", "message": message, "details": details}}


def json_invalid(position: int, problem: str) -> dict[str, Any]:
    """FastAPI's 422 for a body that is not JSON (families B and C)."""
    item = {"type": "json_invalid", "loc": ["body", position], "msg": "JSON decode error", "input": {}}
    return {"detail": [{**item, "ctx": {"error": problem}}]}


def assert_malformed(response: Response, family: str, path: str, problem: str, position: int) -> None:
    """The answer to a body that is not JSON the gateway reads, in the family's shape."""
    if family == "canonical":
        assert response.status_code == 400, response.text
        where = f" at line 1 column {position + 1}" if position else ""
        assert response.json() == canonical_error(f"malformed JSON: {problem}{where}", "MALFORMED_JSON")
    elif family == "A":
        assert response.status_code == 400, response.text
        assert response.headers["content-type"].startswith(PROBLEM)
        where = f" at line 1 column {position + 1}" if position else ""
        assert response.json() == {
            "type": "urn:problem-type:malformed-request-body",
            "title": "Malformed Request Body",
            "status": 400,
            "detail": f"malformed JSON: {problem}{where}",
            "instance": path,
        }
    else:
        assert response.status_code == 422, response.text
        assert response.json() == json_invalid(position, problem)


def post(gw: Gateway, path: str, content: bytes | str, **headers: str) -> Any:
    return gw.http.post(path, content=content, headers={"Content-Type": "application/json", **headers})


# ---- deep JSON ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("path", "family"), JSON_BODY_ROUTES)
async def test_deeply_nested_json_is_refused_in_the_route_shape(gw: Gateway, path: str, family: str) -> None:
    # About 2 KB nested 1,000 deep: json.loads itself ran out of recursion here (500 before).
    response = await post(gw, path, '{"a":' * 1000 + "1" + "}" * 1000)
    assert_malformed(response, family, path, TOO_DEEP, 0)


async def test_depth_is_bounded_at_64_levels(gw: Gateway) -> None:
    assert codec.loads(b"[" * 64 + b"]" * 64) is not None
    with pytest.raises(codec.BadJson, match=TOO_DEEP):
        codec.loads(b"[" * 65 + b"]" * 65)
    deep = {"input": {"message": "hi"}, "metadata": {"x": json.loads("[" * 65 + "]" * 65)}}
    response = await post(gw, "/v1/agents/echo/runs", json.dumps(deep))
    assert_malformed(response, "canonical", "", TOO_DEEP, 0)


@pytest.mark.parametrize(("path", "family"), [("/v1/agents/echo/runs", "canonical"), ("/api/runs", "C")])
async def test_numbers_no_double_holds_are_refused(gw: Gateway, path: str, family: str) -> None:
    # A Struct (metadata, json_schema) turned 10**400 into a float: OverflowError, a 500 before.
    big = "1" + "0" * 400
    body = (
        f'{{"input": {{"message": "hi"}}, "metadata": {{"n": {big}}}}}'
        if family == "canonical"
        else f'{{"prompt": "hello", "json_schema": {{"type": "object", "maximum": {big}}}}}'
    )
    response = await post(gw, path, body)
    assert_malformed(response, family, path, f"number {big[:40]}... is out of range", 0)
    float_body = '{"input": {"message": "hi"}, "metadata": {"n": 1e400}}'
    response = await post(gw, "/v1/agents/echo/runs", float_body)
    assert_malformed(response, "canonical", "", "number 1e400 is out of range", 0)


# ---- resume points ----------------------------------------------------------------------------

RESUME_POINTS = ["9223372036854775808", str(MAX_SEQ + 1), "-1", "soon", "\u00b2"]


@pytest.mark.parametrize("value", RESUME_POINTS)
@pytest.mark.parametrize(("where", "name"), [("header", "Last-Event-ID"), ("query", "lastEventId")])
async def test_canonical_resume_points_out_of_range_are_400(
    gw: Gateway, where: str, name: str, value: str
) -> None:
    run = await gw.run("echo", "hi", wait=True)
    response = await _resume(gw, f"/v1/runs/{run['id']}:stream", where, name, value)
    assert response.status_code == 400, response.text
    description = f"must be the id (seq) of a received event: 0 to {MAX_SEQ}"
    message = f"{name} must be an integer from 0 to {MAX_SEQ}"
    assert response.json() == canonical_error(message, "INVALID_ARGUMENT", [(name, description)])


@pytest.mark.parametrize("value", RESUME_POINTS)
@pytest.mark.parametrize(("where", "name"), [("header", "Last-Event-ID"), ("query", "lastEventId")])
async def test_family_b_resume_points_out_of_range_are_422(
    gw: Gateway, where: str, name: str, value: str
) -> None:
    job = (await gw.http.post("/api/v1/runs", json={"prompt": "hi"})).json()
    response = await _resume(gw, f"/api/v1/runs/{job['job_id']}/stream", where, name, value)
    assert response.status_code == 422, response.text
    loc = [where, name]
    if value in ("soon", "\u00b2"):
        msg = "Input should be a valid integer, unable to parse string as an integer"
        item: dict[str, Any] = {"type": "int_parsing", "loc": loc, "msg": msg, "input": value}
    elif value == "-1":
        msg = "Input should be greater than or equal to 0"
        item = {"type": "greater_than_equal", "loc": loc, "msg": msg, "input": value, "ctx": {"ge": 0}}
    else:
        msg = f"Input should be less than or equal to {MAX_SEQ}"
        item = {"type": "less_than_equal", "loc": loc, "msg": msg, "input": value, "ctx": {"le": MAX_SEQ}}
    assert response.json() == {"detail": [item]}


async def _resume(gw: Gateway, path: str, where: str, name: str, value: str) -> Response:
    if where == "header":
        return await gw.http.get(path, headers={name.encode(): value.encode()})
    return await gw.http.get(path, params={name: value})


# ---- lone surrogates --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "family", "body", "escape"),
    [
        ("/api/v1/runs", "B", r'{"prompt":"a\udfffb"}', r"\udfff"),  # the fuzzer's finding
        ("/api/v1/runs", "B", r'{"prompt":"hi","config":{"a\ud800":1}}', r"\ud800"),  # in a key
        ("/api/runs", "C", r'{"prompt":"abc\udfff"}', r"\udfff"),
        ("/api/agents/echo/runs", "A", r'{"message":"\udc00"}', r"\udc00"),
        ("/v1/agents/echo/runs", "canonical", r'{"input":{"message":"x\ud83d"}}', r"\ud83d"),  # half a pair
    ],
)
async def test_a_lone_surrogate_is_refused_in_the_family_shape(
    gw: Gateway, path: str, family: str, body: str, escape: str
) -> None:
    response = await post(gw, path, body)
    assert_malformed(response, family, path, f"lone surrogate {escape} in a string", body.index(escape))


async def test_surrogate_pairs_and_escaped_backslashes_are_text(gw: Gateway) -> None:
    pair = await post(gw, "/api/v1/runs", r'{"prompt":"a\ud83d\ude00b \\udfff"}')
    assert pair.status_code == 202, pair.text
    job = (await gw.http.get(f"/api/v1/runs/{pair.json()['job_id']}")).json()
    assert job["status"] in ("queued", "running", "succeeded")


async def test_surrogates_as_utf8_bytes_are_not_text(gw: Gateway) -> None:
    raw = b'{"prompt": "a\xed\xbf\xbfb"}'
    problem = "not UTF-8 text (invalid continuation byte at byte 13)"
    assert_malformed(await post(gw, "/api/v1/runs", raw), "B", "", problem, 0)
    c = await post(gw, "/api/runs", raw)
    assert (c.status_code, c.json()) == (400, {"detail": "There was an error parsing the body"})


async def test_an_idempotency_key_that_is_not_utf8_is_read_as_latin1(gw: Gateway) -> None:
    # aiohttp hands undecodable header bytes on as lone surrogates; protobuf took none (500 before).
    headers = {b"Content-Type": b"application/json", b"Idempotency-Key": b"k\xff\xfe"}
    first = await gw.http.post("/api/v1/runs", content=b'{"prompt": "hi"}', headers=headers)
    assert first.status_code == 202, first.text
    again = await gw.http.post("/api/v1/runs", content=b'{"prompt": "hi"}', headers=headers)
    assert again.status_code == 202 and again.json()["job_id"] == first.json()["job_id"]


async def test_a_family_c_run_number_of_thousands_of_digits_is_422(gw: Gateway) -> None:
    # int() refuses more than 4300 digits: a ValueError, a 500 before; FastAPI answers 422.
    number = "1" * 5000
    response = await gw.http.get(f"/api/runs/{number}")
    assert (response.status_code, response.json()["detail"][0]["type"]) == (
        422,
        "int_parsing_size",
    )


# ---- authentication first ---------------------------------------------------------------------


@pytest.fixture
async def guarded(launch: Launcher, gateways: GatewayLauncher, tenants: Tenants) -> Gateway:  # noqa: F811
    return await gateways(await launch(auth=tenants.settings), families=all_families())


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/runs", '{"prompt": "ab"}'),  # too short: 422 once authenticated
        ("/api/runs", '{"prompt": '),  # not JSON
        ("/api/runs", '{"a":' * 1000 + "1" + "}" * 1000),
        ("/api/v1/runs", '{"prompt": 5}'),
        ("/api/agents/echo/runs", '{"message": " "}'),
        ("/v1/agents/echo/runs", '{"input": {"message": "hi"}, "colour": "red"}'),
    ],
)
async def test_requests_without_credentials_are_401_before_their_body_is_judged(
    guarded: Gateway, path: str, body: str
) -> None:
    response = await post(guarded, path, body)
    assert response.status_code == 401, response.text
    assert response.headers["WWW-Authenticate"] == "Bearer"
    shape = response.json()
    if path == "/api/runs":
        assert set(shape) == {"detail"} and isinstance(shape["detail"], str)
    elif path == "/api/v1/runs":
        assert shape == {"error": "Unauthorized"}
    elif path.startswith("/api/agents"):
        assert response.headers["content-type"].startswith(PROBLEM)
        assert shape["status"] == 401 and shape["type"] == "urn:problem-type:unauthorized"
    else:
        assert shape["error"]["status"] == "UNAUTHENTICATED"


async def test_family_c_judges_the_body_of_an_authenticated_caller(
    guarded: Gateway,
    tenants: Tenants,  # noqa: F811
) -> None:
    headers = {"Authorization": f"Bearer {tenants.a_user}"}
    response = await guarded.http.post("/api/runs", json={"prompt": "ab"}, headers=headers)
    assert response.status_code == 422, response.text
    item = {
        "type": "string_too_short",
        "loc": ["body", "prompt"],
        "msg": "String should have at least 3 characters",
        "input": "ab",
        "ctx": {"min_length": 3},
    }
    assert response.json() == {"detail": [item]}
    reader = {"Authorization": f"Bearer {tenants.a_reader}"}
    refused = await guarded.http.post("/api/runs", json={"prompt": "ab"}, headers=reader)
    assert refused.status_code == 403 and set(refused.json()) == {"detail"}


# ---- /openapi.json says what is accepted ------------------------------------------------------


def test_the_documented_limits_are_the_servers() -> None:
    """gateway.rules documents what server/validation*.py enforce (the layers keep the gateway from
    importing the server): the numbers must agree."""
    from common import limits
    from gateway import rules
    from server import validation, validation_fields

    assert dict(rules.MAX_CHARS) == validation_fields.MAX_CHARS
    assert rules.DEFAULT_MAX_CHARS == validation_fields.DEFAULT_MAX_CHARS
    assert (rules.MAX_STRUCT_BYTES, rules.MAX_STRUCT_DEPTH) == (
        validation_fields.MAX_STRUCT_BYTES,
        validation_fields.MAX_STRUCT_DEPTH,
    )
    assert (rules.MAX_BATCH_IDS, rules.MAX_PAGE_SIZE, rules.MAX_MEDIA_ITEMS) == (
        validation.MAX_BATCH_IDS,
        validation.MAX_PAGE_SIZE,
        validation.MAX_MEDIA_ITEMS,
    )
    assert (rules.MAX_TIMEOUT_S, rules.MAX_SEQ, rules.MAX_SKIP) == (
        validation.MAX_TIMEOUT_S,
        validation.MAX_INTEGER,
        limits.MAX_SKIP,
    )


def validator(doc: dict[str, Any], schema: dict[str, Any]) -> Draft202012Validator:
    return Draft202012Validator({"allOf": [schema], "components": doc["components"]})


def body_schema(doc: dict[str, Any], path: str) -> dict[str, Any]:
    schema: dict[str, Any] = doc["paths"][path]["post"]["requestBody"]["content"]["application/json"][
        "schema"
    ]
    return schema


# (documented path, served path, body with the prompt as {m}, the accepted status)
PROMPTS = [
    ("/v1/agents/{agent_id}/runs", "/v1/agents/echo/runs", {"input": {"message": "{m}"}}, 200),
    (
        "/v1/agents/{agent_id}/runs:stream",
        "/v1/agents/echo/runs:stream",
        {"run": {"input": {"message": "{m}"}}},
        200,
    ),
    ("/api/agents/{agentId}/runs", "/api/agents/echo/runs", {"message": "{m}"}, 200),
    ("/api/agents/{agentId}/runs/stream", "/api/agents/echo/runs/stream", {"message": "{m}"}, 200),
    ("/api/agents/{agentId}/runs/background", "/api/agents/echo/runs/background", {"message": "{m}"}, 200),
    ("/api/v1/runs", "/api/v1/runs", {"prompt": "{m}"}, 202),
    ("/api/runs", "/api/runs", {"prompt": "{m}", "wait_for_completion": False}, 200),
]


@pytest.mark.parametrize(("documented", "served", "template", "accepted"), PROMPTS)
async def test_blank_prompts_are_outside_the_document_as_the_server_refuses_them(
    gw: Gateway, documented: str, served: str, template: dict[str, Any], accepted: int
) -> None:
    doc = (await gw.http.get("/openapi.json")).json()
    check = validator(doc, body_schema(doc, documented))
    for prompt, ok in [("hello", True), (" \t\n ", False), ("", False)]:
        body = json.loads(
            json.dumps(template).replace("{m}", prompt.replace("\n", "\\n").replace("\t", "\\t"))
        )
        assert check.is_valid(body) is ok, (documented, body)
        response = await gw.http.post(served, json=body)
        assert (response.status_code == accepted) is ok, (served, body, response.text)
        assert response.status_code < 500


@pytest.mark.parametrize(
    ("documented", "served", "query", "ok"),
    [
        ("/v1/runs", "/v1/runs", {"page_size": 1000}, True),
        ("/v1/runs", "/v1/runs", {"page_size": 1001}, False),
        ("/v1/runs", "/v1/runs", {"skip": 100_000}, True),
        ("/v1/runs", "/v1/runs", {"skip": 100_001}, False),
        ("/v1/runs", "/v1/runs", {"session_id": "s" * 128}, True),
        ("/v1/runs", "/v1/runs", {"session_id": "s" * 129}, False),
        ("/v1/runs/{run_id}/events", "/v1/runs/{run}/events", {"after_seq": MAX_SEQ}, True),
        ("/v1/runs/{run_id}/events", "/v1/runs/{run}/events", {"after_seq": MAX_SEQ + 1}, False),
        ("/api/v1/runs", "/api/v1/runs", {"page_size": 100}, True),
        ("/api/v1/runs", "/api/v1/runs", {"page_size": 101}, False),
    ],
)
async def test_query_limits_are_documented_as_the_server_applies_them(
    gw: Gateway, documented: str, served: str, query: dict[str, Any], ok: bool
) -> None:
    doc = (await gw.http.get("/openapi.json")).json()
    parameters = {p["name"]: p["schema"] for p in doc["paths"][documented]["get"]["parameters"]}
    for name, value in query.items():
        assert validator(doc, parameters[name]).is_valid(value) is ok, (documented, name, value)
    run = await gw.run("echo", "hi", wait=True)
    response = await gw.http.get(served.format(run=run["id"]), params=query)
    assert (response.status_code == 200) is ok, response.text
    assert response.status_code in (200, 400, 422)


@pytest.mark.parametrize(
    ("field", "value", "ok"),
    [
        ("timeout", "604800s", True),
        ("timeout", "604800.5s", False),
        ("timeout", "604801s", False),
        ("timeout", "-1s", False),
        ("sessionId", "s" * 128, True),
        ("sessionId", "s" * 129, False),
        ("idempotencyKey", "k" * 257, False),
        ("userId", "nul\u0000", False),
        ("agentId", "other", False),  # the path names the agent
    ],
)
async def test_run_fields_are_documented_as_the_server_checks_them(
    gw: Gateway, field: str, value: str, ok: bool
) -> None:
    doc = (await gw.http.get("/openapi.json")).json()
    body = {"input": {"message": "hi"}, field: value}
    assert validator(doc, body_schema(doc, "/v1/agents/{agent_id}/runs")).is_valid(body) is ok, body
    response = await gw.http.post("/v1/agents/echo/runs", json=body)
    assert (response.status_code == 200) is ok, response.text


async def test_sse_responses_are_documented_as_events(gw: Gateway) -> None:
    doc = (await gw.http.get("/openapi.json")).json()
    streams = {
        (path, method): op["responses"]["200"]["content"]["text/event-stream"]["schema"]
        for path, item in doc["paths"].items()
        for method, op in item.items()
        if "text/event-stream" in op["responses"].get("200", {}).get("content", {})
    }
    assert set(streams) == {
        ("/v1/agents/{agent_id}/runs:stream", "post"),
        ("/v1/runs/{run_id}:stream", "get"),
        ("/api/agents/{agentId}/runs/stream", "post"),
        ("/api/v1/runs/{job_id}/stream", "get"),
        ("/api/v1/runs/{runId}/events", "get"),
    }
    assert all(schema.get("type") != "string" for schema in streams.values())
    job = (await gw.http.post("/api/v1/runs", json={"prompt": "hi"})).json()["job_id"]
    run = await gw.run("echo", "hi", wait=True)
    calls = [
        (
            "/v1/agents/{agent_id}/runs:stream",
            "post",
            "/v1/agents/echo/runs:stream",
            {"run": {"input": {"message": "hi"}}},
        ),
        ("/v1/runs/{run_id}:stream", "get", f"/v1/runs/{run['id']}:stream", None),
        ("/api/agents/{agentId}/runs/stream", "post", "/api/agents/echo/runs/stream", {"message": "hi"}),
        ("/api/v1/runs/{job_id}/stream", "get", f"/api/v1/runs/{job}/stream", None),
        ("/api/v1/runs/{runId}/events", "get", f"/api/v1/runs/{run['id']}/events", None),
    ]
    for documented, method, served, body in calls:
        check = validator(doc, streams[(documented, method)])
        async with aconnect_sse(gw.http, method.upper(), served, json=body) as source:
            events = [event async for event in source.aiter_sse()]
        assert events, served
        for event in events:
            fields = {"event": event.event, "data": event.data, **({"id": event.id} if event.id else {})}
            assert check.is_valid(fields), (served, fields)
        assert not check.is_valid("a string"), served


async def test_405_answers_allow_exactly_the_documented_methods(gw: Gateway) -> None:
    doc = (await gw.http.get("/openapi.json")).json()
    for path, item in doc["paths"].items():
        served = re.sub(r"\{run_id\}", "1", path) if path.startswith("/api/runs") else path
        served = re.sub(r"\{name\}", "swagger-ui.css", served)
        served = re.sub(r"\{[^}]+\}", "x", served)
        response = await gw.http.request("TRACE", served)  # a method no route serves
        assert response.status_code == 405, (served, response.text)
        allowed = {m.strip().lower() for m in response.headers["Allow"].split(",")}
        assert allowed - {"head"} == set(item), (path, response.headers["Allow"])


async def test_path_parameters_have_plain_names(gw: Gateway) -> None:
    doc = (await gw.http.get("/openapi.json")).json()
    for path, item in doc["paths"].items():
        names = re.findall(r"\{([^}]+)\}", path)
        assert all(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name) for name in names), path
        for op in item.values():
            declared = [p["name"] for p in op.get("parameters", []) if p["in"] == "path"]
            assert sorted(declared) == sorted(names), path
    # the canonical stream start names its agent `agent_id` and fills run.agent_id with it
    frames = await gw.stream(
        "POST", "/v1/agents/echo/runs:stream", json={"run": {"input": {"message": "hi"}}}
    )
    run = await gw.get(gateway_harness.event(frames[0])["runId"])
    assert run["agentId"] == "echo"


async def test_include_inactive_is_a_boolean_as_documented(gw: Gateway) -> None:
    assert (await gw.http.get("/api/agents", params={"includeInactive": "true"})).status_code == 200
    bad = await gw.http.get("/api/agents", params={"includeInactive": "maybe"})
    assert bad.status_code == 400 and bad.headers["content-type"].startswith(PROBLEM)
    assert bad.json()["invalidParams"][0]["name"] == "includeInactive"


async def test_an_idempotency_conflict_answers_its_documented_409(gw: Gateway) -> None:
    # The fuzzer's finding: family B's 409 body ({job_id, status, message}) was documented as {detail}.
    doc = (await gw.http.get("/openapi.json")).json()
    headers = {"Idempotency-Key": "same"}
    first = await gw.http.post("/api/v1/runs", json={"prompt": "one"}, headers=headers)
    conflict = await gw.http.post("/api/v1/runs", json={"prompt": "two"}, headers=headers)
    assert conflict.status_code == 409, conflict.text
    body = conflict.json()
    assert body["job_id"] == first.json()["job_id"]
    assert body["message"] == "Job already exists with this idempotency key"
    documented = doc["paths"]["/api/v1/runs"]["post"]["responses"]["409"]["content"]["application/json"]
    assert validator(doc, documented["schema"]).is_valid(body)
