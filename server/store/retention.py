"""Retention's SQL: one batch of the purge, run as one op of the single writer's transaction. A batch
picks up to `limit` finished runs that ended before their cutoff and deletes them with their events,
their finished webhook deliveries and the sessions they leave without a run.

What is never deleted: a run that is not terminal, whatever its age (the state decides, not a
timestamp); a run whose webhook delivery is still PENDING (due or being sent), so the deliverer can
still record its outcome on the run; a session while any run of it remains.

Replicas sharing a PostgreSQL database purge one at a time: a batch first takes a transaction-scoped
advisory lock without waiting, and a batch that cannot have it deletes nothing (the replica holding
it is purging). SQLite serializes writers anyway."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import BindParameter, Connection, Row, bindparam, delete, exists, select, text

from server.store.records import PENDING, TERMINAL
from server.store.tables import RUN, RUN_EVENT, SESSION, WEBHOOK_DELIVERY

# Beside migrations' 7352860 and capped claims' 7352861: a purge never holds up a claim.
PURGE_LOCK_KEY = 7352862
_TRY_LOCK = text(f"SELECT pg_try_advisory_xact_lock({PURGE_LOCK_KEY})")

D = WEBHOOK_DELIVERY
_FINISHED = sorted(TERMINAL)
_IDS: BindParameter[Any] = bindparam("ids", expanding=True)

# Looked up by run_id only: `state || ''` is no index column, or SQLite (without statistics) would
# look deliveries up by state and read every pending one for each old run.
_WEBHOOK_PENDING = exists().where(D.c.run_id == RUN.c.id, D.c.state.concat("") == PENDING)
# No ORDER BY: any old runs will do, and without a sort the index range on (state, completed_at)
# stops after `lim` rows instead of reading every old run on each batch.
_OLD = (
    select(RUN.c.number)
    .where(RUN.c.state.in_(_FINISHED), RUN.c.completed_at < bindparam("before"), ~_WEBHOOK_PENDING)
    .limit(bindparam("lim"))
)
# The default cutoff applies to orgs without an override of their own; an override to its org only.
OLD_BY_DEFAULT = _OLD.where(RUN.c.org_id.not_in(bindparam("orgs", expanding=True)))
OLD_OF_ORG = _OLD.where(RUN.c.org_id == bindparam("org"))

DELETE_RUNS = (
    delete(RUN)
    .where(RUN.c.number.in_(bindparam("numbers", expanding=True)), RUN.c.state.in_(_FINISHED))
    .returning(RUN.c.id, RUN.c.session_id)
)
DELETE_EVENTS = delete(RUN_EVENT).where(RUN_EVENT.c.run_id.in_(_IDS))
# A delivery that turned PENDING again since the run was picked (a retry) is left to the deliverer.
DELETE_DELIVERIES = delete(D).where(D.c.run_id.in_(_IDS), D.c.state != PENDING)
DELETE_EMPTY_SESSIONS = delete(SESSION).where(
    SESSION.c.id.in_(bindparam("sids", expanding=True)),
    ~exists().where(RUN.c.session_id == SESSION.c.id),
)


@dataclass(slots=True)
class Purged:
    """Rows deleted, by kind."""

    runs: int = 0
    events: int = 0
    deliveries: int = 0
    sessions: int = 0

    def add(self, other: Purged) -> None:
        self.runs += other.runs
        self.events += other.events
        self.deliveries += other.deliveries
        self.sessions += other.sessions


def purge_batch(
    conn: Connection, before: float | None, orgs: Mapping[str, float | None], limit: int
) -> Purged | None:
    """Inside a write transaction: delete up to `limit` finished runs that ended before `before`
    (None: no default cutoff), or for an org in `orgs` before its own cutoff (None: keep that org's
    runs), with what belongs to them only. None when another replica holds the purge lock."""
    if before is None and all(cutoff is None for cutoff in orgs.values()):
        return Purged()
    if conn.dialect.name == "postgresql" and not conn.execute(_TRY_LOCK).scalar():
        return None
    old = _pick(conn, before, orgs, limit)
    if not old:
        return Purged()
    # What was deleted, not what was picked: a run deleted meanwhile (DeleteRun) took its rows along.
    gone = conn.execute(DELETE_RUNS, {"numbers": [row.number for row in old]}).all()
    ids = [row.id for row in gone]
    sessions = sorted({row.session_id for row in gone})
    return Purged(
        runs=len(gone),
        events=conn.execute(DELETE_EVENTS, {"ids": ids}).rowcount,
        deliveries=conn.execute(DELETE_DELIVERIES, {"ids": ids}).rowcount,
        sessions=conn.execute(DELETE_EMPTY_SESSIONS, {"sids": sessions}).rowcount,
    )


def _pick(
    conn: Connection, before: float | None, orgs: Mapping[str, float | None], limit: int
) -> list[Row[Any]]:
    """Up to `limit` runs old enough to go: by the default cutoff first, then org by org."""
    old: list[Row[Any]] = []
    if before is not None:
        params = {"before": before, "orgs": sorted(orgs), "lim": limit}
        old += conn.execute(OLD_BY_DEFAULT, params).all()
    for org, cutoff in sorted(orgs.items()):
        if cutoff is None or len(old) >= limit:
            continue
        old += conn.execute(OLD_OF_ORG, {"before": cutoff, "org": org, "lim": limit - len(old)}).all()
    return old
