"""Family B — the PraisonAI async jobs API (API_FAMILIES.md §B) on RunService: submit (202 with
Location), poll, list, result, cancel, delete, the job's SSE stream, /health and /stats; every
failure in FastAPI's {"detail": ...} shape (422: pydantic's error list)."""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field
from typing import Any

import grpc
from agentrun.v1 import run_pb2
from agentrun.v1 import run_service_pb2 as pb
from aiohttp import web

from common.limits import MAX_SKIP
from common.shapes import JOB_STATUS, TERMINAL, iso
from gateway import codec, keys, sse
from gateway.errors import ApiError
from gateway.families import b_agents, b_docs, b_requests, b_responses, b_stream
from gateway.upstream import Upstream

Json = dict[str, Any]
PREFIX = "/api/v1/runs"
_HOST = re.compile(r"^[A-Za-z0-9.\-]+(:[0-9]{1,5})?$|^\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?$")
_TITLES = {"NOT_FOUND": "Not Found", "METHOD_NOT_ALLOWED": "Method Not Allowed"}


@dataclass(eq=False)
class JobError(ApiError):
    """A failure whose body is already in family B's shape (422 lists, 409 idempotency body)."""

    body: Json = field(default_factory=dict)


def _error(status: int, detail: str, code: grpc.StatusCode = grpc.StatusCode.FAILED_PRECONDITION) -> JobError:
    return JobError(status, code, detail, code.name, body={"detail": detail})


def _unprocessable(items: list[Json]) -> JobError:
    return JobError(
        422, grpc.StatusCode.INVALID_ARGUMENT, "invalid request", "INVALID_ARGUMENT", body={"detail": items}
    )


# Server field paths (BadRequest) -> family B body locations.
_LOCATIONS = {"input.message": ("prompt",), "agent_id": ("recipe_name",)}


def _location(field: str) -> tuple[str, ...]:
    if field in _LOCATIONS:
        return _LOCATIONS[field]
    if field.startswith("input.options."):
        return ("config", field.removeprefix("input.options."))
    return tuple(field.split("."))


def _loc(field: str) -> list[str]:
    # The one field outside a body: the stream's resume point, from its header or the query.
    if field == "Last-Event-ID":
        return ["header", field]
    if field == "lastEventId":
        return ["query", field]
    return ["body", *_location(field)]


def _value_at(body: Any, location: tuple[str, ...]) -> Any:
    node = body
    for key in location:
        node = node.get(key) if isinstance(node, dict) else None
    return node


def render(error: ApiError) -> web.Response:
    if isinstance(error, JobError):
        return web.json_response(error.body, status=error.status, headers=error.headers)
    if error.violations:  # only submit bodies carry fields; their values are mapped in _submit_error
        items = [b_requests.value_error(_loc(v.field), v.description, None) for v in error.violations]
        return web.json_response({"detail": items}, status=422)
    if error.status == 401:  # B.6: the jobs server's own auth answer
        return web.json_response({"error": "Unauthorized"}, status=401, headers=error.headers)
    detail = _TITLES.get(error.reason, error.message)
    if error.reason == "RUN_NOT_FOUND":
        detail = f"Job not found: {error.metadata.get('run_id', '')}"
    return web.json_response({"detail": detail}, status=error.status, headers=error.headers)


def _up(request: web.Request) -> Upstream:
    return request.app[keys.UPSTREAM]


def _header(request: web.Request, name: str) -> str:
    """A header as Starlette reads it when it is not UTF-8: as Latin-1 (aiohttp keeps the bytes
    as lone surrogates, which no protobuf string takes)."""
    value = request.headers.get(name, "")
    try:
        value.encode()
    except UnicodeEncodeError:
        return value.encode(errors="surrogateescape").decode("latin-1")
    return value


