"""Operational routes: liveness (/health), readiness (/ready: the upstream answers the standard
gRPC health check) and the OpenAPI document of every route the registry holds (/openapi.json)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway import keys, openapi

TITLE = "agentrun gateway"
VERSION = "v1"
_DOCUMENT: web.AppKey[dict[str, Any]] = web.AppKey("agentrun.gateway.openapi")


async def health(request: web.Request) -> web.Response:
    # Liveness only: the process answers. Upstream trouble is /ready's business, so a restart
    # loop is never triggered by a server outage.
    return web.json_response({"status": "ok"})


async def ready(request: web.Request) -> web.Response:
    settings = request.app[keys.SETTINGS]
    serving, status = await request.app[keys.UPSTREAM].serving(settings.ready_timeout_s)
    body = {"status": "ready" if serving else "unavailable", "upstream": status}
    return web.json_response(body, status=200 if serving else 503)


async def openapi_json(request: web.Request) -> web.Response:
    return web.json_response(request.app[_DOCUMENT])


def document(app: web.Application) -> dict[str, Any]:
    registry = app[keys.REGISTRY]
    operations = [(e.method, e.path, e.operation) for e in registry.entries]
    return openapi.document(operations, registry.schemas, title=TITLE, version=VERSION)


async def _build_document(app: web.Application) -> None:
    # At startup every family has added its routes and schemas and nothing changes afterwards.
    app[_DOCUMENT] = document(app)


def setup(app: web.Application) -> None:
    """Adds the ops routes. Call after the families: a family that documents its own GET /health
    (family B does) keeps it, and it serves as liveness too (200 while the process is up)."""
    app.on_startup.append(_build_document)
    registry = app[keys.REGISTRY]
    if not any(e.method == "GET" and e.path == "/health" for e in registry.entries):
        registry.add("GET", "/health", health, operation=_operation("health", "The process is up", _STATUS))
    registry.add("GET", "/ready", ready, operation=_ready_operation())
    schema = {"type": "object"}
    registry.add(
        "GET", "/openapi.json", openapi_json, operation=_operation("openapi", "This document", schema)
    )


_STATUS = {"type": "object", "properties": {"status": {"type": "string"}}, "required": ["status"]}


def _operation(operation_id: str, summary: str, schema: openapi.Schema) -> openapi.Operation:
    return openapi.operation(operation_id, summary, response=schema, tags=["ops"])


def _ready_operation() -> openapi.Operation:
    schema = {
        "type": "object",
        "properties": {"status": {"enum": ["ready", "unavailable"]}, "upstream": {"type": "string"}},
    }
    result = _operation("ready", "The upstream gRPC server is SERVING", schema)
    result["responses"]["503"] = {"description": "not ready", "content": openapi.json_content(schema)}
    return result
