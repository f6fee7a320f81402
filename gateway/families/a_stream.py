"""Family A's run streams: POST …/runs/stream starts a run, or — retried with the Last-Event-ID of
its frames (`<run_id>:<seq>`, as fetch-event-source sends it after a dropped connection) — re-attaches
to that run after that seq instead of starting another. GET /api/v1/runs/{runId}/events streams a
run for a browser's EventSource, which authenticates with a short-lived single-use `?token=` issued
by POST /api/v1/runs/{runId}/sse-token (API_FAMILIES.md §A.5). Frames are data-only AgentStreamEvents."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from json.encoder import encode_basestring
from typing import Final

import grpc
from agentrun.v1 import run_pb2
from agentrun.v1 import run_service_pb2 as pb
from aiohttp import web
from multidict import CIMultiDict

from gateway import codec, event_json, keys, rules, sse
from gateway.errors import ApiError, FieldViolation
from gateway.families import a_requests
from gateway.families import a_shapes as shapes
from gateway.upstream import upstream

MAX_TOKENS: Final = 10_000  # tokens held at once; the oldest go first beyond it
SCHEMAS: Final = {
    "SseToken": {
        "type": "object",
        "required": ["token", "expiresAt"],
        "properties": {"token": {"type": "string"}, "expiresAt": {"type": "string", "format": "date-time"}},
    }
}
_CREDENTIALS: Final = ("authorization", "x-api-key")


# ---- frames ---------------------------------------------------------------------------------


def stream_format(shaper: shapes.StreamShaper) -> sse.SseFormat:
    def frames(event: run_pb2.RunEvent) -> Iterable[sse.Frame]:
        shaped = shaper.event(event)
        return [sse.Frame(codec.dumps(shaped))] if shaped is not None else []

    def prepared(event: run_pb2.RunEvent, event_id: str | None) -> bytes:
        data = _delta_json(event)
        return sse.encode(frames(event), event_id) if data is None else event_json.sse_frame(data, event_id)

    def error(failure: ApiError) -> Iterable[sse.Frame]:
        return [sse.Frame(codec.dumps(shapes.stream_event("ERROR", failure.message)))]

    # Data-only frames (no `event:` line); `id: <run_id>:<seq>` on each, so that a client that
    # retries the POST with Last-Event-ID re-attaches to this run rather than starting another.
    return sse.SseFormat(
        frames=frames,
        error=error,
        event_id=lambda event: f"{event.run_id}:{event.seq}",
        prepared=prepared,
    )


# Text deltas are nearly all of a stream's events: their AgentStreamEvent is written directly, the
# same text as codec.dumps(shaper.event(event)) (tests/test_event_encoding.py holds it to that).
_DELTA_HEADS: Final = {
    run_pb2.EVENT_TYPE_REASONING_DELTA: '{"event":"REASONING_DELTA","data":',
    run_pb2.EVENT_TYPE_CONTENT_DELTA: '{"event":"CONTENT_DELTA","data":',
}


def _delta_json(event: run_pb2.RunEvent) -> str | None:
    """None for other kinds (START's session is shaper state) and for a delta without a time
    (stamped with the time it is sent)."""
    head = _DELTA_HEADS.get(event.type)
    when = event.create_time
    if head is None or not (when.seconds or when.nanos):
        return None
    stamp = when.seconds * 1000 + when.nanos // 1_000_000  # epoch ms, as shapes.stream_event
    return f'{head}{encode_basestring(event.text)},"timestamp":{stamp}}}'


# ---- POST …/runs/stream ---------------------------------------------------------------------


async def run_stream(request: web.Request) -> web.StreamResponse:
    resume = resume_point(request)
    if resume is not None:
        return await reattach(request, *resume, agent_id=request.match_info["agentId"])
    message = await a_requests.run_request(request, wait=False)
    shaper = shapes.StreamShaper(followups=message.input.generate_followups)
    return await sse.stream_run(request, pb.StreamRunRequest(run=message), stream_format(shaper))


def resume_point(request: web.Request) -> tuple[str, int] | None:
    """(run, seq) from a Last-Event-ID of this family's frames (`<run_id>:<seq>`; the header, else
    `?lastEventId=`); None without one, or for a bare seq (left to sse.stream_run, which refuses
    it: a retried start cannot say which run it was)."""
    name, value = "Last-Event-ID", request.headers.get("Last-Event-ID", "").strip()
    if not value:
        name, value = "lastEventId", request.query.get("lastEventId", "").strip()
    if ":" not in value:
        return None
    run_ref, _, seq = value.rpartition(":")
    if not (0 < len(run_ref) <= rules.MAX_RUN_REF_CHARS and "\x00" not in run_ref and sse.is_seq(seq)):
        violation = FieldViolation(name, "must be the id of a received frame: <run_id>:<seq>")
        raise ApiError.invalid(f"{name} is not the id of a frame of this stream", [violation])
    return run_ref, int(seq)


async def reattach(
    request: web.Request, run_ref: str, after: int, *, agent_id: str | None = None, named: str | None = None
) -> web.StreamResponse:
    """The run's events after seq `after`. With `agent_id`, a run of another agent is as unknown as
    a missing one (404), as is another tenant's (the server sees to that). `named`: the run a
    Last-Event-ID named, which must be this one."""
    run = await _run(request, run_ref)
    if agent_id is not None and run.agent_id != agent_id:
        raise _no_run(run_ref)
    if named is not None and named not in (run.id, run_ref):
        violation = FieldViolation("Last-Event-ID", "names another run")
        raise ApiError.invalid("Last-Event-ID names another run than the path", [violation])
    shaper = shapes.StreamShaper(followups=run.input.generate_followups, session_id=run.session_id)
    message = pb.StreamRunRequest(run_id=run.id, after_seq=after)
    return await sse.stream_run(request, message, stream_format(shaper), resume=False)


async def _run(request: web.Request, run_ref: str) -> run_pb2.Run:
    up = upstream(request)
    try:
        run: run_pb2.Run = (await up.call(up.runs.GetRun, pb.GetRunRequest(run_id=run_ref), request)).run
    except ApiError as exc:
        if exc.code == grpc.StatusCode.INVALID_ARGUMENT:
            raise _no_run(run_ref) from None
        raise
    return run


def _no_run(run_ref: str) -> ApiError:
    return ApiError(
        404,
        grpc.StatusCode.NOT_FOUND,
        f"run {run_ref!r} not found",
        "RUN_NOT_FOUND",
        metadata={"run_id": run_ref},
    )


# ---- GET /api/v1/runs/{runId}/events and its tokens ----------------------------------------


@dataclass(frozen=True)
class _Grant:
    run_refs: frozenset[str]  # the run id and the reference it was issued for
    credentials: tuple[tuple[str, str], ...]  # the issuer's Authorization / X-API-Key headers
    expires: float  # time.monotonic()


class SseTokens:
    """Opaque tokens, each good for one stream of one run, once, within its TTL. Held in this
    gateway's memory: a token is redeemed at the gateway that issued it."""

    def __init__(self) -> None:
        self._grants: dict[str, _Grant] = {}

    def issue(self, run: run_pb2.Run, run_ref: str, request: web.Request, ttl_s: float) -> tuple[str, float]:
        now = time.monotonic()
        self._grants = {t: g for t, g in self._grants.items() if g.expires > now}
        while len(self._grants) >= MAX_TOKENS:
            del self._grants[next(iter(self._grants))]
        token = secrets.token_urlsafe(32)
        credentials = tuple((h, request.headers[h]) for h in _CREDENTIALS if h in request.headers)
        self._grants[token] = _Grant(frozenset({run.id, run_ref}), credentials, now + ttl_s)
        return token, time.time() + ttl_s

    def redeem(self, token: str, run_ref: str) -> tuple[tuple[str, str], ...] | None:
        """The issuer's credentials, once, if `token` is live and was issued for `run_ref`."""
        grant = self._grants.pop(token, None)
        if grant is None or grant.expires <= time.monotonic() or run_ref not in grant.run_refs:
            return None
        return grant.credentials


