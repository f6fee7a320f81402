"""A human-readable API page at /docs: Swagger UI rendering /openapi.json. Its assets come from the
swagger-ui-bundle package and are served here, so the page works offline (no CDN)."""

from __future__ import annotations

from pathlib import Path

import swagger_ui_bundle
from aiohttp import web

from gateway import keys, openapi, static

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
    static.add_assets(
        registry,
        "/docs/assets/{name}",
        _ASSETS,
        _TYPES,
        operation_id="docsAsset",
        summary="A file of the API page",
    )
