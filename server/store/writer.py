"""The single writer: one thread owns the write connection and commits whatever is queued in one
transaction (group commit), one thread hop per batch. Event appends of many runs share a
transaction; a batch that fails is retried op by op so one bad op cannot take the others down."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine

from server.store import statements as st
from server.store.records import EventRecord

log = logging.getLogger(__name__)
T = TypeVar("T")
MAX_BATCH = 1024


@dataclass(slots=True)
class Tx:
    """What a write op sees: the connection of the open transaction and a list of events to
    publish once that transaction commits."""

    conn: Connection
    published: list[EventRecord] = field(default_factory=list)


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
        self, engine: Engine, on_commit: Callable[[list[EventRecord]], None], max_queue: int = 20_000
    ) -> None:
        self._engine = engine
        self._on_commit = on_commit
        self._queue: asyncio.Queue[_Op] = asyncio.Queue(max_queue)
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store-writer")
        self._conn: Connection | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._conn = await self._in_thread(self._engine.connect)
        self._task = asyncio.create_task(self._loop(), name="store-writer")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._conn is not None:
            await self._in_thread(self._conn.close)
        self._thread.shutdown(wait=True)

    async def _in_thread(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    async def call(self, fn: Callable[[Tx], T]) -> T:
        """Run `fn` in the writer thread inside the next group transaction; returns once that
        transaction committed."""
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Call(fn, future))
        return await future

    async def read(self, fn: Callable[[Connection], T]) -> T:
        """Run `fn` on the writer's connection outside any transaction (in-memory databases)."""
        conn = self._conn
        assert conn is not None

        def run() -> T:
            try:
                return fn(conn)
            finally:
                conn.rollback()  # end the transaction the read began, so the next batch can begin

        return await self._in_thread(run)

    async def append(self, run_id: str, owner: str, events: list[EventRecord]) -> asyncio.Future[bool]:
        """Queue events of a RUNNING run leased by `owner`. The future says whether they were stored:
        False when the lease was lost or an earlier append of the run was not (seq stays gap-free)."""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Append(run_id, owner, events, future))
        return future

    async def _loop(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < MAX_BATCH and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            outcomes, published = await self._in_thread(self._commit, batch)
            self._on_commit(published)
            for op, outcome in zip(batch, outcomes, strict=True):
                if op.future.done():
                    continue
                if isinstance(outcome, _Failed):
                    op.future.set_exception(outcome.error)
                else:
                    op.future.set_result(outcome)

    # ---- in the writer thread -----------------------------------------------------------

    def _commit(self, batch: list[_Op]) -> tuple[list[Any], list[EventRecord]]:
        assert self._conn is not None
        try:
            with self._conn.begin():
                tx = Tx(self._conn)
                return self._run(tx, batch), tx.published
        except Exception as exc:
            if len(batch) == 1:
                log.error("store write failed", exc_info=exc)
                return [False if isinstance(batch[0], _Append) else _Failed(exc)], []
            log.warning("group commit of %d ops failed; retrying one by one", len(batch), exc_info=True)
        outcomes: list[Any] = []
        published: list[EventRecord] = []
        for op in batch:
            done, events = self._commit([op])
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