TOKENS: Final = web.AppKey("agentrun.gateway.family_a.sse_tokens", SseTokens)


async def issue_token(request: web.Request) -> web.Response:
    run_ref = request.match_info["runId"]
    run = await _run(request, run_ref)  # the caller must see the run: 404 otherwise
    ttl = request.app[keys.SETTINGS].sse_token_ttl_s
    token, expires = request.app[TOKENS].issue(run, run_ref, request, ttl)
    stamp = datetime.fromtimestamp(expires, UTC).isoformat().replace("+00:00", "Z")
    return web.json_response({"token": token, "expiresAt": stamp})


async def run_events(request: web.Request) -> web.StreamResponse:
    """The run's frames for EventSource: resumable by Last-Event-ID (`<run_id>:<seq>` or a seq),
    `?lastEventId=` or the product's `?sinceId=`; authenticated by `?token=` or the headers."""
    run_ref = request.match_info["runId"]
    token = request.query.get("token")
    if token is not None:
        credentials = request.app[TOKENS].redeem(token, run_ref)
        if credentials is None:
            raise ApiError(
                401,
                grpc.StatusCode.UNAUTHENTICATED,
                "SSE token is unknown, used or expired",
                "INVALID_CREDENTIALS",
            )
        request = _with_credentials(request, credentials)
    resume = resume_point(request)
    if resume is None:
        return await reattach(request, run_ref, _plain_seq(request))
    return await reattach(request, run_ref, resume[1], named=resume[0])


def _plain_seq(request: web.Request) -> int:
    since = request.query.get("sinceId", "").strip()
    if since and not sse.is_seq(since):
        violation = FieldViolation("sinceId", f"must be an event seq from 0 to {sse.MAX_SEQ}")
        raise ApiError.invalid("sinceId must be an event seq", [violation])
    return max(sse.resume_after(request) or 0, int(since) if since else 0)


def _with_credentials(request: web.Request, credentials: tuple[tuple[str, str], ...]) -> web.Request:
    """The request as its token's issuer made it: the issuer's credentials are what go upstream."""
    headers = CIMultiDict((k, v) for k, v in request.headers.items() if k.lower() not in _CREDENTIALS)
    headers.extend(credentials)
    return request.clone(headers=headers)
