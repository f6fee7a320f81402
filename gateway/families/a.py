"""Family A — Operativus "Agent Manager" (API_FAMILIES.md §A) on the gateway core: the agent list,
sync / streaming / background runs, single and batch status, continue and cancel, each a RunService
call; failures as RFC 7807 problem+json in the product's problem types."""

from __future__ import annotations

import functools
from typing import Any

import grpc
from agentrun.v1 import run_pb2
from agentrun.v1 import run_service_pb2 as pb
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from gateway import codec, errors, keys, openapi, rules
from gateway.errors import ApiError, FieldViolation
from gateway.families import a_requests, a_sessions, a_stream
from gateway.families import a_shapes as shapes
from gateway.registry import Registry

MAX_RUN_IDS = 100
PROBLEM_JSON = "application/problem+json"
# (problem type slug, title) the product answers with, by our error reason and by HTTP status.
_BY_REASON = {
    "MALFORMED_JSON": ("malformed-request-body", "Malformed Request Body"),
    "BODY_TOO_LARGE": ("payload-too-large", "Payload Too Large"),
    "ALREADY_EXISTS": ("resource-already-exists", "Resource Already Exists"),
    "IDEMPOTENCY_KEY_REUSED": ("resource-already-exists", "Resource Already Exists"),
}
_BY_STATUS = {
    400: ("invalid-argument", "Invalid Argument"),
    401: ("unauthorized", "Unauthorized Access"),
    403: ("forbidden", "Forbidden"),
    404: ("resource-not-found", "Resource Not Found"),
    405: ("method-not-allowed", "Method Not Allowed"),
    413: ("payload-too-large", "Payload Too Large"),
    429: ("rate-limit-exceeded", "Rate Limit Exceeded"),
    500: ("internal-server-error", "Internal Server Error"),
}
_RESOURCES = {
    "AGENT_NOT_FOUND": ("Agent", "agent_id"),
    "RUN_NOT_FOUND": ("AgentRun", "run_id"),
    "SESSION_NOT_FOUND": ("AgentSession", "session_id"),
}


# ---- errors ---------------------------------------------------------------------------------


def render_problem(error: ApiError, instance: str | None = None) -> web.Response:
    """RFC 7807 body: {type, title, status, detail, instance}, plus `invalidParams` for field
    errors (with `field`/`message` too: the product's own clients read those) and the missing
    resource's `resourceName`/`identifier`."""
    slug, title = _kind(error)
    body: dict[str, Any] = {
        "type": f"urn:problem-type:{slug}",
        "title": title,
        "status": error.status,
        "detail": _detail(error),
        "instance": instance,
    }
    if error.violations:
        body["invalidParams"] = [_param(v) for v in error.violations]
    if error.reason in _RESOURCES:
        name, key = _RESOURCES[error.reason]
        body["resourceName"], body["identifier"] = name, error.metadata.get(key)
    return web.json_response(
        body, status=error.status, headers=error.headers, content_type=PROBLEM_JSON, dumps=codec.dumps
    )


def _kind(error: ApiError) -> tuple[str, str]:
    if error.reason in _BY_REASON:
        return _BY_REASON[error.reason]
    if error.violations:
        return "invalid-request", "Invalid Request Content"
    if error.status == 404 and error.reason == "NOT_FOUND" and not error.metadata:
        return "not-found", "Endpoint Not Found"  # no route: the router's 404, not a missing resource
    return _BY_STATUS.get(error.status, ("response-status", "Request Failed"))


def _detail(error: ApiError) -> str:
    if error.violations:
        return "; ".join(f"{a_requests.field_name(v.field)}: {v.description}" for v in error.violations)
    if error.reason == "RUN_NOT_PAUSED":
        return f"Run is not in PAUSED state (status: {error.metadata.get('state', 'unknown')})"
    if error.reason == "NOT_FOUND" and error.status == 404 and not error.metadata:
        return "The requested resource could not be found."
    return error.message


def _param(violation: FieldViolation) -> dict[str, str]:
    name = a_requests.field_name(violation.field)
    return {"name": name, "reason": violation.description, "field": name, "message": violation.description}


def _problems(registry: Registry) -> Middleware:
    """Renders this family's failures with the request path as `instance` (an ErrorRenderer sees
    only the error); requests of other surfaces pass through to the core's middleware."""
    inner = errors.middleware(
        lambda request: functools.partial(render_problem, instance=request.path), registry.refusal
    )

    @web.middleware
    async def problems(request: web.Request, handler: Handler) -> web.StreamResponse:
        if registry.renderer_for(request) is not render_problem:
            return await handler(request)
        return await inner(request, handler)

    return problems


