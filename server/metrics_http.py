"""The server's own Prometheus endpoint (`--metrics-listen`): GET /metrics, for a server deployed
without the gateway in its process. The queue gauges are read from the database at scrape time."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from server.metrics import QueueStats, refresh_queue


def metrics_app(stats: QueueStats) -> web.Application:
    async def scrape(_request: web.Request) -> web.Response:
        await refresh_queue(stats)
        return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/metrics", scrape)
    return app


@contextlib.asynccontextmanager
async def serving_metrics(listen: str, stats: QueueStats) -> AsyncIterator[int]:
    """Serve /metrics on `listen` (host:port; port 0 picks one) until the block ends: yields the port."""
    host, _, port = listen.rpartition(":")
    runner = web.AppRunner(metrics_app(stats), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host.strip("[]") or "0.0.0.0", int(port))
    try:
        await site.start()
        yield int(runner.addresses[0][1])
    finally:
        await runner.cleanup()
