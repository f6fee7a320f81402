"""Family A's sessions (API_FAMILIES.md §A.1, the product's /api/sessions): a session is the runs
submitted through family A with one session id; its messages are their prompts and answers. Listed
as a Spring page, newest activity first."""

from __future__ import annotations

import asyncio
from typing import Any, Final

import grpc
from agentrun.v1 import run_pb2
from agentrun.v1 import run_service_pb2 as pb
from aiohttp import web

from common.limits import MAX_SKIP
from common.shapes import TERMINAL, iso
from gateway import codec, rules
from gateway.errors import ApiError, FieldViolation
from gateway.families import a_shapes as shapes
from gateway.upstream import upstream

FAMILY: Final = {"family": "A"}  # what family A's runs carry in their metadata
DEFAULT_SIZE: Final = 20
MAX_SIZE: Final = 100  # each listed session costs a read of its runs
MAX_SESSION_RUNS: Final = 1000  # the newest runs of a session its messages are taken from
Json = dict[str, Any]


def _json(value: Any, status: int = 200) -> web.Response:
    return web.json_response(value, status=status, dumps=codec.dumps)


def _not_found(session_id: str) -> ApiError:
    return ApiError(
        404,
        grpc.StatusCode.NOT_FOUND,
        f"Session not found: {session_id}",
        "SESSION_NOT_FOUND",
        metadata={"session_id": session_id},
    )


def _page_param(request: web.Request, name: str, default: int, low: int) -> int:
    """Spring's binding of an int query parameter; out-of-range sizes are clamped as Spring does."""
    raw = request.query.get(name, "").strip()
    if not raw:
        return default
    if not (raw.lstrip("-").isascii() and raw.lstrip("-").isdigit()) or len(raw) > 10:
        violation = FieldViolation(name, "must be an integer")
        raise ApiError.invalid(f"Failed to convert value of parameter '{name}'", [violation])
    return max(int(raw), low)


async def _session_runs(request: web.Request, session_id: str) -> list[run_pb2.Run]:
    """The session's family A runs, oldest first; none for an id no run has (or can have)."""
    if not 0 < len(session_id) <= rules.MAX_ID_CHARS:
        return []
    up = upstream(request)
    message = pb.ListRunsRequest(session_id=session_id, metadata=FAMILY, page_size=MAX_SESSION_RUNS)
    runs = (await up.call(up.runs.ListRuns, message, request)).runs
    return list(reversed(runs))


def session(runs: list[run_pb2.Run]) -> Json:
    """AgentSession of a session's runs (oldest first)."""
    messages: list[Json] = []
    for run in runs:
        messages.append({"role": "user", "content": run.input.message})
        if run.state == run_pb2.RUN_STATE_COMPLETED:
            messages.append({"role": "assistant", "content": run.output})
    latest = runs[-1]
    return {
        "sessionId": latest.session_id,
        "userId": latest.user_id or None,
        "agentId": latest.agent_id,
        "messages": messages,
        "createdAt": iso(runs[0].create_time),
        "updatedAt": iso(latest.update_time),
    }


async def list_sessions(request: web.Request) -> web.Response:
    page = _page_param(request, "page", 0, 0)
    size = min(_page_param(request, "size", DEFAULT_SIZE, 1), MAX_SIZE)
    skip = page * size
    message = pb.ListRunsRequest(
        metadata=FAMILY,
        latest_per_session=True,
        user_id=request.query.get("userId", ""),
        agent_id=request.query.get("agentId", ""),
        page_size=size if skip <= MAX_SKIP else 1,
        skip=min(skip, MAX_SKIP),
    )
    up = upstream(request)
    listed = await up.call(up.runs.ListRuns, message, request)
    latest = list(listed.runs) if skip <= MAX_SKIP else []
    sessions = await asyncio.gather(*(_session_runs(request, run.session_id) for run in latest))
    content = [session(runs) for runs in sessions if runs]
    total = int(listed.total_size)
    pages = -(-total // size)
    return _json(
        {
            "content": content,
            "totalElements": total,
            "totalPages": pages,
            "number": page,
            "size": size,
            "numberOfElements": len(content),
            "first": page == 0,
            "last": page >= pages - 1,
            "empty": not content,
        }
    )


async def get_session(request: web.Request) -> web.Response:
    session_id = request.match_info["sessionId"]
    runs = await _session_runs(request, session_id)
    if not runs:
        raise _not_found(session_id)
    return _json(session(runs))


async def session_runs(request: web.Request) -> web.Response:
    runs = await _session_runs(request, request.match_info["sessionId"])
    return _json([shapes.agent_run(run) for run in runs])


async def delete_session(request: web.Request) -> web.Response:
    """Deletes the session's history: its finished runs. Runs still queued, running or paused stay
    (cancel them first); 204 whether or not the session existed, as the product answers."""
    up = upstream(request)
    for run in await _session_runs(request, request.match_info["sessionId"]):
        if run.state not in TERMINAL:
            continue
        try:
            await up.call(up.runs.DeleteRun, pb.DeleteRunRequest(run_id=run.id), request)
        except ApiError as exc:
            if exc.code not in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION):
                raise  # deleted meanwhile is fine; a caller who may not delete is told
    return web.Response(status=204)


def schemas() -> dict[str, Json]:
    """OpenAPI schemas of the session bodies (AgentRun is family A's own, referenced)."""
    text, time = {"type": "string"}, {"type": ["string", "null"], "format": "date-time"}
    message = {"type": "object", "properties": {"role": text, "content": text}}
    agent_session = {
        "type": "object",
        "required": ["sessionId", "agentId", "messages"],
        "properties": {
            "sessionId": text,
            "userId": {"type": ["string", "null"]},
            "agentId": text,
            "messages": {"type": "array", "items": message},
            "createdAt": time,
            "updatedAt": time,
        },
    }
    integer, flag = {"type": "integer"}, {"type": "boolean"}
    page = {
        "type": "object",
        "required": ["content", "totalElements", "totalPages", "number"],
        "properties": {
            "content": {"type": "array", "items": {"$ref": "#/components/schemas/operativus.AgentSession"}},
            **dict.fromkeys(("totalElements", "totalPages", "number", "size", "numberOfElements"), integer),
            **dict.fromkeys(("first", "last", "empty"), flag),
        },
    }
    return {"AgentSession": agent_session, "SessionPage": page}
