"""The single writer: one task owns the write connection and commits whatever is queued in one
transaction (group commit). Event appends of many runs share a transaction; a batch that fails is
retried op by op so one bad op cannot take the others down with it."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy import and_, insert, update
from sqlalchemy.ext.asyncio import AsyncConnection

from server.store.records import RUNNING, EventRecord
from server.store.tables import RUN, RUN_EVENT

log = logging.getLogger(__name__)
T = TypeVar("T")
MAX_BATCH = 1024


@dataclass(slots=True)
class Tx:
    """What a write op sees: the connection of the open transaction and a list of events to
    publish once that transaction commits."""

    conn: AsyncConnection
    published: list[EventRecord] = field(default_factory=list)


@dataclass(slots=True)
class _Append:
    run_id: str
    owner: str
    events: list[EventRecord]
    future: asyncio.Future[bool]


@dataclass(slots=True)
class _Call:
    fn: Callable[[Tx], Awaitable[Any]]
    future: asyncio.Future[Any]


_Op = _Append | _Call


class Writer:
    def __init__(
        self,
        connect: Callable[[], contextlib.AbstractAsyncContextManager[AsyncConnection]],
        on_commit: Callable[[list[EventRecord]], None],
        max_queue: int = 20_000,
    ) -> None:
        self._connect = connect
        self._on_commit = on_commit
        self._queue: asyncio.Queue[_Op] = asyncio.Queue(max_queue)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="store-writer")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def call(self, fn: Callable[[Tx], Awaitable[T]]) -> T:
        """Run `fn` in the next group transaction; returns once that transaction committed."""
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Call(fn, future))
        return await future

    async def append(self, run_id: str, owner: str, events: list[EventRecord]) -> asyncio.Future[bool]:
        """Queue events of a RUNNING run leased by `owner`. The future says whether they were stored:
        False when the lease was lost or an earlier append of the run was not (seq stays gap-free)."""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Append(run_id, owner, events, future))
        return future

    async def _loop(self) -> None:
        async with self._connect() as conn:
            while True:
                batch = [await self._queue.get()]
                while len(batch) < MAX_BATCH and not self._queue.empty():
                    batch.append(self._queue.get_nowait())
                await self._commit(conn, batch)

    async def _commit(self, conn: AsyncConnection, batch: list[_Op]) -> None:
        try:
            results, published = await self._run_batch(conn, batch)
        except Exception as exc:
            if len(batch) == 1:
                self._fail(batch[0], exc)
                return
            log.warning("group commit of %d ops failed; retrying one by one", len(batch), exc_info=True)
            for op in batch:
                await self._commit(conn, [op])
            return
        self._on_commit(published)
        for op, result in zip(batch, results, strict=True):
            if not op.future.done():
                op.future.set_result(result)

    def _fail(self, op: _Op, exc: Exception) -> None:
        log.error("store write failed", exc_info=exc)
        if op.future.done():
            return
        if isinstance(op, _Append):
            op.future.set_result(False)
        else:
            op.future.set_exception(exc)

    async def _run_batch(
        self, conn: AsyncConnection, batch: list[_Op]
    ) -> tuple[list[Any], list[EventRecord]]:
        results: list[Any] = []
        async with _transaction(conn):
            tx = Tx(conn)
            pending: list[_Append] = []
            for op in batch:
                if isinstance(op, _Append):
                    pending.append(op)
                    continue
                results.extend(await _store_appends(tx, pending))
                pending = []
                results.append(await op.fn(tx))
            results.extend(await _store_appends(tx, pending))
        return results, tx.published


@contextlib.asynccontextmanager
async def _transaction(conn: AsyncConnection) -> AsyncIterator[None]:
    async with conn.begin():
        yield


async def _store_appends(tx: Tx, appends: list[_Append]) -> list[bool]:
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
        accepted[run_id] = await _advance(tx.conn, run_id, {op.owner for op in ops}, events, now)
        if accepted[run_id]:
            rows.extend(
                {"run_id": e.run_id, "seq": e.seq, "type": e.type, "data": e.data, "created_at": e.created_at}
                for e in events
            )
            tx.published.extend(events)
    if rows:
        await tx.conn.execute(insert(RUN_EVENT), rows)
    return [accepted[op.run_id] for op in appends]


async def _advance(
    conn: AsyncConnection, run_id: str, owners: set[str], events: list[EventRecord], now: float
) -> bool:
    if not events:
        return True
    contiguous = all(b.seq == a.seq + 1 for a, b in itertools.pairwise(events))
    if len(owners) != 1 or not contiguous:
        return False
    result = await conn.execute(
        update(RUN)
        .where(
            and_(
                RUN.c.id == run_id,
                RUN.c.lease_owner == next(iter(owners)),
                RUN.c.state == RUNNING,
                RUN.c.last_seq == events[0].seq - 1,
            )
        )
        .values(last_seq=events[-1].seq, updated_at=now)
    )
    return bool(result.rowcount == 1)
