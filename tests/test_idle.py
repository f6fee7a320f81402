"""Waiting costs no database work: waiters and streams are woken by the hub (this process) and by
LISTEN/NOTIFY (other replicas), and re-read the store on their own only as a rare safety net, or
every poll interval while notifications are down."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import pytest
from agentrun.v1 import run_pb2
from agentrun.v1 import run_service_pb2 as pb
from sqlalchemy import Engine, event

from tests.conftest import Harness, Launcher
from tests.waiting import until

POLL_S = 0.05


@pytest.fixture
async def launch(durable_url: str) -> AsyncIterator[Launcher]:
    async with contextlib.AsyncExitStack() as stack:
        yield Launcher(durable_url, stack)


@contextlib.contextmanager
def statements() -> Iterator[list[str]]:
    """Every SQL statement any engine of this process sends while the block runs."""
    sent: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        sent.append(statement)

    event.listen(Engine, "before_cursor_execute", seen)
    try:
        yield sent
    finally:
        event.remove(Engine, "before_cursor_execute", seen)


async def idle_server(launch: Launcher) -> Harness:
    """A server that executes nothing (no workers), so its runs stay QUEUED, with a short poll
    interval that would show any polling at once, and no sweeps during the test."""
    h = await launch(workers=0, poll_interval_s=POLL_S, recheck_s=60.0, sweep_interval_s=60.0)
    await until(lambda: h.server.engine.hub.notified, what="notifications to reach the server")
    return h


def subscribers(h: Harness) -> int:
    return sum(len(s) for s in h.server.engine.hub._subscribers.values())


def all_waiting(h: Harness, count: int) -> bool:
    """`count` followers, each past its reads and waiting for news."""
    subs = [s for group in h.server.engine.hub._subscribers.values() for s in group]
    return len(subs) == count and all(s._waiter is not None for s in subs)


async def test_idle_waiters_and_streams_read_nothing(launch: Launcher) -> None:
    h = await idle_server(launch)
    waiter = asyncio.create_task(h.run("echo", "wait", wait=True))
    start = pb.RunRequest(agent_id="echo", input=run_pb2.RunInput(message="stream"))
    stream = asyncio.create_task(h.events(run=start))
    queued = await h.run("echo", "re-attached")
    reattached = asyncio.create_task(h.events(run_id=queued.id))
    await until(lambda: all_waiting(h, 3), what="two streams and a waiter, waiting")

    with statements() as sent:
        # 20 poll intervals: polling waiters would each have read the store about 20 times.
        await asyncio.sleep(20 * POLL_S)
    assert sent == []

    runs = (await h.stub.ListRuns(pb.ListRunsRequest(page_size=10))).runs
    assert len(runs) == 3
    for run in runs:  # waking works: each ends as soon as its run does
        await h.stub.CancelRun(pb.CancelRunRequest(run_id=run.id))
    async with asyncio.timeout(5):
        assert (await waiter).state == run_pb2.RUN_STATE_CANCELLED
        assert (await stream)[-1].type == run_pb2.EVENT_TYPE_ERROR
        assert (await reattached)[-1].type == run_pb2.EVENT_TYPE_ERROR


async def test_a_lost_listen_connection_makes_waiters_poll_until_it_is_back(postgres_url: str) -> None:
    """While LISTEN is down, a replica cannot hear other replicas' commits: its waiters read the
    store every poll interval; once LISTEN is back, they re-read once more and stop."""
    async with contextlib.AsyncExitStack() as stack:
        await _lost_listen(postgres_url, Launcher(postgres_url, stack))


async def _lost_listen(postgres_url: str, launch: Launcher) -> None:
    h = await idle_server(launch)
    waiter = asyncio.create_task(h.run("echo", "wait", wait=True))
    await until(lambda: subscribers(h) == 1, what="the waiter")

    with statements() as sent:
        await _terminate_listeners(postgres_url)
        await until(lambda: not h.server.engine.hub.notified, what="the server to notice")
        await until(lambda: len(sent) >= 3, what="the waiter to poll")
    await until(lambda: h.server.engine.hub.notified, what="LISTEN to come back", timeout=15)
    await h.stub.CancelRun(pb.CancelRunRequest(run_id=(await _only_run(h)).id))
    async with asyncio.timeout(5):
        assert (await waiter).state == run_pb2.RUN_STATE_CANCELLED


async def _only_run(h: Harness) -> run_pb2.Run:
    (run,) = (await h.stub.ListRuns(pb.ListRunsRequest(page_size=10))).runs
    return run


async def _terminate_listeners(url: str) -> None:
    conn = await asyncpg.connect(url.replace("postgresql+asyncpg", "postgresql"))
    try:
        await conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND query LIKE 'LISTEN%' AND pid <> pg_backend_pid()"
        )
    finally:
        await conn.close()


async def test_a_cancel_through_another_replica_answers_at_once(postgres_url: str) -> None:
    """The run's end may be committed and announced before request_cancel returns: the replica
    that was asked must already listen for it, not wait for its next re-read (60 s here)."""
    async with contextlib.AsyncExitStack() as stack:
        launch = Launcher(postgres_url, stack)
        worker = await launch(lease_s=30.0, recheck_s=60.0)
        front = await launch(workers=0, lease_s=30.0, recheck_s=60.0)
        for server in (worker, front):
            await until(lambda s=server: s.server.engine.hub.notified, what="LISTEN")  # type: ignore[misc]
        for _ in range(10):
            run = await worker.run("slow", "tokens=1000 delay_ms=20")
            await until(lambda r=run: worker.server.engine.executing(r.id), what="the run to start")  # type: ignore[misc]
            async with asyncio.timeout(5):
                reply = await front.stub.CancelRun(pb.CancelRunRequest(run_id=run.id))
            assert reply.run.state == run_pb2.RUN_STATE_CANCELLED
