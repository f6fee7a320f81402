"""PostgreSQL LISTEN: when another replica commits events of a run or queues a run, this replica's
streams and dispatcher are woken at once instead of at their next poll. Notifications are only a
shortcut: streams and the queue still poll, so a missed one (a dropped connection) only delays."""

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
    ) -> None:
        self._url = url
        self._origin = origin
        self._on_events = on_events
        self._on_queue = on_queue
        self._on_cancel = on_cancel
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
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
                await conn.add_listener(EVENTS_CHANNEL, self._event)
                await conn.add_listener(QUEUE_CHANNEL, self._queued)
                await conn.add_listener(CANCEL_CHANNEL, self._cancel)
                self._on_queue()  # whatever was queued while we were not listening
                while not conn.is_closed():
                    await asyncio.sleep(RETRY_S)
                    await conn.execute("SELECT 1")  # notices a dead connection
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("LISTEN connection lost (%s); retrying in %.0fs", exc, RETRY_S)
                await asyncio.sleep(RETRY_S)
            finally:
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await conn.close()
