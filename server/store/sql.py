"""The store (the contract in server/store/contract.py) in SQL: dialect-neutral SQLAlchemy Core on a
Backend (server/store/dialect.py) that owns what differs between engines. Writes go through the
group-committing Writer, reads through a pool of reader connections."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import Executable, and_, delete, or_, select, update
from sqlalchemy.engine import Row

from server.store import batch, dialect, quota, retention
from server.store import statements as st
from server.store.deliveries import DeliveryStore, Outbox
from server.store.reads import RunReads
from server.store.reads import run_from_row as _record
from server.store.records import (
    PAUSED,
    PENDING,
    QUEUED,
    RUNNING,
    TERMINAL,
    EventRecord,
    NewRun,
    Outcome,
    RunRecord,
)
from server.store.tables import RUN, RUN_EVENT, WEBHOOK_DELIVERY
from server.store.writer import Tx, Writer

if TYPE_CHECKING:
    from server.store.contract import Publish


class SqlStore(RunReads):
    def __init__(self, backend: dialect.Backend, publish: Publish, outbox: Outbox | None = None) -> None:
        self._backend = backend
        self.origin = uuid.uuid4().hex[:12]  # tells this replica's notifications from the others'
        self._writer = Writer(backend, publish, origin=self.origin)
        self._outbox = outbox or Outbox()
        self.deliveries = DeliveryStore(self._writer, self._fetch)

    @classmethod
    @contextlib.asynccontextmanager
    async def open(
        cls, backend: dialect.Backend, publish: Publish, outbox: Outbox | None = None
    ) -> AsyncIterator[SqlStore]:
        """Migrate the database, start the writer; on exit stop it and dispose of the backend."""
        try:
            await backend.migrate()
            store = cls(backend, publish, outbox)
            await store._writer.start()
            try:
                yield store
            finally:
                await store._writer.stop()
        finally:
            await backend.dispose()

    def listen(
        self,
        on_events: Callable[[str], None],
        on_queue: Callable[[], None],
        on_cancel: Callable[[str], None],
        on_health: Callable[[bool], None] = lambda _up: None,
    ) -> contextlib.AbstractAsyncContextManager[None]:
        return self._backend.listen(self.origin, on_events, on_queue, on_cancel, on_health)

    async def _fetch(
        self, *queries: Executable | tuple[Executable, dict[str, Any]]
    ) -> list[Sequence[Row[Any]]]:
        """Run read statements (optionally with parameters): on the reader pool, or on the writer's
        connection for an in-memory database (which exists only there)."""
        pairs = [q if isinstance(q, tuple) else (q, {}) for q in queries]
        if self._backend.read is None:
            return await self._writer.read(lambda conn: [conn.execute(s, p).all() for s, p in pairs])
        async with self._backend.read.connect() as conn:
            return [(await conn.execute(s, p)).all() for s, p in pairs]

    # ---- submission -------------------------------------------------------------------

    async def create_run(
        self,
        new: NewRun,
        lease: tuple[str, float] | None = None,
        *,
        max_running: int = 0,
        max_queued: int = 0,
    ) -> tuple[RunRecord, bool]:
        """Insert a QUEUED run, or with `lease` (owner, seconds) and an empty queue one already
        RUNNING under that lease; with an idempotency key already taken, return the existing run
        and False instead. Per org (0 = no limit): a run starts at once only while its org has fewer
        than `max_running` running; a run that would be queued while its org already has
        `max_queued` queued is refused with QueueFull."""
        if max_running <= 0 and max_queued <= 0:
            created = await self._writer.admit(new, lease)  # decided and stored with others at once
        else:
            created = await self._writer.call(
                lambda tx: self._create_capped(tx, new, lease, max_running, max_queued)
            )
        if created is None:
            raise quota.QueueFull(new.org_id)
        return created

    def _create_capped(
        self, tx: Tx, new: NewRun, lease: tuple[str, float] | None, max_running: int, max_queued: int
    ) -> tuple[RunRecord, bool] | None:
        """create_run with per-org caps: counted in its own statements, one run at a time."""
        now = time.time()
        st.lock_sessions(tx.conn, [new.session_id])  # see lock_sessions
        # Runs already waiting go first: a new run skips the queue only when it is empty.
        at_once = lease is not None and quota.may_start(
            tx.conn, new.org_id, max_running, self._backend.serialized
        )
        if at_once:
            busy = tx.conn.execute(st.SESSION_BUSY, {"sid": new.session_id, "org": new.org_id})
            at_once = busy.first() is None
        if not at_once and quota.queue_full(tx.conn, new.org_id, max_queued):
            return _by_key(tx, new)  # a replay of a stored submission is answered all the same
        row = tx.conn.execute(
            self._writer.insert_run_ignore if new.idempotency_key else st.INSERT_RUN,
            batch.run_values(new, lease if at_once else None, now),
        ).first()
        if row is None:
            return _by_key(tx, new)
        tx.conn.execute(self._writer.count_session, batch.session_row(new, now))
        record = _record(row)
        start = batch.start_event(record.id, record.session_id, now)
        tx.conn.execute(st.INSERT_EVENT, batch.event_row(start))
        tx.published.append(start)
        tx.queued = tx.queued or record.state == QUEUED
        return record, True

    # ---- the queue ----------------------------------------------------------------------

    async def claim(
        self, owner: str, limit: int, lease_s: float, max_running: int = 0
    ) -> tuple[list[RunRecord], bool]:
        """Lease up to `limit` of the oldest claimable QUEUED runs to `owner` (SKIP LOCKED where
        supported), with `max_running` > 0 none of an org that has that many running. Also says
        whether queued runs remain that could not be claimed (they wait for an earlier run of their
        session, or for their org to have room)."""

        def op(tx: Tx) -> tuple[list[RunRecord], bool]:
            now = time.time()
            params = {"owner": owner, "until": now + lease_s, "now": now, "lim": limit}
            if max_running <= 0:
                rows = tx.conn.execute(st.CLAIM, params).all()
            elif self._backend.serialized(tx.conn):
                rows = quota.claim(tx.conn, params, max_running)
            else:
                return [], True  # another replica is claiming: try again on the next wake-up
            runs = sorted((_record(r) for r in rows), key=lambda r: r.number)
            waiting = len(runs) < limit and tx.conn.execute(st.ANY_QUEUED).first() is not None
            return runs, waiting

        return await self._writer.call(op)

    async def renew(self, owner: str, lease_s: float, run_ids: Sequence[str]) -> list[str]:
        """Extend the leases `owner` holds on `run_ids` (the runs it still executes: a lease of a run
        nobody executes must expire, so the sweeper ends the run); returns those of them someone
        asked to cancel."""
        if not run_ids:
            return []
        ids = list(run_ids)

        def op(tx: Tx) -> list[str]:
            now = time.time()
            held = and_(RUN.c.id.in_(ids), RUN.c.lease_owner == owner, RUN.c.state == RUNNING)
            tx.conn.execute(update(RUN).where(held).values(lease_expires_at=now + lease_s))
            rows = tx.conn.execute(select(RUN.c.id).where(held, RUN.c.cancel_requested.is_(True)))
            return list(rows.scalars())

        return await self._writer.call(op)

    async def request_cancel(self, run_id: str) -> bool:
        def op(tx: Tx) -> bool:
            result = tx.conn.execute(
                update(RUN).where(RUN.c.id == run_id, RUN.c.state == RUNNING).values(cancel_requested=True)
            )
            if result.rowcount != 1:
                return False
            tx.cancels.append(run_id)  # the replica executing it is told at commit
            return True

        return await self._writer.call(op)

    async def overdue(self, now: float, limit: int = 500) -> list[RunRecord]:
        """Non-terminal runs past their deadline, and RUNNING runs whose lease expired."""
        [rows] = await self._fetch(
            select(*st.VIEW)
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

    async def append(self, run_id: str, owner: str, events: list[EventRecord]) -> asyncio.Future[bool]:
        return await self._writer.append(run_id, owner, events)

    async def transition(
        self,
        run_id: str,
        outcome: Outcome,
        *,
        states: Iterable[str],
        owner: str | None = None,
        lease_before: float | None = None,
        deadline_before: float | None = None,
        seq: int | None = None,
    ) -> RunRecord | None:
        """One conditional UPDATE from one of `states` to `outcome.state` (optionally only while
        `owner` holds the lease, the lease expired before / the deadline passed before a time, or
        last_seq is `seq`), plus the outcome's event at the next seq, in one transaction. None when
        the conditions did not hold."""
        return await self._writer.change(
            run_id,
            outcome,
            states=tuple(states),
            owner=owner,
            lease_before=lease_before,
            deadline_before=deadline_before,
            seq=seq,
            webhook=self._outbox.row,
        )

    async def decide(self, run_id: str, tool_call_id: str, decision: dict[str, Any]) -> RunRecord | None:
        """PAUSED -> QUEUED with `decision` recorded, if `tool_call_id` is the pending call."""

        def op(tx: Tx) -> RunRecord | None:
            now = time.time()
            current = tx.conn.execute(
                select(RUN.c.decisions, RUN.c.pending_action)
                .where(RUN.c.id == run_id, RUN.c.state == PAUSED)
                .with_for_update()
            ).first()
            if current is None or (current.pending_action or {}).get("tool_call_id") != tool_call_id:
                return None
            row = tx.conn.execute(
                update(RUN)
                .where(RUN.c.id == run_id, RUN.c.state == PAUSED)
                .values(
                    state=QUEUED,
                    resume=decision,
                    decisions=[*(current.decisions or []), decision],
                    updated_at=now,
                )
                .returning(*RUN.c)
            ).first()
            tx.queued = tx.queued or row is not None
            return _record(row) if row is not None else None

        return await self._writer.call(op)

    async def delete_run(self, run_id: str) -> bool:
        """Delete a terminal run and its events; False when it is not terminal (or gone)."""

        def op(tx: Tx) -> bool:
            result = tx.conn.execute(delete(RUN).where(RUN.c.id == run_id, RUN.c.state.in_(TERMINAL)))
            if result.rowcount != 1:
                return False
            tx.conn.execute(delete(RUN_EVENT).where(RUN_EVENT.c.run_id == run_id))
            # A webhook still being delivered goes out anyway (its body is stored with it).
            d = WEBHOOK_DELIVERY
            tx.conn.execute(delete(d).where(d.c.run_id == run_id, d.c.state != PENDING))
            return True

        return await self._writer.call(op)

    async def update_metadata(
        self, run_id: str, metadata: Mapping[str, Any] | None, org: str | None = None
    ) -> RunRecord | None:
        """Replace a run's extras in one UPDATE, whatever its state (a state change commits its own
        columns only, so neither write undoes the other)."""
        tenant = [RUN.c.org_id == org] if org is not None else []
        statement = update(RUN).where(RUN.c.id == run_id, *tenant).returning(*st.VIEW)
        extras = dict(metadata) if metadata else None

        def op(tx: Tx) -> RunRecord | None:
            row = tx.conn.execute(statement.values(extras=extras, updated_at=time.time())).first()
            return _record(row) if row is not None else None

        return await self._writer.call(op)

    async def purge(
        self, before: float | None, limit: int = 500, orgs: Mapping[str, float | None] | None = None
    ) -> retention.Purged | None:
        """One batch of retention's purge (server/store/retention.py) in the writer's transaction."""
        cutoffs = dict(orgs or {})
        return await self._writer.call(lambda tx: retention.purge_batch(tx.conn, before, cutoffs, limit))


def _by_key(tx: Tx, new: NewRun) -> tuple[RunRecord, bool] | None:
    """The run stored earlier under the submission's idempotency key, if any."""
    if not new.idempotency_key:
        return None
    existing = tx.conn.execute(st.RUN_BY_KEY, {"org": new.org_id, "key": new.idempotency_key}).first()
    return (_record(existing), False) if existing is not None else None
