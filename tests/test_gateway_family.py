"""A family module on the gateway core, the way families A/B/C will be written: its routes through
the registry, upstream calls, its own error body (also for its unknown routes), its own SSE frames
and heartbeats, and its OpenAPI operations in /openapi.json."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from agentrun.v1 import run_pb2
from agentrun.v1 import run_service_pb2 as pb
from aiohttp import web
from openapi_spec_validator import validate

from gateway import codec, keys, openapi, sse
from gateway.errors import ApiError
from tests import gateway_harness
from tests.gateway_harness import GatewayLauncher

gateways = gateway_harness.gateways
database_url = gateway_harness.database_url
STATUS = {run_pb2.RUN_STATE_QUEUED: "queued", run_pb2.RUN_STATE_RUNNING: "running"}
DETAIL = {"type": "object", "properties": {"detail": {}}}


def render_detail(error: ApiError) -> web.Response:
    """FastAPI's shape: {"detail": "..."}, or the field list for validation errors."""
    if error.violations:
        detail: Any = [{"loc": ["body", *v.field.split(".")], "msg": v.description} for v in error.violations]
        return web.json_response({"detail": detail}, status=422)
    return web.json_response({"detail": error.message}, status=error.status)


async def submit(request: web.Request) -> web.Response:
    body = await codec.read_json(request)
    prompt = codec.from_dict(body, run_pb2.RunInput)  # a family may reuse the codec on any message
    upstream = request.app[keys.UPSTREAM]
    run_request = pb.RunRequest(agent_id="slow", input=prompt)
    run = (await upstream.call(upstream.runs.Run, run_request, request)).run
    return web.json_response({"job_id": run.id, "status": STATUS.get(run.state, "done")}, status=202)


async def stream_job(request: web.Request) -> web.StreamResponse:
    message = pb.StreamRunRequest(run_id=request.match_info["job_id"])
    return await sse.stream_run(request, message, JOB_STREAM, headers={"X-Family": "demo"})


def job_frames(event: run_pb2.RunEvent) -> Iterable[sse.Frame]:
    if event.type == run_pb2.EVENT_TYPE_CONTENT_DELTA:
        yield sse.Frame(json.dumps({"step": event.text}), event="progress")


JOB_STREAM = sse.SseFormat(
    frames=job_frames,
    error=lambda error: [sse.Frame(json.dumps({"error": error.message}), event="error")],
    end=lambda last: [sse.Frame("[DONE]")],
    heartbeat=lambda: sse.Frame("{}", event="heartbeat"),
    ids=False,
)


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "healthy"})


def demo_family(app: web.Application) -> None:
    registry = app[keys.REGISTRY]
    registry.add("GET", "/health", health, operation=openapi.operation("demo_health", "Up", response=DETAIL))
    registry.errors_under("/demo/", render_detail)
    job = registry.schemas.add("demo.Job", {"type": "object", "properties": {"job_id": {"type": "string"}}})
    body = registry.schemas.of(run_pb2.RunInput)
    submit_op = openapi.operation("demo_submit", "Submit", response=job, body=body, status=202, errors=DETAIL)
    registry.add("POST", "/demo/jobs", submit, errors=render_detail, operation=submit_op)
    stream_op = openapi.operation(
        "demo_stream",
        "Stream",
        response={"type": "string"},
        content_type="text/event-stream",
        parameters=[openapi.parameter("job_id", "path", {"type": "string"})],
        errors=DETAIL,
    )
    registry.add("GET", "/demo/jobs/{job_id}/stream", stream_job, errors=render_detail, operation=stream_op)


async def test_a_family_module_uses_the_core(gateways: GatewayLauncher) -> None:
    gw = await gateways(families=[demo_family], sse_heartbeat_s=0.05)
    response = await gw.http.post("/demo/jobs", json={"message": "tokens=3 delay_ms=150"})
    assert response.status_code == 202, response.text
    job_id = response.json()["job_id"]

    lines: list[str] = []
    async with gw.http.stream("GET", f"/demo/jobs/{job_id}/stream") as stream:
        assert stream.headers["x-family"] == "demo"
        lines = [line async for line in stream.aiter_lines() if line]
    assert not any(line.startswith("id:") for line in lines)
    assert lines.count("event: heartbeat") >= 2
    steps = [json.loads(line[6:])["step"] for line in lines if line.startswith('data: {"step')]
    assert "".join(steps) == "t0 t1 t2 " and lines[-1] == "data: [DONE]"

    # errors in the family's shape: upstream, its own validation, its unknown routes
    assert (await gw.http.get("/demo/jobs/nope/stream")).json() == {"detail": "run 'nope' not found"}
    bad = await gw.http.post("/demo/jobs", json={"message": 1, "colour": "red"})
    assert bad.status_code == 422
    assert [d["loc"] for d in bad.json()["detail"]] == [["body", "message"], ["body", "colour"]]
    missing = await gw.http.get("/demo/elsewhere")
    assert missing.status_code == 404 and missing.json() == {"detail": "no such route"}
    assert "error" in (await gw.http.get("/v1/elsewhere")).json()  # canonical outside the prefix

    assert (await gw.http.get("/health")).json() == {"status": "healthy"}  # the family's, not ops'
    doc = (await gw.http.get("/openapi.json")).json()
    validate(doc)
    assert doc["paths"]["/demo/jobs"]["post"]["responses"]["202"]
    assert "demo.Job" in doc["components"]["schemas"]
    assert "agentrun.v1.RunInput" in doc["components"]["schemas"]
