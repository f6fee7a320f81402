"""One server span per HTTP request, named by the documented route it matched, continuing the
caller's trace (`traceparent`); the gRPC calls the request makes carry the span on (see
gateway.upstream.forwarded_metadata). A no-op unless the process installed a tracer provider."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web
from opentelemetry.trace import SpanKind, Status, StatusCode

from common.tracing import TRACER, parent_from
from gateway import keys

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    entry = request.app[keys.REGISTRY].entry(request)
    route = entry.path if entry is not None else ""
    attributes = {"http.request.method": request.method, "http.route": route}
    with TRACER.start_as_current_span(
        f"{request.method} {route or 'unmatched'}",
        context=parent_from(request.headers),
        kind=SpanKind.SERVER,
        attributes=attributes,
    ) as span:
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            span.set_attribute("http.response.status_code", exc.status)
            raise
        span.set_attribute("http.response.status_code", response.status)
        if response.status >= 500:
            span.set_status(Status(StatusCode.ERROR))
        return response


def setup(app: web.Application) -> None:
    app.middlewares.insert(0, middleware)
