"""A database outage is UNAVAILABLE, never INTERNAL: a stream whose re-read meets a restarting
PostgreSQL ends with a status clients retry, and the project's client re-attaches and sees every
event once."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

import pytest

from agentrun_client import AsyncClient
from tests import postgres
from tests.conftest import Launcher
from tests.waiting import until


@pytest.fixture
def cluster() -> Iterator[tuple[postgres.Cluster, str]]:
    """A PostgreSQL of this test's own, since the test restarts it."""
    own = postgres.Cluster()
    admin = own.start()
    try:
        url, _ = postgres.fresh_database(admin)
        yield own, url
    finally:
        own.stop()


async def test_a_followed_run_survives_a_database_restart(cluster: tuple[postgres.Cluster, str]) -> None:
    own, url = cluster
    async with contextlib.AsyncExitStack() as stack:
        h = await Launcher(url, stack)()
        run = await h.run("slow", "tokens=60 delay_ms=50")
        async with AsyncClient(f"127.0.0.1:{h.server.port}", timeout=30) as client:
            seen: list[int] = []

            async def follow() -> None:
                async for event in client.follow(run.id):
                    seen.append(event.seq)

            follower = asyncio.create_task(follow())
            await until(lambda: len(seen) >= 5, what="the first events")
            await asyncio.to_thread(own.restart)
            async with asyncio.timeout(60):
                await follower  # raised INTERNAL before: the client gives up on that
        stored = [e.seq for e in await h.events(run_id=run.id)]
    assert seen == stored == list(range(1, len(stored) + 1))
