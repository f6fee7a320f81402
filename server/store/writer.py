"""The single writer: one connection commits whatever is queued in one transaction (group commit).
The backend provides the connection (a thread's on SQLite, an asyncpg one on PostgreSQL) and tells
other replicas what a batch committed. What a batch does with its ops is server/store/batch.py: event
appends, new runs and state changes of many runs share each statement on PostgreSQL
(server/store/pg_writes.py). A batch that fails is retried op by op so one bad op cannot take the
others down; a lost connection is replaced and the batch retried."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError, PendingRollbackError

from server import metrics, tasks
from server.store.batch import (
    Admit,
    Append,
    Call,
    Change,
    ConnectionLost,
    Op,
    Steps,
    gone,
    run_batch,
)
from server.store.batch import Tx as Tx  # what a write op sees (sql.py, deliveries.py)
from server.store.dialect import Backend, insert_ignore, upsert_counter
from server.store.pg_writes import PgSteps, broken
from server.store.records import EventRecord, NewRun, Outcome, RunRecord
from server.store.sqlite_steps import SqliteStatements, SqliteSteps
from server.store.tables import RUN, SESSION

log = logging.getLogger(__name__)
T = TypeVar("T")
MAX_BATCH = 1024
RECONNECT_DELAYS_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0)


def disconnected(exc: BaseException) -> bool:
    """The connection, not the statement, failed: worth reconnecting and trying the batch again.
    (A connection SQLAlchemy invalidated stays unusable until rolled back: reconnecting mends it.)"""
    if isinstance(exc, OSError | ConnectionLost | PendingRollbackError) or gone(exc):
        return True
    if not isinstance(exc, DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    cause = exc.orig.__cause__ if exc.orig is not None else None
    return cause is not None and (gone(cause) or broken(cause))


class StoreClosed(Exception):
    """A write was still queued when the store closed."""


@dataclass(slots=True)
class _Failed:
    error: Exception


class Writer:
    def __init__(
        self,
        backend: Backend,
        on_commit: Callable[[list[EventRecord]], None],
        max_queue: int = 20_000,
        origin: str = "",
    ) -> None:
        self._backend = backend
        self._db = backend.writer()
        self._origin = origin  # marks this store's own announcements to other replicas
        self._on_commit = on_commit
        self._queue: asyncio.Queue[Op] = asyncio.Queue(max_queue)
        self._task: asyncio.Task[None] | None = None
        self._batch: list[Op] = []  # the batch being committed
        # The statements that differ by dialect (sql.py runs them too).
        self.insert_run_ignore = insert_ignore(backend, RUN, ["org_id", "idempotency_key"]).returning(*RUN.c)
        self.count_session = upsert_counter(backend, SESSION, "run_count", ["updated_at"])
        self._sqlite: SqliteStatements | None = None

    async def start(self) -> None:
        await self._db.open()
        self._task = asyncio.create_task(self._loop(), name="store-writer")

    async def stop(self, drain_s: float = 5.0) -> None:
        """Commit what is queued (for up to `drain_s`), then stop. An op that could not be committed
        by then fails with StoreClosed rather than leaving its caller waiting forever."""
        if self._task is not None and not self._task.done():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(drain_s):
                    await self._queue.join()
        left = list(self._batch)  # before the loop's cleanup forgets it
        await tasks.stop(self._task)
        while not self._queue.empty():
            left.append(self._queue.get_nowait())
        for op in left:
            if op.future.done():
                continue
            if isinstance(op, Append):
                op.future.set_result(False)  # not stored, as after a failed commit
            else:
                op.future.set_exception(StoreClosed("the store closed before this write was committed"))
        await self._db.close(final=True)

    async def call(self, fn: Callable[[Tx], T]) -> T:
        """Run `fn` on the writer's connection inside the next group transaction; returns once that
        transaction committed."""
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        await self._queue.put(Call(fn, future))
        return await future

    async def admit(self, new: NewRun, lease: tuple[str, float] | None) -> tuple[RunRecord, bool] | None:
        """Store a new run (batch.Admit) in the next group transaction."""
        future: asyncio.Future[tuple[RunRecord, bool] | None] = asyncio.get_running_loop().create_future()
        await self._queue.put(Admit(new, lease, future))
        return await future

    async def change(
        self,
        run_id: str,
        outcome: Outcome,
        *,
        states: tuple[str, ...],
        owner: str | None,
        lease_before: float | None,
        deadline_before: float | None,
        seq: int | None,
        webhook: Callable[[RunRecord, float], dict[str, Any]],
    ) -> RunRecord | None:
        """Apply a conditional state change (batch.Change) in the next group transaction."""
        future: asyncio.Future[RunRecord | None] = asyncio.get_running_loop().create_future()
        op = Change(run_id, outcome, states, owner, lease_before, deadline_before, seq, webhook, future)
        await self._queue.put(op)
        return await future

    async def read(self, fn: Callable[[Connection], T]) -> T:
        """Run `fn` on the writer's connection outside any transaction (in-memory databases)."""

        def run(conn: Connection) -> T:
            try:
                return fn(conn)
            finally:
                conn.rollback()  # end the transaction the read began, so the next batch can begin

        return await self._db.run(run)

    async def append(self, run_id: str, owner: str, events: list[EventRecord]) -> asyncio.Future[bool]:
        """Queue events of a RUNNING run leased by `owner`. The future says whether they were stored:
        False when the lease was lost or an earlier append of the run was not (seq stays gap-free)."""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        await self._queue.put(Append(run_id, owner, events, future))
        return future

    async def _loop(self) -> None:
        while True:
            self._batch = batch = [await self._queue.get()]
            while len(batch) < MAX_BATCH and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await self._settle(batch)
            finally:
                self._batch = []
                for _ in batch:
                    self._queue.task_done()

    async def _settle(self, batch: list[Op]) -> None:
        """Commit a batch and resolve its futures."""
        started = time.perf_counter()
        try:
            outcomes, published = await self._commit_batch(batch)
            metrics.WRITER_BATCH.observe(len(batch))
            metrics.WRITER_COMMIT.observe(time.perf_counter() - started)
        except Exception as exc:
            # The database stayed unreachable: fail these ops (appends report "not stored", so
            # their runs end EVENTS_LOST) and keep the writer alive for when it is back.
            log.error("store write failed: %s", exc)
            outcomes = [False if isinstance(op, Append) else _Failed(exc) for op in batch]
            published = []
        self._on_commit(published)
        for op, outcome in zip(batch, outcomes, strict=True):
            if op.future.done():
                continue
            if isinstance(outcome, _Failed):
                op.future.set_exception(outcome.error)
            else:
                op.future.set_result(outcome)

    async def _commit_batch(self, batch: list[Op]) -> tuple[list[Any], list[EventRecord]]:
        """Commit a batch; when the connection was lost (a database restart), reconnect and retry."""
        for delay in (*RECONNECT_DELAYS_S, None):
            try:
                return await self._db.run(self._commit, batch)
            except Exception as exc:
                if not disconnected(exc) or delay is None:
                    raise
                log.warning("store connection lost; reconnecting in %.2fs", delay)
                await asyncio.sleep(delay)
                await self._db.close()
                with contextlib.suppress(Exception):
                    await self._db.open()
        raise AssertionError("unreachable")

    # ---- on the writer's connection -----------------------------------------------------

    def _steps(self, conn: Connection) -> Steps:
        """PostgreSQL: a statement per set of rows, on asyncpg directly (a network round trip per
        statement); SQLite: one per row, on the thread's connection."""
        if conn.dialect.name == "postgresql":
            return PgSteps(conn)
        if self._sqlite is None:
            self._sqlite = SqliteStatements(conn.dialect, self.insert_run_ignore, self.count_session)
        return SqliteSteps(conn, self._sqlite)

    def _commit(self, conn: Connection, batch: list[Op]) -> tuple[list[Any], list[EventRecord]]:
        try:
            steps = self._steps(conn)
            with steps.transaction():
                tx = Tx(conn)
                results = run_batch(tx, steps, batch)
                self._backend.announce(conn, self._origin, tx.published, tx.queued, tx.cancels)
                return results, tx.published
        except Exception as exc:
            if disconnected(exc):
                raise  # not this batch's fault: reconnect and retry it whole
            if len(batch) == 1:
                log.error("store write failed", exc_info=exc)
                return [False if isinstance(batch[0], Append) else _Failed(exc)], []
            log.warning("group commit of %d ops failed; retrying one by one", len(batch), exc_info=True)
        outcomes: list[Any] = []
        published: list[EventRecord] = []
        for op in batch:
            done, events = self._commit(conn, [op])
            outcomes += done
            published += events
        return outcomes, published
