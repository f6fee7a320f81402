"""Everything that differs between database engines lives here: URLs, connection setup and the
INSERT ... ON CONFLICT constructs. The rest of the store is dialect-neutral SQLAlchemy Core."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, Table, create_engine, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool

SQLITE_BUSY_TIMEOUT_MS = 5000


@dataclass
class Engines:
    """`write`: the writer's engine — synchronous on SQLite (used only by the writer thread: one
    hop per group commit instead of one per statement), asyncpg on PostgreSQL. `read`: the async
    engine for reads, or None for an in-memory database, which exists only inside the writer's
    single connection. `url`: the plain driver URL (for PostgreSQL's LISTEN connection)."""

    write: Engine | AsyncEngine
    read: AsyncEngine | None
    url: str = ""

    @property
    def postgres(self) -> bool:
        return isinstance(self.write, AsyncEngine)

    async def dispose(self) -> None:
        if isinstance(self.write, AsyncEngine):
            await self.write.dispose()
        else:
            self.write.dispose()
        if self.read is not None:
            await self.read.dispose()


def normalize_url(url: str) -> str:
    """Accept `sqlite:///x.db` or `sqlite+aiosqlite:///x.db` alike."""
    return url.replace("sqlite+aiosqlite://", "sqlite://", 1)


def _setup_sqlite(sync_engine: Engine, *, wal: bool, writes: bool) -> None:
    @event.listens_for(sync_engine, "connect")
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

    @event.listens_for(sync_engine, "begin")
    def _begin(conn: Any) -> None:
        # Take the write lock up front: a deferred transaction that upgrades later can fail with
        # SQLITE_BUSY at once instead of waiting for busy_timeout.
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def _postgres(url: URL) -> Engines:
    # pre_ping: a pooled connection that died with a database restart is replaced, not handed out.
    write = create_async_engine(url, pool_size=1, max_overflow=1, pool_pre_ping=True)
    read = create_async_engine(url, pool_size=10, max_overflow=10, pool_pre_ping=True)
    plain = url.set(drivername="postgresql").render_as_string(hide_password=False)
    return Engines(write, read, plain)


def create_engines(url: str) -> Engines:
    parsed = make_url(normalize_url(url))
    if parsed.get_backend_name() == "postgresql":
        if parsed.get_driver_name() != "asyncpg":
            raise ValueError(f"unsupported database URL {url!r}: use postgresql+asyncpg://...")
        return _postgres(parsed)
    if parsed.get_backend_name() != "sqlite":
        raise ValueError(f"unsupported database URL {url!r}: use sqlite:///... or postgresql+asyncpg://...")
    if parsed.database in (None, "", ":memory:"):
        # check_same_thread off: the connection is created and used by the writer thread only, but
        # SQLAlchemy's pool may hand it over from another thread at startup.
        memory = create_engine("sqlite://", poolclass=StaticPool, connect_args={"check_same_thread": False})
        _setup_sqlite(memory, wal=False, writes=True)
        return Engines(memory, None)
    write = create_engine(parsed, pool_size=1, max_overflow=0, connect_args={"check_same_thread": False})
    _setup_sqlite(write, wal=True, writes=True)
    # Reads run in autocommit: there is no transaction to roll back when a connection goes back.
    read = create_async_engine(
        parsed.set(drivername="sqlite+aiosqlite"), pool_size=8, max_overflow=8, pool_reset_on_return=None
    )
    _setup_sqlite(read.sync_engine, wal=True, writes=False)
    return Engines(write, read)


def _insert_factory(engine: Engine | AsyncEngine) -> Callable[[Table], Any]:
    return sqlite.insert if engine.dialect.name == "sqlite" else postgresql.insert


def insert_ignore(table: Table, engine: Engine | AsyncEngine, conflict: list[str]) -> Any:
    """INSERT that does nothing when `conflict` columns collide (idempotency keys)."""
    return _insert_factory(engine)(table).on_conflict_do_nothing(index_elements=conflict)


def upsert_counter(table: Table, engine: Engine | AsyncEngine, counter: str, refresh: list[str]) -> Any:
    """INSERT a row, or on a primary-key collision add one to `counter` and take `refresh` columns
    from the new row."""
    stmt = _insert_factory(engine)(table)
    keys = [c.name for c in table.primary_key.columns]
    updates = {counter: table.c[counter] + 1, **{name: stmt.excluded[name] for name in refresh}}
    return stmt.on_conflict_do_update(index_elements=keys, set_=updates)
