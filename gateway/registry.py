"""Where every route of every surface (canonical REST, ops, families A/B/C) is added: the aiohttp
route, the error shape its failures are rendered in, and its OpenAPI operation. One place, so
/openapi.json and the error middleware always agree with the router."""

from __future__ import annotations

import re
from dataclasses import dataclass

from aiohttp import web
from aiohttp.typedefs import Handler

from gateway.errors import ErrorRenderer, render_canonical
from gateway.openapi import Operation, Schemas

# aiohttp's "{name:regex}" -> OpenAPI's "{name}"
_REGEX_VAR = re.compile(r"\{([^{}:]+):[^{}]*(?:\{[^{}]*\}[^{}]*)*\}")


@dataclass(frozen=True)
class Entry:
    method: str
    path: str  # as documented, e.g. /v1/agents/{run.agent_id}/runs:stream
    route: web.AbstractRoute
    errors: ErrorRenderer
    operation: Operation


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
    ) -> web.AbstractRoute:
        """Adds a route. `path` is aiohttp's (`{var}` or `{var:regex}`); `doc_path` is the
        OpenAPI path when it differs; `errors` renders every failure of this route."""
        route = self.router.add_route(method, path, handler, name=name)
        entry = Entry(method.upper(), doc_path or _REGEX_VAR.sub(r"{\1}", path), route, errors, operation)
        self._entries.append(entry)
        self._by_route[route] = entry
        return route

    def errors_under(self, prefix: str, renderer: ErrorRenderer) -> None:
        """Error shape for requests under `prefix` that match no route (404/405); the longest
        registered prefix wins, the canonical google JSON error is the default."""
        self._prefixes[prefix] = renderer

    def renderer_for(self, request: web.Request) -> ErrorRenderer:
        entry = self._by_route.get(request.match_info.route)
        if entry is not None:
            return entry.errors
        matches = [p for p in self._prefixes if request.path.startswith(p)]
        return self._prefixes[max(matches, key=len)] if matches else render_canonical
