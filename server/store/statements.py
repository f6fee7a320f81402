"""Hot-path statements, built once with bound parameters. SQLAlchemy caches their compiled form,
so executing one costs a dictionary of parameters instead of building and hashing a new statement
(which cost more than SQLite itself)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Float,
    Integer,
    String,
    and_,
    bindparam,
    exists,
    func,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.engine import Connection
from sqlalchemy.types import TypeEngine

from server.store.records import COMPLETED, PAUSED, QUEUED, RUNNING, RunRecord
from server.store.tables import RUN, RUN_EVENT

# What reads of a run return: everything but the columns only the engine needs.
VIEW = [c for c in RUN.c if c.name not in ("agent_state", "resume", "request_hash", "messages")]
ACTIVE = (QUEUED, RUNNING, PAUSED)

# Runs of one session execute one at a time, in submission order: a run waits while an earlier run
# of its session is queued, running or paused. A session belongs to an org: another org's runs that
# use the same session id neither wait for it nor see its history.
#
# Whether a session is busy is looked up by session (ix_run_session), never by org: `org_id || ''`
# is the same value, outside every index. Otherwise PostgreSQL may take ix_run_org_number (org_id,
# number) for `org_id = x AND number < y` (as selective as far as it can tell before it has
# statistics) and SQLite ix_run_state_org, and read every earlier or active run of the org (with
# one org: of all) for each queued run a claim looks at.


def _of_org(column: Any, org: Any) -> ColumnElement[bool]:
    same: ColumnElement[bool] = column.concat("") == org
    return same


_prior = RUN.alias("prior")
# No earlier run of the session waits or runs, and no run of it runs at all: a run started at once
# (submitted while the queue was empty) may have a later number than one queued meanwhile.
_SESSION_FREE = ~exists().where(
    _prior.c.session_id == RUN.c.session_id,
    _of_org(_prior.c.org_id, RUN.c.org_id),
    _prior.c.state.in_(ACTIVE),
    or_(_prior.c.number < RUN.c.number, _prior.c.state != QUEUED),
)
# Two replicas must not both start a run of one session at once, a new session's included (it has
# no row to lock yet): on PostgreSQL, a transaction-scoped advisory lock per session that a new run
# is stored for, started or queued, taken in one order everywhere (pg_writes' set-based statement
# takes the same keys). A run stored meanwhile is then seen, and a claim never starts a queued run
# while another of its session runs. SQLite serializes writes.
SESSION_LOCKS = 7352870  # every session lock's first key; the second is hashtext(session id)
_LOCK_SESSIONS = text(
    f"SELECT pg_advisory_xact_lock({SESSION_LOCKS}, k) FROM "
    "(SELECT DISTINCT hashtext(s) AS k FROM unnest(CAST(:sids AS text[])) AS s ORDER BY k) AS keys"
)


def lock_sessions(conn: Connection, session_ids: Sequence[str]) -> None:
    if session_ids and conn.dialect.name == "postgresql":
        conn.execute(_LOCK_SESSIONS, {"sids": list(session_ids)})


SESSION_BUSY = (
    select(RUN.c.number)
    .where(
        RUN.c.session_id == bindparam("sid"),
        _of_org(RUN.c.org_id, bindparam("org")),
        RUN.c.state.in_(ACTIVE),
    )
    .limit(1)
)
# The session's latest completed runs (the caller puts them back in order). Only ix_run_session
# (session_id, number) may serve it: SQLite, without statistics, preferred ix_run_state_org for its
# two equalities and read every completed run of the org before this one, for every pydantic-ai
# run (`|| ''` keeps a column's value out of every index, as for _IN_ORG below).
SESSION_HISTORY = (
    select(RUN.c.input, RUN.c.result, RUN.c.messages)
    .where(
        RUN.c.session_id == bindparam("sid"),
        RUN.c.number < bindparam("before"),
        RUN.c.org_id.concat("") == bindparam("org"),
        RUN.c.state.concat("") == COMPLETED,
    )
    .order_by(RUN.c.number.desc())
    .limit(bindparam("lim"))
)

INSERT_RUN = insert(RUN).returning(*RUN.c)
INSERT_EVENT = insert(RUN_EVENT)
ANY_QUEUED = select(RUN.c.number).where(RUN.c.state == QUEUED).limit(1)
RUN_BY_KEY = select(RUN).where(RUN.c.org_id == bindparam("org"), RUN.c.idempotency_key == bindparam("key"))

# ---- reads of runs by id or number (server/store/reads.py) ----
# VIEW's columns in RunRecord's field order: reads.py builds a record from such a row by position.
RECORD_FIELDS = [f.name for f in dataclasses.fields(RunRecord)]
RECORD_VIEW = sorted(VIEW, key=lambda c: RECORD_FIELDS.index(c.name))
RUN_BY_ID = select(*RECORD_VIEW).where(RUN.c.id == bindparam("ref"))
RUN_BY_NUMBER = select(*RECORD_VIEW).where(RUN.c.number == bindparam("ref"))
# Ids and numbers apart, each list a plain IN on its unique index (an OR of the two made SQLite
# plan a MULTI-INDEX OR with a subquery standing for the list that is usually empty).
RUNS_BY_ID = select(*RECORD_VIEW).where(RUN.c.id.in_(bindparam("ids", expanding=True)))
RUNS_BY_NUMBER = select(*RECORD_VIEW).where(RUN.c.number.in_(bindparam("numbers", expanding=True)))
# The same reads within one org (the caller's tenant): another org's run is simply not found. The
# tenant condition is written so that no index can serve it: SQLite, which keeps no statistics,
# would otherwise plan `org_id = ?` through ix_run_org_number and read every run of the org to
# find the 100 of a batch (1.7 s at 1M runs) instead of looking the ids up. `org_id || ''` is the
# same value, outside every index.
_IN_ORG = RUN.c.org_id.concat("") == bindparam("org")
RUN_BY_ID_IN_ORG = RUN_BY_ID.where(_IN_ORG)
RUN_BY_NUMBER_IN_ORG = RUN_BY_NUMBER.where(_IN_ORG)
RUNS_BY_ID_IN_ORG = RUNS_BY_ID.where(_IN_ORG)
RUNS_BY_NUMBER_IN_ORG = RUNS_BY_NUMBER.where(_IN_ORG)
# ---- end of the reads of runs ----
EVENTS_AFTER = (
    select(RUN_EVENT)
    .where(RUN_EVENT.c.run_id == bindparam("rid"), RUN_EVENT.c.seq > bindparam("after"))
    .order_by(RUN_EVENT.c.seq)
    .limit(bindparam("lim"))
)

# Events of a run are accepted only from the lease holder of a RUNNING run, and only when the first
# new seq follows the stored last_seq: a lost lease or a lost earlier write can never leave a gap.
ADVANCE = (
    update(RUN)
    .where(
        and_(
            RUN.c.id == bindparam("rid"),
            RUN.c.lease_owner == bindparam("owner"),
            RUN.c.state == RUNNING,
            RUN.c.last_seq == bindparam("after"),
        )
    )
    .values(last_seq=bindparam("last"), updated_at=bindparam("now"))
)

# The rows to claim are picked once, in a CTE. PostgreSQL would otherwise run an `IN (SELECT ...
# LIMIT n FOR UPDATE SKIP LOCKED)` again for each row it scans, each time skipping the rows already
# taken, and claim every claimable run instead of n.
_oldest_queued = (
    select(RUN.c.number)
    .where(RUN.c.state == QUEUED, _SESSION_FREE)
    .order_by(RUN.c.number)
    .limit(bindparam("lim"))
    .with_for_update(skip_locked=True)
    .cte("oldest_queued")
    .prefix_with("MATERIALIZED", dialect="postgresql")
)
_CLAIMED = {
    "state": RUNNING,
    "lease_owner": bindparam("owner"),
    "lease_expires_at": bindparam("until"),
    "started_at": func.coalesce(RUN.c.started_at, bindparam("now")),
    "updated_at": bindparam("now"),
    "cancel_requested": False,
}
CLAIM = (
    update(RUN)
    .where(RUN.c.number.in_(select(_oldest_queued.c.number)), RUN.c.state == QUEUED)
    .values(**_CLAIMED)
    .returning(*RUN.c)
)

# With a per-org cap on running runs (server/store/quota.py): the oldest claimable queued runs of
# orgs not at their cap, and the claim of the ones picked from them.
CLAIM_CANDIDATES = (
    select(RUN.c.number, RUN.c.org_id)
    .where(RUN.c.state == QUEUED, _SESSION_FREE, RUN.c.org_id.not_in(bindparam("full", expanding=True)))
    .order_by(RUN.c.number)
    .limit(bindparam("lim"))
    .with_for_update(skip_locked=True)
)
CLAIM_NUMBERS = (
    update(RUN)
    .where(RUN.c.number.in_(bindparam("numbers", expanding=True)), RUN.c.state == QUEUED)
    .values(**_CLAIMED)
    .returning(*RUN.c)
)
RUNNING_BY_ORG = select(RUN.c.org_id, func.count()).where(RUN.c.state == RUNNING).group_by(RUN.c.org_id)
ANY_QUEUED_OUTSIDE = (
    select(RUN.c.number)
    .where(RUN.c.state == QUEUED, RUN.c.org_id.not_in(bindparam("full", expanding=True)))
    .limit(1)
)
# Queued runs of an org, counted up to the limit only (a long queue is not scanned to the end).
_queued_of_org = (
    select(RUN.c.number)
    .where(RUN.c.state == QUEUED, RUN.c.org_id == bindparam("org"))
    .limit(bindparam("lim"))
    .subquery()
)
QUEUED_IN_ORG = select(func.count()).select_from(_queued_of_org)


def _keep_unless(name: str) -> ColumnElement[Any]:
    """The parameter v_<name>, or the stored value when the parameter is None."""
    column = RUN.c[name]
    return func.coalesce(bindparam(f"v_{name}", type_=column.type), column)


def _unless_null(name: str, kind: TypeEngine[Any], condition: Callable[[Any], ColumnElement[bool]]) -> Any:
    """`condition(:name)`, or true when the parameter is None (typed, so PostgreSQL can infer it)."""
    param = bindparam(name, type_=kind)
    return or_(param.is_(None), condition(param))


# One statement for every state change out of a set of states: the outcome's fields (None keeps the
# stored value), the lease cleared, last_seq + 1 for the outcome's event. Optional conditions are
# switched off by passing None.
TRANSITION = (
    update(RUN)
    .where(
        RUN.c.id == bindparam("rid"),
        RUN.c.state.in_(bindparam("states", expanding=True)),
        _unless_null("owner", String(), lambda p: RUN.c.lease_owner == p),
        _unless_null("lease_before", Float(), lambda p: RUN.c.lease_expires_at < p),
        _unless_null("deadline_before", Float(), lambda p: RUN.c.deadline < p),
        _unless_null("seq", Integer(), lambda p: RUN.c.last_seq == p),
    )
    .values(
        state=bindparam("v_state"),
        updated_at=bindparam("now"),
        last_seq=RUN.c.last_seq + 1,
        attempt=RUN.c.attempt + bindparam("attempt_inc"),
        completed_at=bindparam("v_completed_at"),
        lease_owner=None,
        lease_expires_at=None,
        resume=None,
        pending_action=bindparam("v_pending_action", type_=RUN.c.pending_action.type),
        result=_keep_unless("result"),
        error_reason=_keep_unless("error_reason"),
        error_message=_keep_unless("error_message"),
        agent_state=_keep_unless("agent_state"),
        messages=_keep_unless("messages"),
    )
    .returning(*RUN.c)
)
