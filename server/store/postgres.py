"""The PostgreSQL backend: replicas share the database. The writer's batch runs on one asyncpg
connection, its hot statements on asyncpg directly (server/store/pg_writes.py), the rest through
SQLAlchemy's run_sync (no thread); reads use their own pool. Capped claims take a
transaction-scoped advisory lock without waiting; commits NOTIFY the other replicas, which LISTEN
(server/store/listener.py)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, TypeVar

from sqlalchemy import Connection, Table, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from server.store.listener import CANCEL_CHANNEL, EVENTS_CHANNEL, QUEUE_CHANNEL, Listener
from server.store.migrations import migrate_async
from server.store.pg_writes import notify_at_commit
from server.store.records import EventRecord

T = TypeVar("T")
_TRY_LOCK = text("SELECT pg_try_advisory_xact_lock(7352861)")


class AsyncWriterConnection:
    """An asyncpg connection in AUTOCOMMIT: the writer's steps (server/store/pg_writes.py) begin and
    end each batch's transaction themselves; its sync SQLAlchemy code runs on it through run_sync."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._conn: AsyncConnection | None = None

    async def open(self) -> None:
        conn = await self._engine.connect()
        try:
            self._conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            # Every statement planned for its arrays and the table as they are: a plan cached while
            # the table was small (a seq scan, hash-joined) would stay in use as the table grows.
            await self._conn.exec_driver_sql("SET plan_cache_mode = force_custom_plan")
        except BaseException:
            await conn.close()
            raise

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._conn is None:  # a reconnect failed earlier: try again now
            await self.open()
        assert self._conn is not None
        return await self._conn.run_sync(fn, *args)

    async def close(self, final: bool = False) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                if not final:  # closed to reconnect: the connection is suspect, not for the pool
                    await self._conn.invalidate()
                await self._conn.close()
            self._conn = None


class PostgresBackend:
    def __init__(self, url: URL) -> None:
        # pre_ping: a pooled connection that died with a database restart is replaced, not handed out.
        self.write = create_async_engine(url, pool_size=1, max_overflow=1, pool_pre_ping=True)
        self.read = create_async_engine(url, pool_size=10, max_overflow=10, pool_pre_ping=True)
        # The plain driver URL, for the LISTEN connection (asyncpg directly).
        self._listen_url = url.set(drivername="postgresql").render_as_string(hide_password=False)

    def writer(self) -> AsyncWriterConnection:
        return AsyncWriterConnection(self.write)

    async def migrate(self) -> None:
        await migrate_async(self.write)

    def insert(self, table: Table) -> Any:
        return postgresql.insert(table)

    def serialized(self, conn: Connection) -> bool:
        return bool(conn.execute(_TRY_LOCK).scalar())

    def announce(
        self,
        conn: Connection,
        origin: str,
        published: Sequence[EventRecord],
        queued: bool,
        cancels: Sequence[str] = (),
    ) -> None:
        # Sent with the COMMIT: delivered at commit, and not at all if the transaction rolls back.
        notices = [(EVENTS_CHANNEL, f"{origin}:{run_id}") for run_id in sorted({e.run_id for e in published})]
        if queued:
            notices.append((QUEUE_CHANNEL, origin))
        notices += [(CANCEL_CHANNEL, f"{origin}:{run_id}") for run_id in cancels]
        if notices:
            notify_at_commit(conn, notices)

    @contextlib.asynccontextmanager
    async def listen(
        self,
        origin: str,
        on_events: Callable[[str], None],
        on_queue: Callable[[], None],
        on_cancel: Callable[[str], None],
        on_health: Callable[[bool], None],
    ) -> AsyncIterator[None]:
        listener = Listener(self._listen_url, origin, on_events, on_queue, on_cancel, on_health)
        await listener.start()
        try:
            yield
        finally:
            await listener.stop()

    async def dispose(self) -> None:
        await self.write.dispose()
        await self.read.dispose()
