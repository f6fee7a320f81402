"""The webhook outbox's SQL: rows are inserted in the run's terminal transaction (sql.py), then
claimed with a lease, attempted and recorded here. A lease keeps two processes from sending the same
row at once; a process that dies mid-send leaves a lease that expires, and the row is sent again
(receivers de-duplicate on the delivery id)."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Executable, Row, bindparam, case, func, or_, select, update

from server.store.records import DELIVERED, FAILED, PENDING, DeliveryRecord, RunRecord
from server.store.tables import RUN, WEBHOOK_DELIVERY
from server.store.writer import Tx, Writer

log = logging.getLogger(__name__)
D = WEBHOOK_DELIVERY
Fetch = Callable[..., Awaitable[list[Sequence[Row[Any]]]]]

# Picked once, in a CTE: as a plain `IN (subquery)` PostgreSQL may run it again for each row it
# scans, skipping the rows already taken each time, and lease more than `lim` rows.
_due = (
    select(D.c.id)
    .where(
        D.c.state == PENDING,
        D.c.next_attempt_at <= bindparam("now"),
        or_(D.c.lease_expires_at.is_(None), D.c.lease_expires_at < bindparam("now")),
    )
    .order_by(D.c.next_attempt_at)
    .limit(bindparam("lim"))
    .with_for_update(skip_locked=True)
    .cte("due")
    .prefix_with("MATERIALIZED", dialect="postgresql")
)
CLAIM_DUE = (
    update(D)
    .where(D.c.id.in_(select(_due.c.id)), D.c.state == PENDING)
    .values(lease_owner=bindparam("owner"), lease_expires_at=bindparam("until"))
    .returning(*D.c)
)


def _record(row: Row[Any]) -> DeliveryRecord:
    return DeliveryRecord(**row._mapping)


def _minimal(run: RunRecord) -> dict[str, Any]:
    return {"run_id": run.id, "state": run.state}


@dataclass(frozen=True)
class Outbox:
    """How the transaction that ends a run writes its webhook: the body, rendered from the final run
    (so it survives the run's deletion), and how long the delivery may be retried."""

    render: Callable[[RunRecord], dict[str, Any]] = _minimal
    max_age_s: float = 86_400.0

    def row(self, run: RunRecord, now: float) -> dict[str, Any]:
        try:
            payload = self.render(run)
        except Exception:  # the run must end even if its body cannot be rendered
            log.exception("run %s: rendering the webhook body failed; sending a minimal one", run.id)
            payload = _minimal(run)
        return _new_row(run, payload, now, self.max_age_s)


def _new_row(run: RunRecord, payload: dict[str, Any], now: float, max_age_s: float) -> dict[str, Any]:
    return {
        "id": f"msg_{uuid.uuid4().hex}",
        "run_id": run.id,
        "url": run.webhook_url,
        "payload": payload,
        "state": PENDING,
        "attempt_count": 0,
        "attempts": [],
        "give_up_at": now + max_age_s,
        "next_attempt_at": now,
        "lease_owner": None,
        "lease_expires_at": None,
        "created_at": now,
        "delivered_at": None,
        "traceparent": run.trace_context,
    }


def summary(delivery: DeliveryRecord) -> dict[str, Any]:
    """What the run shows of its latest delivery (family C's webhook_result_* fields)."""
    last = (delivery.attempts or [{}])[-1]
    return {
        "delivery_id": delivery.id,
        "state": delivery.state,
        "status_code": last.get("status_code", 0),
        "message": last.get("error") or ("delivered" if delivery.state == DELIVERED else ""),
    }


class DeliveryStore:
    def __init__(self, writer: Writer, fetch: Fetch) -> None:
        self._writer = writer
        self._fetch = fetch

    async def claim_due(self, owner: str, limit: int, lease_s: float) -> list[DeliveryRecord]:
        def op(tx: Tx) -> list[DeliveryRecord]:
            now = time.time()
            params = {"now": now, "lim": limit, "owner": owner, "until": now + lease_s}
            return [_record(r) for r in tx.conn.execute(CLAIM_DUE, params)]

        return await self._writer.call(op)

    async def record(
        self, delivery: DeliveryRecord, owner: str, attempt: dict[str, Any], retry_at: float | None
    ) -> DeliveryRecord | None:
        """Store an attempt: DELIVERED on success, else PENDING until `retry_at`, or FAILED when
        `retry_at` is None. Only the lease holder may; None when it no longer holds the lease."""
        ok = 200 <= attempt["status_code"] < 300
        state = DELIVERED if ok else PENDING if retry_at is not None else FAILED

        def op(tx: Tx) -> DeliveryRecord | None:
            row = tx.conn.execute(
                update(D)
                .where(D.c.id == delivery.id, D.c.lease_owner == owner, D.c.state == PENDING)
                .values(
                    state=state,
                    attempt_count=D.c.attempt_count + 1,
                    attempts=[*(delivery.attempts or []), attempt],
                    next_attempt_at=retry_at if retry_at is not None else D.c.next_attempt_at,
                    delivered_at=attempt["at"] if ok else None,
                    lease_owner=None,
                    lease_expires_at=None,
                )
                .returning(*D.c)
            ).first()
            if row is None:
                return None
            done = _record(row)
            tx.conn.execute(update(RUN).where(RUN.c.id == done.run_id).values(webhook_result=summary(done)))
            return done

        return await self._writer.call(op)

    async def retry(self, run_id: str, delivery_id: str, max_age_s: float) -> DeliveryRecord | None:
        """Make a delivery PENDING again, due now, with a fresh attempt count and age limit."""

        def op(tx: Tx) -> DeliveryRecord | None:
            now = time.time()
            row = tx.conn.execute(
                update(D)
                .where(D.c.id == delivery_id, D.c.run_id == run_id)
                .values(
                    state=PENDING,
                    attempt_count=0,
                    next_attempt_at=now,
                    give_up_at=now + max_age_s,
                    lease_owner=None,
                    lease_expires_at=None,
                )
                .returning(*D.c)
            ).first()
            return _record(row) if row is not None else None

        return await self._writer.call(op)

    async def for_run(self, run_id: str) -> list[DeliveryRecord]:
        [rows] = await self._fetch(select(D).where(D.c.run_id == run_id).order_by(D.c.created_at))
        return [_record(r) for r in rows]

    async def release(self, owner: str) -> None:
        """Give up `owner`'s leases (a deliverer stopping), so another process sends those rows now
        rather than when the leases expire."""

        def op(tx: Tx) -> None:
            tx.conn.execute(
                update(D)
                .where(D.c.lease_owner == owner, D.c.state == PENDING)
                .values(lease_owner=None, lease_expires_at=None)
            )

        await self._writer.call(op)

    async def next_due(self) -> float | None:
        """When the earliest pending delivery is due; a leased row not before its lease expires
        (counting it as due now would make the deliverer claim in a loop while it is being sent)."""
        due_at = case(
            (D.c.lease_expires_at > D.c.next_attempt_at, D.c.lease_expires_at), else_=D.c.next_attempt_at
        )
        query: Executable = select(func.min(due_at)).where(D.c.state == PENDING)
        [rows] = await self._fetch(query)
        value = rows[0][0] if rows else None
        return float(value) if value is not None else None