async def _model(request: web.Request, run: run_pb2.Run) -> str:
    if run.input.options.model:
        return shapes.model_of(run, "")
    up = request.app[keys.UPSTREAM]
    try:
        agent = (await up.call(up.runs.GetAgent, pb.GetAgentRequest(agent_id=run.agent_id), request)).agent
    except ApiError:
        return ""  # the agent left the configuration since; the run is still worth answering
    return shapes.model_of(run, agent.model)


def _json(value: Any) -> web.Response:
    return web.json_response(value, dumps=codec.dumps)


# ---- routes ---------------------------------------------------------------------------------


async def list_agents(request: web.Request) -> web.Response:
    # Every agent is active; the flag is still read as Spring reads a boolean parameter.
    flag = request.query.get("includeInactive")
    if flag is not None and flag.strip().lower() not in a_requests.BOOLEANS:
        violation = FieldViolation("includeInactive", "must be true or false")
        raise ApiError.invalid("Failed to convert value of parameter 'includeInactive'", [violation])
    up = request.app[keys.UPSTREAM]
    response = await up.call(up.runs.ListAgents, pb.ListAgentsRequest(), request)
    return _json([shapes.agent_definition(agent) for agent in response.agents])


async def get_agent(request: web.Request) -> web.Response:
    up = request.app[keys.UPSTREAM]
    message = pb.GetAgentRequest(agent_id=request.match_info["agentId"])
    return _json(shapes.agent_definition((await up.call(up.runs.GetAgent, message, request)).agent))


async def run_sync(request: web.Request) -> web.Response:
    message = await a_requests.run_request(request, wait=True)
    up = request.app[keys.UPSTREAM]
    run = (await up.call(up.runs.Run, message, request)).run
    return _json(shapes.run_response(run, await _model(request, run)))


async def run_background(request: web.Request) -> web.Response:
    message = await a_requests.run_request(request, wait=False)
    up = request.app[keys.UPSTREAM]
    run = (await up.call(up.runs.Run, message, request)).run
    return _json({"runId": run.id, "status": "QUEUED"})  # the documented answer, whoever got it first


async def run_status(request: web.Request) -> web.Response:
    up = request.app[keys.UPSTREAM]
    message = pb.GetRunRequest(run_id=request.match_info["runId"])
    return _json(shapes.agent_run((await up.call(up.runs.GetRun, message, request)).run))


async def batch_status(request: web.Request) -> web.Response:
    if "runIds" not in request.query:
        raise ApiError.invalid("required parameter is missing", [FieldViolation("runIds", "required")])
    ids = a_requests.run_ids(request.query.getall("runIds"))
    if len(ids) > MAX_RUN_IDS:
        raise ApiError.invalid(f"Maximum {MAX_RUN_IDS} runIds per request")
    if not ids:
        return _json([])
    up = request.app[keys.UPSTREAM]
    response = await up.call(up.runs.BatchGetRuns, pb.BatchGetRunsRequest(run_ids=ids), request)
    return _json([shapes.agent_run(run) for run in response.runs])  # missing ids: left out


async def continue_run(request: web.Request) -> web.Response:
    body = await a_requests.read_body(request, required=False)
    decision = a_requests.decision(body)
    if decision is None:
        raise ApiError.invalid("invalid decision", [FieldViolation("action", "must be APPROVE or REJECT")])
    tool_call = body.get("approvalId", body.get("toolCallId"))
    reason = body.get("reason")
    message = pb.ContinueRequest(
        run_id=request.match_info["runId"],
        decision=decision,
        wait=True,
        tool_call_id=tool_call if isinstance(tool_call, str) else "",
        reason=reason if isinstance(reason, str) else "",
    )
    up = request.app[keys.UPSTREAM]
    run = (await up.call(up.runs.Continue, message, request)).run
    return _json(shapes.run_response(run, await _model(request, run)))


async def cancel_run(request: web.Request) -> web.Response:
    up = request.app[keys.UPSTREAM]
    try:
        await up.call(up.runs.CancelRun, pb.CancelRunRequest(run_id=request.match_info["runId"]), request)
    except ApiError as exc:
        # Cancel is idempotent in the product: an unknown id is answered like a finished run.
        if exc.code not in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
            raise
    return web.Response(status=204)


