"""The gateway's Prometheus metrics and its GET /metrics. Requests are counted by the documented
route they matched (its template, never a concrete path: the label set stays bounded), its family
(the route's OpenAPI tag), method and status. In `agentrun serve` the server's metrics live in the
same process and registry, so one scrape shows both; `refresh` reads the server's database gauges."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest

from gateway import keys, openapi

REQUESTS = Counter(
    "agentrun_gateway_requests",
    "HTTP requests answered, by route family, route template, method and status.",
    ["family", "route", "method", "status"],
)
LATENCY = Histogram(
    "agentrun_gateway_request_seconds",
    "Time to answer a (non-streaming) request, by route family.",
    ["family"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
SSE_STREAMS = Counter("agentrun_gateway_sse_streams", "SSE streams served, by route family.", ["family"])

# Route families by the OpenAPI tag of their routes; "-" for requests that matched no route.
FAMILIES = {"RunService": "canonical", "operativus": "A", "family B: jobs": "B", "webagent": "C"}

Refresh = Callable[[], Awaitable[None]]
REFRESH: web.AppKey[Refresh | None] = web.AppKey("agentrun.gateway.metrics_refresh")


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    status, streamed = 500, False
    try:
        response = await handler(request)
        # A bare StreamResponse is an SSE stream: its duration is the stream's, not a latency.
        status, streamed = response.status, not isinstance(response, web.Response)
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        entry = request.app[keys.REGISTRY].entry(request)
        tag = (entry.operation.get("tags") or ["-"])[0] if entry is not None else "-"
        family = FAMILIES.get(tag, tag)
        REQUESTS.labels(family, entry.path if entry else "-", request.method, str(status)).inc()
        if streamed:
            SSE_STREAMS.labels(family).inc()
        else:
            LATENCY.labels(family).observe(time.perf_counter() - started)


async def scrape(request: web.Request) -> web.Response:
    refresh = request.app.get(REFRESH)
    if refresh is not None:
        await refresh()
    return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})


def setup(app: web.Application, refresh: Refresh | None = None) -> None:
    """Count every request (outermost middleware) and serve GET /metrics."""
    app[REFRESH] = refresh
    app.middlewares.insert(0, middleware)
    exposition = openapi.operation(
        "metrics",
        "Prometheus metrics of this process (text exposition format)",
        response={"type": "string"},
        content_type="text/plain",
        tags=["ops"],
    )
    app[keys.REGISTRY].add("GET", "/metrics", scrape, operation=exposition)
