"""The run console at /console: one static page (gateway/console/, shipped in the package, no CDN)
whose ES modules call the canonical /v1 REST routes from the browser, with the API key the user
types in as a Bearer header. The page itself is not gated: it holds no data, every call it makes is."""

from __future__ import annotations

from pathlib import Path
from typing import Final

from aiohttp import web

from gateway import keys, openapi, static

_DIR: Final = Path(__file__).with_name("console")
_KINDS: Final = {".js": "text/javascript", ".css": "text/css"}
# The files the page loads, read from the package at startup; anything else is 404 (no path is
# ever joined from the request).
ASSETS: Final = {p.name: _KINDS[p.suffix] for p in sorted(_DIR.iterdir()) if p.suffix in _KINDS}
# The page runs only its own scripts and talks only to this origin: data rendered from the API can
# never become markup or code, and nothing loads from elsewhere (works offline, leaks nothing).
_POLICY: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_HEADERS: Final = {"Content-Security-Policy": _POLICY, "Cache-Control": "no-cache"}


async def page(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(_DIR / "index.html", headers={**_HEADERS, "Content-Type": "text/html"})


def setup(app: web.Application) -> None:
    registry = app[keys.REGISTRY]
    html = openapi.operation(
        "console",
        "The run console: runs, their live events, approvals, cancel, webhook deliveries",
        response={"type": "string"},
        content_type="text/html",
        tags=["ops"],
    )
    registry.add("GET", "/console", page, operation=html)
    static.add_assets(
        registry,
        "/console/{name}",
        _DIR,
        ASSETS,
        operation_id="consoleAsset",
        summary="A script or style sheet of the console",
        headers={"Cache-Control": "no-cache"},
    )