def setup(app: web.Application) -> None:
    registry = app[keys.REGISTRY]
    ref = {
        name: registry.schemas.add(f"operativus.{name}", schema)
        for name, schema in {**shapes.SCHEMAS, **a_sessions.schemas(), **a_stream.SCHEMAS}.items()
    }
    app[a_stream.TOKENS] = a_stream.SseTokens()
    # The agent named by a run route must exist (ids: at most 64 characters); after that the path's
    # agentId is a routing hint the status, continue and cancel routes do not read.
    agent, hint = _path("agentId", rules.MAX_AGENT_ID_CHARS), _path("agentId")
    run, any_run = _path("runId", rules.MAX_RUN_REF_CHARS), _path("runId")
    runs = "/api/agents/{agentId}/runs"
    sse_frames = openapi.sse_event(
        data=ref["StreamEvent"],
        description="data-only frames (no `event:` line), each an AgentStreamEvent",
        event_id={"type": "string", "pattern": "^[^:]+:[0-9]+$", "description": "<run_id>:<seq>"},
    )
    resume = [
        openapi.parameter(
            name,
            where,
            {"type": "string", "pattern": r"^[^:\x00]{1,64}:[0-9]{1,10}$"},
            description="re-attach to the run of a dropped stream: the id (`<run_id>:<seq>`) of the last "
            "frame received; the body is then not read",
        )
        for name, where in (("Last-Event-ID", "header"), ("lastEventId", "query"))
    ]
    include = openapi.parameter(
        "includeInactive", "query", {"type": "boolean"}, description="every agent is active"
    )
    run_ids = openapi.parameter(
        "runIds",
        "query",
        {"type": "string", "pattern": rf"^[^,\x00]{{0,64}}(?:,[^,\x00]{{0,64}}){{0,{MAX_RUN_IDS - 1}}}$"},
        required=True,
        description=f"run ids, comma-separated (or the parameter repeated); at most {MAX_RUN_IDS}",
    )
    routes: list[tuple[str, str, Handler, openapi.Operation]] = [
        ("GET", "/api/agents", list_agents, _op("listAgents", _array(ref["AgentDefinition"]), [include])),
        ("GET", "/api/agents/{agentId}", get_agent, _op("getAgent", ref["AgentDefinition"], [agent])),
        ("POST", runs, run_sync, _op("run", ref["RunResponse"], [agent], ref["RunRequest"])),
        (
            "POST",
            f"{runs}/stream",
            a_stream.run_stream,
            _op("streamRun", sse_frames, [agent, *resume], ref["RunRequest"]),
        ),
        ("POST", f"{runs}/background", run_background, _op("runBackground", ref["BackgroundRun"], [agent])),
        (
            "GET",
            f"{runs}/status",
            batch_status,
            _op("batchStatus", _array(ref["AgentRun"]), [hint, run_ids]),
        ),
        ("GET", runs + "/{runId}/status", run_status, _op("runStatus", ref["AgentRun"], [hint, run])),
        (
            "POST",
            runs + "/{runId}/continue",
            continue_run,
            _op("continueRun", ref["RunResponse"], [hint, run]),
        ),
        ("DELETE", runs + "/{runId}", cancel_run, _op("cancelRun", {}, [hint, any_run])),
        *_optional_routes(ref, sse_frames),
    ]
    for method, path, handler, operation in routes:
        operation["responses"]["default"]["content"] = {PROBLEM_JSON: {"schema": ref["Problem"]}}
        rpc = _RPCS.get(handler)  # None: a stream a token authenticates (the server judges the call)
        route = _ROUTE_PATHS.get(path, path)
        registry.add(
            method, route, handler, operation=operation, errors=render_problem, rpc=rpc, doc_path=path
        )
    _document_bodies(routes, ref)
    registry.errors_under("/api/", render_problem)
    app.middlewares.append(_problems(registry))


# The RunService method behind each route (its access check answers before a local 400).
_RPCS: dict[Handler, str] = {
    list_agents: "ListAgents",
    get_agent: "GetAgent",
    run_sync: "Run",
    a_stream.run_stream: "Run",
    a_stream.issue_token: "GetRun",
    a_sessions.list_sessions: "ListRuns",
    a_sessions.get_session: "ListRuns",
    a_sessions.session_runs: "ListRuns",
    a_sessions.delete_session: "DeleteRun",
    run_background: "Run",
    batch_status: "BatchGetRuns",
    run_status: "GetRun",
    continue_run: "Continue",
    cancel_run: "CancelRun",
}


