"""Everything that differs between database engines lives here: URLs, connection setup and the
INSERT ... ON CONFLICT construct. The rest of the store is dialect-neutral SQLAlchemy Core."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Table, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool

SQLITE_BUSY_TIMEOUT_MS = 5000


@dataclass
class Engines:
    """The write engine (one connection, owned by the writer task) and the read engine. An
    in-memory SQLite database has one connection for both, so `lock` serialises its users."""

    write: AsyncEngine
    read: AsyncEngine
    lock: Any  # asyncio.Lock | contextlib.nullcontext

    async def dispose(self) -> None:
        await self.write.dispose()
        if self.read is not self.write:
            await self.read.dispose()

    @contextlib.asynccontextmanager
    async def writer_connection(self) -> AsyncIterator[AsyncConnection]:
        async with self.write.connect() as conn:
            yield _Locked(conn, self.lock)  # type: ignore[misc]

    @contextlib.asynccontextmanager
    async def reader(self) -> AsyncIterator[AsyncConnection]:
        async with self.lock, self.read.connect() as conn:
            yield conn


class _Locked:
    """Wraps the writer's connection so each transaction holds the shared lock (in-memory SQLite)."""

    def __init__(self, conn: AsyncConnection, lock: Any) -> None:
        self._conn = conn
        self._lock = lock

    @contextlib.asynccontextmanager
    async def begin(self) -> AsyncIterator[None]:
        async with self._lock, self._conn.begin():
            yield

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


def normalize_url(url: str) -> str:
    """Accept plain `sqlite:///x.db` / `postgresql://...` and pick the async drivers."""
    if url.startswith("sqlite://") and not url.startswith("sqlite+"):
        return "sqlite+aiosqlite://" + url[len("sqlite://") :]
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql+asyncpg://" + url.split("://", 1)[1]
    return url


def is_sqlite(url: str) -> bool:
    return make_url(normalize_url(url)).get_backend_name() == "sqlite"


def _sqlite_memory(url: str) -> bool:
    database = make_url(url).database
    return database in (None, "", ":memory:")


def _setup_sqlite(engine: AsyncEngine, *, wal: bool, writes: bool) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _connect(dbapi_conn: Any, _record: Any) -> None:
        # Hand transaction control to SQLAlchemy's "begin" hook below (pysqlite would otherwise
        # open deferred transactions implicitly).
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        if wal:
            cursor.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode: a commit survives a process crash; only an OS crash can lose the last ones.
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.close()

    if not writes:
        return  # readers run each SELECT in autocommit: a WAL snapshot per statement, no locks

    @event.listens_for(engine.sync_engine, "begin")
    def _begin(conn: Any) -> None:
        # Take the write lock up front: a deferred transaction that upgrades later can fail with
        # SQLITE_BUSY at once instead of waiting for busy_timeout.
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def create_engines(url: str) -> Engines:
    url = normalize_url(url)
    if make_url(url).get_backend_name() != "sqlite":
        engine = create_async_engine(url, pool_size=10, max_overflow=10, pool_pre_ping=True)
        return Engines(engine, engine, contextlib.nullcontext())
    if _sqlite_memory(url):
        import asyncio

        # One private in-memory database per store: every user shares the single connection.
        engine = create_async_engine(
            f"sqlite+aiosqlite:///file:mem{uuid.uuid4().hex}?mode=memory&uri=true",
            poolclass=StaticPool,
        )
        _setup_sqlite(engine, wal=False, writes=True)
        return Engines(engine, engine, asyncio.Lock())
    write = create_async_engine(url, pool_size=1, max_overflow=0)
    _setup_sqlite(write, wal=True, writes=True)
    read = create_async_engine(url, pool_size=8, max_overflow=8)
    _setup_sqlite(read, wal=True, writes=False)
    return Engines(write, read, contextlib.nullcontext())


def insert_ignore(table: Table, engine: AsyncEngine, conflict: list[str]) -> Any:
    """INSERT that does nothing when `conflict` columns collide (idempotency keys)."""
    factory: Callable[[Table], Any] = sqlite.insert if engine.dialect.name == "sqlite" else postgresql.insert
    return factory(table).on_conflict_do_nothing(index_elements=conflict)


def upsert_counter(
    table: Table, engine: AsyncEngine, values: dict[str, Any], increments: dict[str, Any]
) -> Any:
    """INSERT `values`, or on a primary-key collision apply `increments` (column -> expression)."""
    factory: Callable[[Table], Any] = sqlite.insert if engine.dialect.name == "sqlite" else postgresql.insert
    keys = [c.name for c in table.primary_key.columns]
    return factory(table).values(**values).on_conflict_do_update(index_elements=keys, set_=increments)
