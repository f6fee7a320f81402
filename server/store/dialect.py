"""The one seam between the store and a database engine: a `Backend` owns what differs between
SQLite (server/store/sqlite.py) and PostgreSQL (server/store/postgres.py) — engines, the writer's
connection, migrations, upsert constructs, when a capped claim may count, NOTIFY and LISTEN. The
rest of the store is dialect-neutral SQLAlchemy Core written against this protocol."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol, TypeVar

from sqlalchemy import Connection, Table
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncEngine

from server.store.postgres import PostgresBackend
from server.store.records import EventRecord
from server.store.sqlite import SqliteBackend

T = TypeVar("T")


class WriterConnection(Protocol):
    """The single writer's connection: sync SQLAlchemy code run on it, one call per group commit."""

    async def open(self) -> None: ...

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(connection, *args)` on the connection."""
        ...

    async def close(self, final: bool = False) -> None:
        """Close the connection (to reconnect); `final` also frees what the next open would reuse."""
        ...


class Backend(Protocol):
    @property
    def read(self) -> AsyncEngine | None:
        """The reader pool, or None when reads must go through the writer's connection (an
        in-memory database exists only there)."""
        ...

    def writer(self) -> WriterConnection:
        """A new, unopened connection for the store's single writer."""
        ...

    async def migrate(self) -> None:
        """Apply the numbered migrations (server/store/migrations.py) not applied yet."""
        ...

    def insert(self, table: Table) -> Any:
        """The dialect's INSERT construct (with on_conflict_do_nothing / on_conflict_do_update)."""
        ...

    def serialized(self, conn: Connection) -> bool:
        """Whether this write transaction may count and claim capped runs now: only one transaction
        at a time may, and one that cannot does not wait (server/store/quota.py)."""
        ...

    def announce(
        self,
        conn: Connection,
        origin: str,
        published: Sequence[EventRecord],
        queued: bool,
        cancels: Sequence[str] = (),
    ) -> None:
        """Inside a write transaction: tell other replicas, at commit, which runs got events, whether
        a run was queued and which runs were asked to cancel (`origin` marks this store's own)."""
        ...

    def listen(
        self,
        origin: str,
        on_events: Callable[[str], None],
        on_queue: Callable[[], None],
        on_cancel: Callable[[str], None],
        on_health: Callable[[bool], None],
    ) -> AbstractAsyncContextManager[None]:
        """While open, other replicas' announcements call `on_events(run_id)`, `on_queue()` and
        `on_cancel(run_id)`; `on_health(up)` when they stop or start reaching this process."""
        ...

    async def dispose(self) -> None: ...


def normalize_url(url: str) -> str:
    """Accept `sqlite:///x.db` or `sqlite+aiosqlite:///x.db` alike."""
    return url.replace("sqlite+aiosqlite://", "sqlite://", 1)


class DatabaseUrlError(ValueError):
    """A database URL that names no supported backend."""


def backend_for(url: str) -> Backend:
    """The backend a database URL names: sqlite:///path, sqlite:///:memory: or postgresql+asyncpg://."""
    try:
        parsed = make_url(normalize_url(url))
    except ArgumentError:
        raise DatabaseUrlError(
            f"{url!r} is not a database URL: use sqlite:///path.db or postgresql+asyncpg://..."
        ) from None
    if parsed.get_backend_name() == "postgresql":
        if parsed.get_driver_name() != "asyncpg":
            raise DatabaseUrlError(f"unsupported database URL {url!r}: use postgresql+asyncpg://...")
        return PostgresBackend(parsed)
    if parsed.get_backend_name() != "sqlite":
        raise DatabaseUrlError(
            f"unsupported database URL {url!r}: use sqlite:///... or postgresql+asyncpg://..."
        )
    return SqliteBackend(parsed)


def insert_ignore(backend: Backend, table: Table, conflict: list[str]) -> Any:
    """INSERT that does nothing when `conflict` columns collide (idempotency keys)."""
    return backend.insert(table).on_conflict_do_nothing(index_elements=conflict)


def upsert_counter(backend: Backend, table: Table, counter: str, refresh: list[str]) -> Any:
    """INSERT a row, or on a primary-key collision add one to `counter` and take `refresh` columns
    from the new row."""
    stmt = backend.insert(table)
    keys = [c.name for c in table.primary_key.columns]
    updates = {counter: table.c[counter] + 1, **{name: stmt.excluded[name] for name in refresh}}
    return stmt.on_conflict_do_update(index_elements=keys, set_=updates)