def _base_url(request: web.Request) -> str:
    """scheme://host as the client reached us, through a proxy's X-Forwarded-* if there is one."""
    proto = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
    host = request.headers.get("X-Forwarded-Host", "").split(",")[0].strip()
    scheme = proto if proto in ("http", "https") else request.scheme
    if not _HOST.match(host):
        host = request.host if _HOST.match(request.host) else _local_host(request)
    return f"{scheme}://{host}"


def _local_host(request: web.Request) -> str:
    """host:port this gateway was reached at, for a request whose Host header is no host name."""
    sockname = request.transport.get_extra_info("sockname") if request.transport is not None else None
    if isinstance(sockname, tuple) and len(sockname) >= 2:
        host = str(sockname[0])
        return f"[{host}]:{sockname[1]}" if ":" in host else f"{host}:{sockname[1]}"
    return "localhost"


# ---- submit ---------------------------------------------------------------------------------


async def submit(request: web.Request) -> web.Response:
    body = await _read_body(request)
    header_key = _header(request, "Idempotency-Key").strip()
    default_agent = request.app[keys.SETTINGS].family_b_agent
    try:
        agent = await b_agents.job_agent(request, body)
        message = b_requests.submit_request(body, header_key, default_agent, agent)
    except b_requests.InvalidBody as exc:
        raise _unprocessable(exc.items) from None
    except (b_requests.Unsupported, b_agents.AgentSourceError) as exc:
        raise _error(400, str(exc), grpc.StatusCode.INVALID_ARGUMENT) from None
    up = _up(request)
    try:
        run = (await up.call(up.runs.Run, message, request)).run
    except ApiError as exc:
        raise await _submit_error(request, exc, body) from None
    poll_url = f"{_base_url(request)}{PREFIX}/{run.id}"
    headers = {"Location": poll_url, "Retry-After": "2"}
    return web.json_response(b_responses.job_submitted(run, poll_url), status=202, headers=headers)


async def _read_body(request: web.Request) -> Any:
    try:
        return await codec.read_json(request)
    except codec.BadJson as exc:
        error = {"error": exc.problem}
        item = b_requests.item("json_invalid", ["body", exc.position], "JSON decode error", {}, error)
        raise _unprocessable([item]) from None


async def _submit_error(request: web.Request, error: ApiError, body: Any) -> ApiError:
    if error.reason == "IDEMPOTENCY_KEY_REUSED":
        job_id = error.metadata.get("run_id", "")
        try:
            status: str | None = JOB_STATUS[(await _get(request, job_id)).state]
        except ApiError:
            status = None  # deleted meanwhile: the key is about to be free again
        message = "Job already exists with this idempotency key"
        return JobError(
            409,
            error.code,
            message,
            error.reason,
            body={"job_id": job_id, "status": status, "message": message},
        )
    if error.violations:
        items = []
        for violation in error.violations:
            location = _location(violation.field)
            value = _value_at(body, location)
            items.append(b_requests.value_error(["body", *location], violation.description, value))
        return _unprocessable(items)
    if error.reason == "AGENT_NOT_FOUND":
        agent = error.metadata.get("agent_id", "")
        named = isinstance(body, dict) and body.get("recipe_name")
        what = "Recipe" if named else "Default agent"
        return _error(400, f"{what} not found: {agent}", grpc.StatusCode.INVALID_ARGUMENT)
    return error


# ---- one job --------------------------------------------------------------------------------


def _job_id(request: web.Request) -> str:
    job_id = request.match_info["job_id"]
    if len(job_id) > 64:  # never a run id; the server would call it a bad argument
        raise _error(404, f"Job not found: {job_id}", grpc.StatusCode.NOT_FOUND)
    return job_id


async def _get(request: web.Request, job_id: str) -> run_pb2.Run:
    up = _up(request)
    response: pb.GetRunResponse = await up.call(up.runs.GetRun, pb.GetRunRequest(run_id=job_id), request)
    return response.run


async def status(request: web.Request) -> web.Response:
    return web.json_response(b_responses.job_status(await _get(request, _job_id(request))))


