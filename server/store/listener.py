"""PostgreSQL LISTEN: when another replica commits events of a run, queues a run or asks to cancel
one, this replica's streams, dispatcher and runners hear of it at once. While the connection is
down, `on_health(False)` makes waiters fall back to polling; once it is back, `on_health(True)`
makes every waiter re-read what it may have missed."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import asyncpg

from server import tasks

log = logging.getLogger(__name__)
RETRY_S = 1.0
# A dropped connection is noticed at once (asyncpg closes it); a silently dead one (a network
# partition) by a keepalive query this often: the only database work of an idle listener.
KEEPALIVE_S = 15.0
# What replicas announce at commit (server/store/postgres.py): committed events of a run, and newly
# queued runs.
EVENTS_CHANNEL, QUEUE_CHANNEL = "agentrun_events", "agentrun_queue"
# Runs asked to cancel: the replica executing one stops it at once, not at its next lease renewal.
CANCEL_CHANNEL = "agentrun_cancel"


class Listener:
    def __init__(
        self,
        url: str,
        origin: str,
        on_events: Callable[[str], None],
        on_queue: Callable[[], None],
        on_cancel: Callable[[str], None],
        on_health: Callable[[bool], None],
    ) -> None:
        self._url = url
        self._on_health = on_health
        self._origin = origin
        self._on_events = on_events
        self._on_queue = on_queue
        self._on_cancel = on_cancel
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._on_health(False)  # until LISTEN is in place: no call may count on it before that
        self._task = asyncio.create_task(self._run(), name="store-listener")

    async def stop(self) -> None:
        await tasks.stop(self._task)

    def _event(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        origin, _, run_id = payload.partition(":")
        if origin != self._origin:  # our own commits reached our subscribers already
            self._on_events(run_id)

    def _cancel(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        origin, _, run_id = payload.partition(":")
        if origin != self._origin:  # a cancel asked here was acted on here
            self._on_cancel(run_id)

    def _queued(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        if payload != self._origin:
            self._on_queue()

    async def _run(self) -> None:
        while True:
            conn = None
            try:
                conn = await asyncpg.connect(self._url)
                await self._listen(conn)
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("LISTEN connection lost (%s); retrying in %.0fs", exc, RETRY_S)
            finally:
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await conn.close()
            self._on_health(False)
            await asyncio.sleep(RETRY_S)

    async def _listen(self, conn: asyncpg.Connection) -> None:
        """Listen until the connection closes or stops answering."""
        closed = asyncio.Event()
        conn.add_termination_listener(lambda _conn: closed.set())
        await conn.add_listener(EVENTS_CHANNEL, self._event)
        await conn.add_listener(QUEUE_CHANNEL, self._queued)
        await conn.add_listener(CANCEL_CHANNEL, self._cancel)
        self._on_health(True)  # also: re-read whatever was committed while not listening
        self._on_queue()
        while not conn.is_closed():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(KEEPALIVE_S):
                    await closed.wait()
            if not conn.is_closed():
                async with asyncio.timeout(KEEPALIVE_S):
                    await conn.execute("SELECT 1")
