"""A human-readable API page at /docs: Swagger UI rendering /openapi.json. Its assets come from the
swagger-ui-bundle package and are served here, so the page works offline (no CDN)."""

from __future__ import annotations

from pathlib import Path

import swagger_ui_bundle
from aiohttp import web

from gateway import keys, openapi

_ASSETS = Path(swagger_ui_bundle.swagger_ui_path)
# The only files the page loads; anything else under /docs/assets is 404.
_TYPES = {
    "swagger-ui.css": "text/css",
    "swagger-ui-bundle.js": "text/javascript",
    "favicon-32x32.png": "image/png",
}
_PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>agentrun API</title>
  <link rel="stylesheet" href="/docs/assets/swagger-ui.css">
  <link rel="icon" type="image/png" href="/docs/assets/favicon-32x32.png">
</head>
<body>
  <div id="api"></div>
  <script src="/docs/assets/swagger-ui-bundle.js"></script>
  <script>
    window.ui = SwaggerUIBundle({url: "/openapi.json", dom_id: "#api", deepLinking: true});
  </script>
</body>
</html>
"""


async def page(request: web.Request) -> web.Response:
    return web.Response(text=_PAGE, content_type="text/html")


async def asset(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    if name not in _TYPES:
        raise web.HTTPNotFound(text=f"no asset {name!r}")
    return web.FileResponse(_ASSETS / name, headers={"Content-Type": _TYPES[name]})


def setup(app: web.Application) -> None:
    registry = app[keys.REGISTRY]
    html = openapi.operation(
        "docs",
        "This API, readable (Swagger UI)",
        response={"type": "string"},
        content_type="text/html",
        tags=["ops"],
    )
    registry.add("GET", "/docs", page, operation=html)
    name = openapi.parameter("name", "path", {"enum": sorted(_TYPES)}, required=True)
    files = openapi.operation(
        "docsAsset", "A file of the API page", response={"type": "string"}, tags=["ops"], parameters=[name]
    )
    binary = {"schema": {"type": "string", "format": "binary"}}
    files["responses"]["200"]["content"] = {kind: binary for kind in sorted(set(_TYPES.values()))}
    registry.add("GET", "/docs/assets/{name}", asset, operation=files)