async def result(request: web.Request) -> web.Response:
    run = await _get(request, _job_id(request))
    if run.state not in TERMINAL:
        raise _error(409, f"Job is not complete. Current status: {JOB_STATUS[run.state]}")
    return web.json_response(b_responses.job_result_response(run))


async def cancel(request: web.Request) -> web.Response:
    run = await _get(request, _job_id(request))
    if run.state not in TERMINAL:
        up = _up(request)
        message = pb.CancelRunRequest(run_id=run.id, reason=b_responses.CANCEL_MESSAGE)
        run = (await up.call(up.runs.CancelRun, message, request)).run
        if run.state == run_pb2.RUN_STATE_CANCELLED:
            return web.json_response({**b_responses.job_status(run), "cancelled_at": iso(run.complete_time)})
    # Finished before (or while) we asked: CancelRun leaves finished runs as they are.
    raise _error(409, f"Job is already complete. Status: {JOB_STATUS[run.state]}")


async def delete(request: web.Request) -> web.Response:
    run = await _get(request, _job_id(request))
    running = _error(409, "Cannot delete a running job. Cancel it first.")
    if run.state not in TERMINAL:
        raise running
    up = _up(request)
    try:
        await up.call(up.runs.DeleteRun, pb.DeleteRunRequest(run_id=run.id), request)
    except ApiError as exc:
        raise (running if exc.reason == "RUN_NOT_FINISHED" else exc) from None
    return web.Response(status=204)


async def stream(request: web.Request) -> web.StreamResponse:
    after = _resume_point(request)  # FastAPI checks parameters before the handler runs
    run = await _get(request, _job_id(request))  # unknown job: 404 before the stream opens
    heartbeat = request.app[keys.SETTINGS].family_b_heartbeat_s
    job = b_stream.JobStream(run, heartbeat)
    if after:  # the status, progress and answer so far, for what is still to come
        job.seed(await _events(request, run.id, after))

    def end(_: run_pb2.RunEvent | None) -> list[sse.Frame]:
        frames = _frames(job.end())
        return [*frames, sse.Frame("[DONE]")] if frames else []

    fmt = sse.SseFormat(
        frames=lambda event: _frames(job.frames(event)),
        error=lambda error: _frames([("error", {"error": error.message})]),
        end=end,
        heartbeat=lambda: _frames([job.heartbeat()])[0],
    )
    return await sse.stream_run(request, pb.StreamRunRequest(run_id=run.id), fmt, heartbeat_s=heartbeat)


def _resume_point(request: web.Request) -> int:
    """The seq to resume after (Last-Event-ID, else ?lastEventId=; 0 without either), each one
    given validated as an int 0..MAX_SEQ parameter of the route; sse.stream_run reads it again."""
    errors: list[Json] = []
    for where, name, raw in (
        ("header", "Last-Event-ID", request.headers.get("Last-Event-ID")),
        ("query", "lastEventId", request.query.get("lastEventId")),
    ):
        if raw is not None and raw.strip():
            b_requests.query_int(raw, name, 0, 0, sse.MAX_SEQ, errors, where)
    if errors:
        raise _unprocessable(errors)
    return sse.resume_after(request) or 0  # still refuses what int() forgives ("+1", "1_0")


def _frames(named: list[b_stream.Named]) -> list[sse.Frame]:
    return [sse.Frame(codec.dumps(b_stream.envelope(name, payload)), event=name) for name, payload in named]


async def _events(request: web.Request, run_id: str, upto: int) -> list[run_pb2.RunEvent]:
    up = _up(request)
    events: list[run_pb2.RunEvent] = []
    while not events or events[-1].seq < upto:
        after = events[-1].seq if events else 0
        page = pb.ListRunEventsRequest(run_id=run_id, after_seq=after, page_size=1000)
        got = [e for e in (await up.call(up.runs.ListRunEvents, page, request)).events if e.seq <= upto]
        if not got:
            break
        events += got
    return events


