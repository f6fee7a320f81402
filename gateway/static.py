"""The files a page of the gateway loads (/docs, /console): a fixed set of names, each served from
one directory with its content type and documented as one OpenAPI operation. No path is ever
joined from the request: a name outside the set is 404."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from aiohttp import web

from gateway import openapi
from gateway.registry import Registry


def add_assets(
    registry: Registry,
    route: str,
    directory: Path,
    types: Mapping[str, str],
    *,
    operation_id: str,
    summary: str,
    headers: Mapping[str, str] | None = None,
) -> None:
    """GET `route` (ending in `{name}`) answers `directory / name` for each name in `types` (name ->
    content type), with `headers` added."""

    async def asset(request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        kind = types.get(name)
        if kind is None:
            raise web.HTTPNotFound(text=f"no asset {name!r}")
        return web.FileResponse(directory / name, headers={"Content-Type": kind, **(headers or {})})

    name = openapi.parameter("name", "path", {"enum": sorted(types)}, required=True)
    files = openapi.operation(
        operation_id, summary, response={"type": "string"}, tags=["ops"], parameters=[name]
    )
    binary = {"schema": {"type": "string", "format": "binary"}}
    files["responses"]["200"]["content"] = {kind: binary for kind in sorted(set(types.values()))}
    registry.add("GET", route, asset, operation=files)
