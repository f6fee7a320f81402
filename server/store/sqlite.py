"""The SQLite backend: one process, one writer. The writer's connection is synchronous and owned by
one thread (one thread hop per group commit instead of one per statement); reads use an aiosqlite
pool in WAL mode, or the writer's connection for an in-memory database. The single writer makes
every count exact. SQLite has no NOTIFY: a process sharing the file learns of another's commits by
watching the file's data version (once a second, no table read)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, Table, create_engine, event
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool

from server import tasks
from server.store.migrations import migrate
from server.store.records import EventRecord

T = TypeVar("T")
SQLITE_BUSY_TIMEOUT_MS = 5000
# How often the file is checked for other processes' commits (see SqliteBackend._watch).
WATCH_S = 1.0
# What the run readers map of the file (SQLite caps it at 2 GiB; the rest is read as usual).
READ_MMAP_BYTES = 2**31


def _setup(sync_engine: Engine, *, wal: bool, writes: bool) -> None:
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


def _map_file(sync_engine: Engine) -> None:
    """Map the database file into memory (up to SQLite's limit, 2 GiB): a page a read touches is then
    a memory access, not a read() into the connection's small page cache. Batches of random ids land
    on leaf pages no cache holds, so without it their cost grew with the table."""

    @event.listens_for(sync_engine, "connect")
    def _connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.execute(f"PRAGMA mmap_size={READ_MMAP_BYTES}").close()


def in_thread(executor: ThreadPoolExecutor, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
    """`fn(*args)` in one of `executor`'s threads, its outcome handed to the loop in one callback.
    (run_in_executor chains a concurrent future to an asyncio one: four more callbacks on the loop
    per hop, and the writer makes two hops a run.) Like run_in_executor's, a cancelled await does
    not stop `fn`; its outcome is then dropped."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def work() -> None:
        try:
            result = fn(*args)
        except BaseException as exc:
            loop.call_soon_threadsafe(_fail, future, exc)
        else:
            loop.call_soon_threadsafe(_succeed, future, result)

    executor.submit(work)
    return future


def _succeed(future: asyncio.Future[T], result: T) -> None:
    if not future.done():
        future.set_result(result)


def _fail(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)


def _data_version(conn: Connection) -> int:
    # On the DB-API connection, in autocommit: through SQLAlchemy it would begin a transaction,
    # which takes the write lock here (BEGIN IMMEDIATE).
    raw: Any = conn.connection.dbapi_connection
    return int(raw.execute("PRAGMA data_version").fetchone()[0])


class ThreadWriterConnection:
    """A sync connection used only from one thread."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store-writer")
        self._conn: Connection | None = None

    async def _in_thread(self, fn: Callable[..., T], *args: Any) -> T:
        return await in_thread(self._thread, fn, *args)

    async def open(self) -> None:
        self._conn = await self._in_thread(self._engine.connect)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        assert self._conn is not None
        return await self._in_thread(fn, self._conn, *args)

    async def close(self, final: bool = False) -> None:
        if self._conn is not None:
            await self._in_thread(self._conn.close)
            self._conn = None
        if final:
            self._thread.shutdown(wait=True)


class SqliteBackend:
    def __init__(self, url: URL) -> None:
        self.read: AsyncEngine | None
        self._direct: Engine | None
        if url.database in (None, "", ":memory:"):
            # check_same_thread off: the connection is created and used by the writer thread only,
            # but SQLAlchemy's pool may hand it over from another thread at startup.
            self.write = create_engine(
                "sqlite://", poolclass=StaticPool, connect_args={"check_same_thread": False}
            )
            _setup(self.write, wal=False, writes=True)
            self.read = None  # the database exists only inside the writer's connection
            self._direct = None
            return
        self.write = create_engine(
            url, pool_size=1, max_overflow=0, connect_args={"check_same_thread": False}
        )
        _setup(self.write, wal=True, writes=True)
        # Reads run in autocommit: there is no transaction to roll back when a connection goes back.
        self.read = create_async_engine(
            url.set(drivername="sqlite+aiosqlite"), pool_size=8, max_overflow=8, pool_reset_on_return=None
        )
        _setup(self.read.sync_engine, wal=True, writes=False)
        # The run reads (server/store/reads.py) on plain sqlite3 connections, each read whole in one
        # reader thread: one thread hop instead of the four or five aiosqlite makes per statement,
        # each of which waits for a core when the machine is busy.
        self._direct = create_engine(
            url,
            pool_size=8,
            max_overflow=8,
            pool_reset_on_return=None,
            pool_use_lifo=True,  # the connection used last: its page cache and file map are warm
            connect_args={"check_same_thread": False},
        )
        _setup(self._direct, wal=True, writes=False)
        _map_file(self._direct)
        self._readers = ThreadPoolExecutor(max_workers=8, thread_name_prefix="store-reader")

    def run_read(self, fn: Callable[[Connection], T]) -> Awaitable[T] | None:
        """`fn(connection)` on a reader connection in a reader thread; None for an in-memory
        database, which only the writer's connection can read."""
        direct = self._direct
        if direct is None:
            return None

        def read() -> T:
            with direct.connect() as conn:
                return fn(conn)

        return in_thread(self._readers, read)

    def writer(self) -> ThreadWriterConnection:
        self._writer = ThreadWriterConnection(self.write)
        return self._writer

    async def migrate(self) -> None:
        await asyncio.to_thread(migrate, self.write)

    def insert(self, table: Table) -> Any:
        return sqlite.insert(table)

    def serialized(self, conn: Connection) -> bool:
        return True  # the single writer is the only one counting

    def announce(
        self,
        conn: Connection,
        origin: str,
        published: Sequence[EventRecord],
        queued: bool,
        cancels: Sequence[str] = (),
    ) -> None:
        pass  # nothing to notify with: other processes poll

    @contextlib.asynccontextmanager
    async def listen(
        self,
        origin: str,
        on_events: Callable[[str], None],
        on_queue: Callable[[], None],
        on_cancel: Callable[[str], None],
        on_health: Callable[[bool], None],
    ) -> AsyncIterator[None]:
        watch = asyncio.create_task(self._watch(on_queue, on_health), name="sqlite-watch")
        try:
            yield
        finally:
            await tasks.stop(watch)

    async def _watch(self, on_queue: Callable[[], None], on_health: Callable[[bool], None]) -> None:
        """SQLite has no NOTIFY, and processes may share a file. Everything this process writes is
        committed by the writer's connection, so that connection's `PRAGMA data_version` changes
        only when another process commits to the file: then the queue and every waiter re-read."""
        last: int | None = None
        while True:
            await asyncio.sleep(WATCH_S)
            try:
                version = await self._writer.run(_data_version)
            except Exception:  # closed, or busy: look again next time
                continue
            if last is not None and version != last:
                on_queue()
                on_health(True)
            last = version

    async def dispose(self) -> None:
        self.write.dispose()
        if self.read is not None:
            await self.read.dispose()
        if self._direct is not None:
            self._readers.shutdown(wait=True)
            self._direct.dispose()
