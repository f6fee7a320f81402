"""The single writer: one connection commits whatever is queued in one transaction (group commit).
The backend provides the connection (a thread's on SQLite, an asyncpg one on PostgreSQL) and tells
other replicas what a batch committed. Event appends of many runs share a transaction; a batch that
fails is retried op by op so one bad op cannot take the others down; a lost connection is replaced
and the batch retried."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError

from server import metrics, tasks
from server.store import statements as st
from server.store.dialect import Backend
from server.store.records import EventRecord

log = logging.getLogger(__name__)
T = TypeVar("T")
MAX_BATCH = 1024
RECONNECT_DELAYS_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0)


# SQLSTATEs of a server that went away or is restarting: connection exceptions, admin/crash shutdown,
# cannot connect now.
_GONE = ("08", "57P01", "57P02", "57P03")


def disconnected(exc: BaseException) -> bool:
    """The connection, not the statement, failed: worth reconnecting and trying the batch again."""
    if isinstance(exc, OSError):
        return True
    if not isinstance(exc, DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    cause = exc.orig.__cause__ if exc.orig is not None else None
    return str(getattr(cause, "sqlstate", "") or "").startswith(_GONE)


@dataclass(slots=True)
class Tx:
    """What a write op sees: the connection of the open transaction and a list of events to
    publish once that transaction commits."""

    conn: Connection
    published: list[EventRecord] = field(default_factory=list)
    # Set by an op that queued a run, so other replicas' dispatchers are told.
    queued: bool = False
    # Runs an op asked to cancel, so the replica executing each is told at once.
    cancels: list[str] = field(default_factory=list)


class StoreClosed(Exception):
    """A write was still queued when the store closed."""


@dataclass(slots=True)
class _Append:
    run_id: str
    owner: str
    events: list[EventRecord]
    future: asyncio.Future[bool]


@dataclass(slots=True)
class _Call:
    fn: Callable[[Tx], Any]
    future: asyncio.Future[Any]


@dataclass(slots=True)
class _Failed:
    error: Exception


_Op = _Append | _Call


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
        self._queue: asyncio.Queue[_Op] = asyncio.Queue(max_queue)
        self._task: asyncio.Task[None] | None = None
        self._batch: list[_Op] = []  # the batch being committed

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
            if isinstance(op, _Append):
                op.future.set_result(False)  # not stored, as after a failed commit
            else:
                op.future.set_exception(StoreClosed("the store closed before this write was committed"))
        await self._db.close(final=True)

    async def call(self, fn: Callable[[Tx], T]) -> T:
        """Run `fn` on the writer's connection inside the next group transaction; returns once that
        transaction committed."""
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Call(fn, future))
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
        await self._queue.put(_Append(run_id, owner, events, future))
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

    async def _settle(self, batch: list[_Op]) -> None:
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
            outcomes = [False if isinstance(op, _Append) else _Failed(exc) for op in batch]
            published = []
        self._on_commit(published)
        for op, outcome in zip(batch, outcomes, strict=True):
            if op.future.done():
                continue
            if isinstance(outcome, _Failed):
                op.future.set_exception(outcome.error)
            else:
                op.future.set_result(outcome)

    async def _commit_batch(self, batch: list[_Op]) -> tuple[list[Any], list[EventRecord]]:
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

    def _commit(self, conn: Connection, batch: list[_Op]) -> tuple[list[Any], list[EventRecord]]:
        try:
            with conn.begin():
                tx = Tx(conn)
                results = self._run(tx, batch)
                self._backend.announce(conn, self._origin, tx.published, tx.queued, tx.cancels)
                return results, tx.published
        except Exception as exc:
            if disconnected(exc):
                raise  # not this batch's fault: reconnect and retry it whole
            if len(batch) == 1:
                log.error("store write failed", exc_info=exc)
                return [False if isinstance(batch[0], _Append) else _Failed(exc)], []
            log.warning("group commit of %d ops failed; retrying one by one", len(batch), exc_info=True)
        outcomes: list[Any] = []
        published: list[EventRecord] = []
        for op in batch:
            done, events = self._commit(conn, [op])
            outcomes += done
            published += events
        return outcomes, published

    def _run(self, tx: Tx, batch: list[_Op]) -> list[Any]:
        results: list[Any] = []
        pending: list[_Append] = []
        for op in batch:
            if isinstance(op, _Append):
                pending.append(op)
                continue
            results += _store_appends(tx, pending)
            pending = []
            results.append(op.fn(tx))
        results += _store_appends(tx, pending)
        return results


def _store_appends(tx: Tx, appends: list[_Append]) -> list[bool]:
    """Store consecutive appends: per run one conditional UPDATE that checks the lease and that the
    first new seq follows the stored last_seq, then one multi-row INSERT for all accepted events."""
    if not appends:
        return []
    groups: dict[str, list[_Append]] = {}
    for op in appends:
        groups.setdefault(op.run_id, []).append(op)
    now = time.time()
    accepted: dict[str, bool] = {}
    rows: list[dict[str, Any]] = []
    for run_id, ops in groups.items():
        events = [e for op in ops for e in op.events]
        accepted[run_id] = _advance(tx.conn, run_id, {op.owner for op in ops}, events, now)
        if accepted[run_id]:
            rows.extend(
                {"run_id": e.run_id, "seq": e.seq, "type": e.type, "data": e.data, "created_at": e.created_at}
                for e in events
            )
            tx.published.extend(events)
    if rows:
        tx.conn.execute(st.INSERT_EVENT, rows)
    return [accepted[op.run_id] for op in appends]


def _advance(conn: Connection, run_id: str, owners: set[str], events: list[EventRecord], now: float) -> bool:
    if not events:
        return True
    contiguous = all(b.seq == a.seq + 1 for a, b in itertools.pairwise(events))
    if len(owners) != 1 or not contiguous:
        return False
    params = {"rid": run_id, "owner": next(iter(owners)), "after": events[0].seq - 1, "last": events[-1].seq}
    return bool(conn.execute(st.ADVANCE, params | {"now": now}).rowcount == 1)
