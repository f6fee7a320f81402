"""Where every route of every surface (canonical REST, ops, families A/B/C) is added: the aiohttp
route, the error shape its failures are rendered in, and its OpenAPI operation. One place, so
/openapi.json and the error middleware always agree with the router."""

from __future__ import annotations

import re
from dataclasses import dataclass

from aiohttp import web
from aiohttp.typedefs import Handler

from gateway import keys
from gateway.errors import ApiError, ErrorRenderer, render_canonical
from gateway.openapi import Operation, Schemas
from gateway.upstream import CONSULTED, SERVICE

# aiohttp's "{name:regex}" -> OpenAPI's "{name}"
_REGEX_VAR = re.compile(r"\{([^{}:]+):[^{}]*(?:\{[^{}]*\}[^{}]*)*\}")


@dataclass(frozen=True)
class Entry:
    method: str
    path: str  # as documented, e.g. /v1/agents/{agent_id}/runs:stream
    route: web.AbstractRoute
    errors: ErrorRenderer
    operation: Operation
    rpc: str | None  # the RunService method that answers the route, for the server's auth verdict


class Registry:
    def __init__(self, router: web.UrlDispatcher) -> None:
        self.router = router
        self.schemas = Schemas()
        self._entries: list[Entry] = []
        self._by_route: dict[web.AbstractRoute, Entry] = {}
        self._prefixes: dict[str, ErrorRenderer] = {}

    @property
    def entries(self) -> list[Entry]:
        return list(self._entries)

    def add(
        self,
        method: str,
        path: str,
        handler: Handler,
        *,
        operation: Operation,
        errors: ErrorRenderer = render_canonical,
        doc_path: str | None = None,
        name: str | None = None,
        rpc: str | None = None,
    ) -> web.AbstractRoute:
        """Adds a route. `path` is aiohttp's (`{var}` or `{var:regex}`); `doc_path` is the
        OpenAPI path when it differs; `errors` renders every failure of this route; `rpc` names
        the RunService method behind it (None: a route the server does not gate), whose access
        check comes before the gateway's own 4xx (see `refusal`)."""
        if rpc is not None and rpc not in SERVICE.methods_by_name:
            raise ValueError(f"{method} {path}: RunService has no method {rpc!r}")
        _document_http_refusals(operation)
        route = self.router.add_route(method, path, handler, name=name)
        doc = doc_path or _REGEX_VAR.sub(r"{\1}", path)
        entry = Entry(method.upper(), doc, route, errors, operation, rpc)
        self._entries.append(entry)
        self._by_route[route] = entry
        return route

    def errors_under(self, prefix: str, renderer: ErrorRenderer) -> None:
        """Error shape for requests under `prefix` that match no route (404/405); the longest
        registered prefix wins, the canonical google JSON error is the default."""
        self._prefixes[prefix] = renderer

    async def refusal(self, request: web.Request) -> ApiError | None:
        """The server's 401/403/429 for the caller of a gated route the gateway is about to refuse
        on its own (errors.middleware), unless the server has already judged this request."""
        entry = self._by_route.get(request.match_info.route)
        if entry is None or entry.rpc is None or request.get(CONSULTED):
            return None
        timeout = request.app[keys.SETTINGS].ready_timeout_s
        return await request.app[keys.UPSTREAM].refusal(entry.rpc, request, timeout)

    def entry(self, request: web.Request) -> Entry | None:
        """The documented route a request matched, if any."""
        return self._by_route.get(request.match_info.route)

    def renderer_for(self, request: web.Request) -> ErrorRenderer:
        entry = self._by_route.get(request.match_info.route)
        if entry is not None:
            return entry.errors
        matches = [p for p in self._prefixes if request.path.startswith(p)]
        return self._prefixes[max(matches, key=len)] if matches else render_canonical


def _document_http_refusals(operation: Operation) -> None:
    """aiohttp's HTTP parser refuses a request line or header field over 8190 bytes with a plain
    text 400 before any route sees it: the document lists that beside the route's own errors."""
    errors = operation["responses"].get("default")
    if errors is not None:
        plain = {
            "schema": {
                "type": "string",
                "description": "the HTTP server refused the request line or a header",
            }
        }
        errors["content"] = {**errors.get("content", {}), "text/plain": plain}
