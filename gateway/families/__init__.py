"""The documented API families, one module each: A (Operativus Agent Manager), B (PraisonAI async
jobs), C (WebAgent run API). Each module's `setup(app)` adds its routes to the gateway."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web


def all_families() -> list[Callable[[web.Application], None]]:
    from . import a, b, c

    return [a.setup, b.setup, c.setup]
