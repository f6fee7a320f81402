"""The store: every SQL statement the service runs. Dialect-neutral SQLAlchemy Core; writes go
through the group-committing Writer, reads through a pool of reader connections."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from typing import Any

from sqlalchemy import ColumnElement, and_, delete, func, insert, or_, select, update
from sqlalchemy.engine import Row

from server.store import dialect
from server.store.migrations import migrate
from server.store.records import (
    PAUSED,
    QUEUED,
    RUNNING,
    START,
    TERMINAL,
    EventRecord,
    NewRun,
    Outcome,
    RunFilter,
    RunRecord,
)
from server.store.tables import RUN, RUN_EVENT, SESSION
from server.store.writer import Tx, Writer

Publish = Callable[[list[EventRecord]], None]


def _record(row: Row[Any]) -> RunRecord:
    return RunRecord(**row._mapping)


def _event(row: Row[Any]) -> EventRecord:
    return EventRecord(row.run_id, row.seq, row.type, row.data, row.created_at)


def _ref(ref: str) -> ColumnElement[bool]:
    """A run is named by its id or by its integer number."""
    column: ColumnElement[bool] = RUN.c.number == int(ref) if ref.isdigit() else RUN.c.id == ref
    return column


class SqlStore:
    def __init__(self, engines: dialect.Engines, publish: Publish) -> None:
        self._engines = engines
        self._writer = Writer(engines.writer_connection, publish)

    @classmethod
    @contextlib.asynccontextmanager
    async def open(cls, url: str, publish: Publish) -> AsyncIterator[SqlStore]:
        engines = dialect.create_engines(url)
        try:
            await migrate(engines.write)
            store = cls(engines, publish)
            await store._writer.start()
            try:
                yield store
            finally:
                await store._writer.stop()
        finally:
            await engines.dispose()

    @property
    def dialect_name(self) -> str:
        return self._engines.write.dialect.name

    # ---- submission -------------------------------------------------------------------

    async def create_run(self, new: NewRun) -> tuple[RunRecord, bool]:
        """Insert a QUEUED run; with an idempotency key already taken, return the existing run
        and False instead."""
        now = time.time()
        values = {
            **{k: getattr(new, k) for k in NewRun.__slots__},
            "state": QUEUED,
            "attempt": 1,
            "deadline": now + new.timeout_s,
            "last_seq": 1,
            "cancel_requested": False,
            "created_at": now,
            "updated_at": now,
        }

        async def op(tx: Tx) -> tuple[RunRecord, bool]:
            stmt = (
                dialect.insert_ignore(RUN, self._engines.write, ["org_id", "idempotency_key"])
                if new.idempotency_key
                else insert(RUN)
            )
            row = (await tx.conn.execute(stmt.values(**values).returning(*RUN.c))).first()
            if row is None:
                existing = await tx.conn.execute(
                    select(RUN).where(
                        RUN.c.org_id == new.org_id, RUN.c.idempotency_key == new.idempotency_key
                    )
                )
                return _record(existing.one()), False
            await tx.conn.execute(self._session_upsert(new, now))
            # START is stored with the run, so every run's log (even one cancelled while queued)
            # begins with it and a stream can send it at once.
            start = EventRecord(new.id, 1, START, {"session_id": new.session_id, "attempt": 1}, now)
            await tx.conn.execute(insert(RUN_EVENT).values(**_event_values(start)))
            tx.published.append(start)
            return _record(row), True

        return await self._writer.call(op)

    def _session_upsert(self, new: NewRun, now: float) -> Any:
        return dialect.upsert_counter(
            SESSION,
            self._engines.write,
            {
                "id": new.session_id,
                "org_id": new.org_id,
                "user_id": new.user_id,
                "agent_id": new.agent_id,
                "run_count": 1,
                "created_at": now,
                "updated_at": now,
            },
            {"run_count": SESSION.c.run_count + 1, "updated_at": now},
        )

    # ---- the queue ----------------------------------------------------------------------

    async def claim(self, owner: str, limit: int, lease_s: float) -> list[RunRecord]:
        """Lease up to `limit` of the oldest QUEUED runs to `owner` (SKIP LOCKED where supported)."""
        if limit <= 0:
            return []

        async def op(tx: Tx) -> list[RunRecord]:
            now = time.time()
            oldest = (
                select(RUN.c.number)
                .where(RUN.c.state == QUEUED)
                .order_by(RUN.c.number)
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
            result = await tx.conn.execute(
                update(RUN)
                .where(RUN.c.number.in_(oldest.scalar_subquery()), RUN.c.state == QUEUED)
                .values(
                    state=RUNNING,
                    lease_owner=owner,
                    lease_expires_at=now + lease_s,
                    started_at=func.coalesce(RUN.c.started_at, now),
                    updated_at=now,
                    cancel_requested=False,
                )
                .returning(*RUN.c)
            )
            return sorted((_record(r) for r in result), key=lambda r: r.number)

        return await self._writer.call(op)

    async def renew(self, owner: str, lease_s: float) -> list[str]:
        """Extend every lease `owner` holds; returns the ids of its runs someone asked to cancel."""

        async def op(tx: Tx) -> list[str]:
            now = time.time()
            await tx.conn.execute(
                update(RUN)
                .where(RUN.c.lease_owner == owner, RUN.c.state == RUNNING)
                .values(lease_expires_at=now + lease_s)
            )
            rows = await tx.conn.execute(
                select(RUN.c.id).where(
                    RUN.c.lease_owner == owner, RUN.c.state == RUNNING, RUN.c.cancel_requested.is_(True)
                )
            )
            return list(rows.scalars())

        return await self._writer.call(op)

    async def request_cancel(self, run_id: str) -> bool:
        async def op(tx: Tx) -> bool:
            result = await tx.conn.execute(
                update(RUN).where(RUN.c.id == run_id, RUN.c.state == RUNNING).values(cancel_requested=True)
            )
            return bool(result.rowcount == 1)

        return await self._writer.call(op)

    async def overdue(self, now: float, limit: int = 500) -> list[RunRecord]:
        """Non-terminal runs past their deadline, and RUNNING runs whose lease expired."""
        async with self._engines.reader() as conn:
            rows = await conn.execute(
                select(RUN)
                .where(
                    or_(
                        and_(RUN.c.state.in_((QUEUED, RUNNING, PAUSED)), RUN.c.deadline < now),
                        and_(RUN.c.state == RUNNING, RUN.c.lease_expires_at < now),
                    )
                )
                .limit(limit)
            )
            return [_record(r) for r in rows]

    # ---- events and state changes -------------------------------------------------------

    async def append(self, run_id: str, owner: str, events: list[EventRecord]) -> Any:
        return await self._writer.append(run_id, owner, events)

    async def transition(
        self,
        run_id: str,
        outcome: Outcome,
        *,
        states: Iterable[str],
        where: Sequence[ColumnElement[bool]] = (),
    ) -> RunRecord | None:
        """One conditional UPDATE from one of `states` to `outcome.state`, plus the outcome's event
        at the next seq, in one transaction. None when the run was not in those states."""
        states = tuple(states)

        async def op(tx: Tx) -> RunRecord | None:
            return await self._transition(tx, run_id, outcome, states, where)

        return await self._writer.call(op)

    async def _transition(
        self,
        tx: Tx,
        run_id: str,
        outcome: Outcome,
        states: tuple[str, ...],
        where: Sequence[ColumnElement[bool]],
    ) -> RunRecord | None:
        now = time.time()
        values: dict[str, Any] = {
            "state": outcome.state,
            "updated_at": now,
            "last_seq": RUN.c.last_seq + 1,
            **outcome.extra,
        }
        for name in ("result", "error_reason", "error_message", "pending_action", "agent_state"):
            if getattr(outcome, name) is not None:
                values[name] = getattr(outcome, name)
        if outcome.state in TERMINAL:
            values |= {"completed_at": now, "lease_owner": None, "lease_expires_at": None}
        row = (
            await tx.conn.execute(
                update(RUN)
                .where(RUN.c.id == run_id, RUN.c.state.in_(states), *where)
                .values(**values)
                .returning(*RUN.c)
            )
        ).first()
        if row is None:
            return None
        record = _record(row)
        event = EventRecord(run_id, record.last_seq, outcome.event_type, outcome.event_data, now)
        await tx.conn.execute(insert(RUN_EVENT).values(**_event_values(event)))
        tx.published.append(event)
        return record

    async def decide(self, run_id: str, tool_call_id: str, decision: dict[str, Any]) -> RunRecord | None:
        """PAUSED -> QUEUED with `decision` recorded, if `tool_call_id` is the pending call."""

        async def op(tx: Tx) -> RunRecord | None:
            now = time.time()
            current = (
                await tx.conn.execute(
                    select(RUN.c.decisions, RUN.c.pending_action)
                    .where(RUN.c.id == run_id, RUN.c.state == PAUSED)
                    .with_for_update()
                )
            ).first()
            if current is None or (current.pending_action or {}).get("tool_call_id") != tool_call_id:
                return None
            row = (
                await tx.conn.execute(
                    update(RUN)
                    .where(RUN.c.id == run_id, RUN.c.state == PAUSED)
                    .values(
                        state=QUEUED,
                        resume=decision,
                        decisions=[*(current.decisions or []), decision],
                        updated_at=now,
                    )
                    .returning(*RUN.c)
                )
            ).first()
            return _record(row) if row is not None else None

        return await self._writer.call(op)

    async def delete_run(self, run_id: str) -> bool:
        """Delete a terminal run and its events; False when it is not terminal (or gone)."""

        async def op(tx: Tx) -> bool:
            result = await tx.conn.execute(delete(RUN).where(RUN.c.id == run_id, RUN.c.state.in_(TERMINAL)))
            if result.rowcount != 1:
                return False
            await tx.conn.execute(delete(RUN_EVENT).where(RUN_EVENT.c.run_id == run_id))
            return True

        return await self._writer.call(op)

    # ---- reads --------------------------------------------------------------------------

    async def get_run(self, ref: str) -> RunRecord | None:
        async with self._engines.reader() as conn:
            row = (await conn.execute(select(RUN).where(_ref(ref)))).first()
        return _record(row) if row is not None else None

    async def get_runs(self, refs: Sequence[str]) -> dict[str, RunRecord]:
        """Runs by id or number; the result maps each found ref to its run."""
        ids = [r for r in refs if not r.isdigit()]
        numbers = [int(r) for r in refs if r.isdigit()]
        if not refs:
            return {}
        async with self._engines.reader() as conn:
            rows = await conn.execute(select(RUN).where(or_(RUN.c.id.in_(ids), RUN.c.number.in_(numbers))))
            records = [_record(r) for r in rows]
        found: dict[str, RunRecord] = {}
        for record in records:
            found[record.id] = record
            found[str(record.number)] = record
        return found

    async def list_runs(
        self, flt: RunFilter, *, before_number: int | None, limit: int
    ) -> tuple[list[RunRecord], int]:
        conditions = _filter_conditions(flt)
        page = select(RUN).where(*conditions)
        if before_number is not None:
            page = page.where(RUN.c.number < before_number)
        async with self._engines.reader() as conn:
            rows = await conn.execute(page.order_by(RUN.c.number.desc()).limit(limit))
            records = [_record(r) for r in rows]
            total = (
                await conn.execute(select(func.count()).select_from(RUN).where(*conditions))
            ).scalar_one()
        return records, int(total)

    async def list_events(self, run_id: str, after_seq: int, limit: int) -> list[EventRecord]:
        async with self._engines.reader() as conn:
            rows = await conn.execute(
                select(RUN_EVENT)
                .where(RUN_EVENT.c.run_id == run_id, RUN_EVENT.c.seq > after_seq)
                .order_by(RUN_EVENT.c.seq)
                .limit(limit)
            )
            return [_event(r) for r in rows]


def _event_values(event: EventRecord) -> dict[str, Any]:
    return {
        "run_id": event.run_id,
        "seq": event.seq,
        "type": event.type,
        "data": event.data,
        "created_at": event.created_at,
    }


def _filter_conditions(flt: RunFilter) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if flt.org_id is not None:
        conditions.append(RUN.c.org_id == flt.org_id)
    for column, value in (
        (RUN.c.agent_id, flt.agent_id),
        (RUN.c.session_id, flt.session_id),
        (RUN.c.user_id, flt.user_id),
    ):
        if value:
            conditions.append(column == value)
    if flt.states:
        conditions.append(RUN.c.state.in_(flt.states))
    if flt.created_after is not None:
        conditions.append(RUN.c.created_at >= flt.created_after)
    if flt.created_before is not None:
        conditions.append(RUN.c.created_at < flt.created_before)
    return conditions