# ---- many jobs ------------------------------------------------------------------------------


async def list_jobs(request: web.Request) -> web.Response:
    query = request.query
    errors: list[Json] = []
    page = b_requests.query_int(query.get("page"), "page", 1, 1, None, errors)
    page_size = b_requests.query_int(query.get("page_size"), "page_size", 20, 1, 100, errors)
    if errors:
        raise _unprocessable(errors)
    wanted = query.get("status") or ""
    state = b_requests.STATUS_ALIASES.get(wanted, wanted)
    if state and state not in b_requests.STATES:
        valid = list(b_requests.STATUSES)
        raise _error(
            400, f"Invalid status: {wanted}. Valid values: {valid}", grpc.StatusCode.INVALID_ARGUMENT
        )
    skip = (page - 1) * page_size
    message = pb.ListRunsRequest(
        metadata=b_requests.FAMILY,
        session_id=query.get("session_id") or "",
        states=b_requests.STATES[state] if state else (),
        page_size=page_size if skip <= MAX_SKIP else 1,
        skip=skip if skip <= MAX_SKIP else 0,  # past what the store pages through: an empty page
    )
    up = _up(request)
    response = await up.call(up.runs.ListRuns, message, request)
    runs = response.runs if skip <= MAX_SKIP else []
    return web.json_response(b_responses.job_list(runs, response.total_size, page, page_size))


async def _counts(
    request: web.Request, statuses: tuple[str, ...], timeout: float | None = None
) -> dict[str, int]:
    """Jobs per status, by the store's count of each filter (one page of one run each)."""
    up = _up(request)

    async def count(name: str) -> int:
        message = pb.ListRunsRequest(states=b_requests.STATES[name], page_size=1, metadata=b_requests.FAMILY)
        return int((await up.call(up.runs.ListRuns, message, request, timeout=timeout)).total_size)

    totals = await asyncio.gather(*(count(name) for name in statuses))
    return dict(zip(statuses, totals, strict=True))


def _executor(counts: dict[str, int]) -> Json:
    return {"running_jobs": counts["running"], "queued_jobs": counts["queued"]}


async def health(request: web.Request) -> web.Response:
    # Liveness: 200 whatever the upstream does; the counts are a bonus when it answers in time.
    try:
        timeout = request.app[keys.SETTINGS].ready_timeout_s
        executor: Json = _executor(await _counts(request, ("queued", "running"), timeout))
    except ApiError as exc:
        executor = {"error": exc.message}
    return web.json_response({"status": "healthy", "store": "agentrun", "executor_stats": executor})


async def stats(request: web.Request) -> web.Response:
    counts = await _counts(request, b_requests.STATUSES)
    total = sum(counts.values())
    store = {"backend": "agentrun", "total_jobs": total, "by_status": counts}
    body = {"total_jobs": total, "by_status": counts, "executor": _executor(counts), "store": store}
    return web.json_response(body)


def setup(app: web.Application) -> None:
    registry = app[keys.REGISTRY]
    registry.errors_under("/api/v1/", render)
    ops = b_docs.operations(registry.schemas, PREFIX)
    # With the RunService method behind each route: its access check answers before a local 4xx.
    for method, path, handler, rpc in (
        ("POST", PREFIX, submit, "Run"),
        ("GET", PREFIX, list_jobs, "ListRuns"),
        ("GET", PREFIX + "/{job_id}", status, "GetRun"),
        ("DELETE", PREFIX + "/{job_id}", delete, "DeleteRun"),
        ("GET", PREFIX + "/{job_id}/result", result, "GetRun"),
        ("POST", PREFIX + "/{job_id}/cancel", cancel, "CancelRun"),
        ("GET", PREFIX + "/{job_id}/stream", stream, "GetRun"),
        ("GET", "/health", health, None),
        ("GET", "/stats", stats, "ListRuns"),
    ):
        registry.add(method, path, handler, operation=ops[(method, path)], errors=render, rpc=rpc)