def _optional_routes(
    ref: dict[str, Any], sse_frames: openapi.Schema
) -> list[tuple[str, str, Handler, openapi.Operation]]:
    """The routes API_FAMILIES.md calls optional: sessions, and SSE query tokens for EventSource."""
    session = _path("sessionId")
    run = _path("runId", rules.MAX_RUN_REF_CHARS)
    query = [
        openapi.parameter("userId", "query", rules.text(rules.MAX_ID_CHARS)),
        openapi.parameter("agentId", "query", rules.text(rules.MAX_AGENT_ID_CHARS)),
        openapi.parameter("page", "query", {"type": "integer", "minimum": 0, "default": 0}),
        openapi.parameter(
            "size", "query", {"type": "integer", "minimum": 1, "default": a_sessions.DEFAULT_SIZE}
        ),
    ]
    seq = {"type": "string", "pattern": r"^(?:[^:\x00]{1,64}:)?[0-9]{1,10}$"}
    events = [
        run,
        openapi.parameter(
            "token", "query", {"type": "string"}, description="from …/sse-token: once, within its TTL"
        ),
        openapi.parameter("Last-Event-ID", "header", seq, description="re-attach after this frame"),
        openapi.parameter("lastEventId", "query", seq, description="re-attach after this frame"),
        openapi.parameter(
            "sinceId", "query", {"type": "integer", "minimum": 0}, description="events after this seq"
        ),
    ]
    sessions = "/api/sessions"
    return [
        ("GET", sessions, a_sessions.list_sessions, _op("listSessions", ref["SessionPage"], query)),
        (
            "GET",
            sessions + "/{sessionId}",
            a_sessions.get_session,
            _op("getSession", ref["AgentSession"], [session]),
        ),
        (
            "GET",
            sessions + "/{sessionId}/runs",
            a_sessions.session_runs,
            _op("sessionRuns", _array(ref["AgentRun"]), [session]),
        ),
        ("DELETE", sessions + "/{sessionId}", a_sessions.delete_session, _op("deleteSession", {}, [session])),
        (
            "POST",
            "/api/v1/runs/{runId}/sse-token",
            a_stream.issue_token,
            _op("issueSseToken", ref["SseToken"], [run]),
        ),
        ("GET", "/api/v1/runs/{runId}/events", a_stream.run_events, _op("runEvents", sse_frames, events)),
    ]


def _op(
    name: str, response: openapi.Schema, params: list[openapi.Schema], body: openapi.Schema | None = None
) -> openapi.Operation:
    return openapi.operation(
        f"operativus_{name}", name, response=response, tags=["operativus"], parameters=params, body=body
    )


def _document_bodies(routes: list[tuple[str, str, Handler, openapi.Operation]], ref: dict[str, Any]) -> None:
    """The details the table leaves out: which bodies are required, the SSE and 204 answers."""
    by_id = {op["operationId"].removeprefix("operativus_"): op for _, _, _, op in routes}
    for name in ("run", "streamRun", "runBackground"):
        by_id[name]["requestBody"] = {"required": True, "content": openapi.json_content(ref["RunRequest"])}
    by_id["continueRun"]["requestBody"] = {
        "required": True,
        "content": openapi.json_content(ref["ContinueRequest"]),
    }
    ok = by_id["streamRun"]["responses"]["200"]
    ok["content"] = {openapi.SSE: ok["content"]["application/json"]}
    by_id["cancelRun"]["responses"] = {
        "204": {"description": "cancelled (also for a finished or unknown run)"},
        "default": by_id["cancelRun"]["responses"]["default"],
    }
    by_id["deleteSession"]["responses"] = {
        "204": {"description": "the session's finished runs are deleted (also for an unknown session)"},
        "default": by_id["deleteSession"]["responses"]["default"],
    }
    events = by_id["runEvents"]["responses"]["200"]
    events["content"] = {openapi.SSE: events["content"]["application/json"]}


def _path(name: str, max_chars: int | None = None) -> openapi.Schema:
    """A path segment (no "/", "{" or "}"); `max_chars`: what the server takes there."""
    schema: openapi.Schema = {"type": "string", "minLength": 1, "pattern": r"^[^/{}]+$"}
    if max_chars is not None:
        schema = rules.text(max_chars, r"^[^/{}\x00]+$", min_chars=1)
    return openapi.parameter(name, "path", schema)


# DELETE …/runs/{runId} must not take the literal paths beside it (…/runs/status and the POST-only
# …/runs/stream, …/runs/background): their 405s then allow exactly the methods documented for them.
_ROUTE_PATHS = {
    "/api/agents/{agentId}/runs/{runId}": (
        "/api/agents/{agentId}/runs/{runId:(?!(?:status|stream|background)$)[^/]+}"
    ),
}


def _array(items: openapi.Schema) -> openapi.Schema:
    return {"type": "array", "items": items}
