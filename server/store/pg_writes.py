"""The PostgreSQL writer's statements: each set of a batch (server/store/batch.py) is one statement
over arrays (unnest), run on the asyncpg connection directly. asyncpg prepares each once per
connection; there is no SQLAlchemy compile, parameter or result processing per statement. A
statement stores what it decides (an advance its events, a change its event, a new run its session
count and START event), and the notifications go with the COMMIT: a batch costs a few round trips
whether it holds one run or a thousand.

The SQLAlchemy connection the writer holds is in AUTOCOMMIT: the transaction is begun and ended
here, and the ops that are plain SQLAlchemy calls run inside it."""

from __future__ import annotations

import contextlib
import json
import weakref
from collections.abc import Awaitable, Iterator, Sequence
from typing import Any, TypeVar

import asyncpg
from sqlalchemy import JSON, BigInteger, Boolean, Connection, Float, Integer, Table
from sqlalchemy.util import await_

from server.store.batch import (
    Chain,
    Change,
    ConnectionLost,
    IdempotencyKey,
    SessionKey,
    gone,
    start_event,
)
from server.store.records import QUEUED, RUNNING, START, TERMINAL, EventRecord, RunRecord
from server.store.statements import ACTIVE, SESSION_LOCKS
from server.store.tables import RUN, SESSION, WEBHOOK_DELIVERY

T = TypeVar("T")


def _array_of(column: Any) -> tuple[str, str]:
    """The array type a column's values are sent as, and the cast back to the column's type."""
    kind = column.type
    if isinstance(kind, JSON):
        return "text[]", "::json"  # sent as the JSON text SQLAlchemy would write (json.dumps)
    if isinstance(kind, Boolean):
        return "bool[]", ""
    if isinstance(kind, BigInteger):
        return "int8[]", ""
    if isinstance(kind, Integer):
        return "int4[]", ""
    if isinstance(kind, Float):
        return "float8[]", ""
    return "text[]", ""


def _default(column: Any) -> Any:
    default = column.default
    if default is None:
        return None
    assert default.is_scalar, f"{column}: only scalar defaults are sent as values"
    return default.arg


class _Rows:
    """Rows of a table sent as one array parameter per column."""

    def __init__(self, table: Table, columns: Sequence[str]) -> None:
        self.table = table.name
        self.columns = list(columns)
        self.names = ", ".join(f'"{name}"' for name in columns)
        kinds = [_array_of(table.c[name]) for name in columns]
        self._arrays = [array for array, _ in kinds]
        self.values = ", ".join(f'v."{name}"{cast}' for name, (_, cast) in zip(columns, kinds, strict=True))
        # A column a row leaves out gets the column's default, as in a SQLAlchemy INSERT.
        self._sent = [
            (name, cast == "::json", _default(table.c[name]))
            for name, (_, cast) in zip(columns, kinds, strict=True)
        ]

    def unnest(self, first: int = 1, *extra: str) -> str:
        """unnest() of the arrays, numbered from `first`, and of `extra` array types after them."""
        arrays = [*self._arrays, *extra]
        return f"unnest({', '.join(f'${n}::{a}' for n, a in enumerate(arrays, start=first))})"

    def insert(self) -> str:
        rows = f"SELECT {self.values} FROM {self.unnest()} AS v({self.names})"
        return f'INSERT INTO "{self.table}" ({self.names}) {rows}'

    def arrays(self, rows: Sequence[dict[str, Any]]) -> list[list[Any]]:
        return [
            [_json(row.get(name, default)) for row in rows]
            if is_json
            else [row.get(name, default) for row in rows]
            for name, is_json, default in self._sent
        ]


def _json(value: Any) -> str | None:
    return None if value is None else json.dumps(value)


def _quoted(values: Sequence[str]) -> str:
    return ", ".join(f"'{v}'" for v in values)


_RUN_COLUMNS = ", ".join(f'"{c.name}"' for c in RUN.columns)
_EVENT = "run_event (run_id, seq, type, data, created_at)"
_RUNS = _Rows(RUN, [c.name for c in RUN.columns if c.name != "number"])
_SESSIONS = _Rows(SESSION, [c.name for c in SESSION.columns])
_DELIVERIES = _Rows(WEBHOOK_DELIVERY, [c.name for c in WEBHOOK_DELIVERY.columns])
_N = len(_RUNS.columns)  # the run arrays are $1.._N; then the sessions', then the START events'
_S = len(_SESSIONS.columns)

# New runs, numbered in the order given (one whose idempotency key is taken is skipped). For each run
# inserted, its session counted (one row per session: the first run's values and how many runs, in
# id order: one lock order for every replica) and its START event.
_INSERT_RUNS = f"""
WITH inserted AS (
    {_RUNS.insert()}
    ON CONFLICT (org_id, idempotency_key) DO NOTHING
    RETURNING *
), counted AS (
    INSERT INTO "session" ({_SESSIONS.names})
    SELECT {_SESSIONS.names} FROM (
        SELECT DISTINCT ON (v.id) {", ".join(f"v.{c}" for c in _SESSIONS.columns if c != "run_count")},
            sum(v.run_count) OVER (PARTITION BY v.id) AS run_count
        FROM {_SESSIONS.unnest(_N + 1, "text[]")} WITH ORDINALITY AS v({_SESSIONS.names}, run_id, n)
        WHERE v.run_id IN (SELECT id FROM inserted)
        ORDER BY v.id, v.n
    ) AS first_run
    ORDER BY id
    ON CONFLICT (id) DO UPDATE
        SET run_count = "session".run_count + EXCLUDED.run_count, updated_at = EXCLUDED.updated_at
), started AS (
    INSERT INTO {_EVENT}
    SELECT e.run_id, 1, '{START}', e.data::json, e.created_at
    FROM unnest(${_N + _S + 2}::text[], ${_N + _S + 3}::text[], ${_N + _S + 4}::float8[])
        AS e(run_id, data, created_at)
    WHERE e.run_id IN (SELECT id FROM inserted)
)
SELECT * FROM inserted
"""

# statements.ADVANCE for many runs at once, and the events ($6..$10) of the runs it advanced. Runs
# are found by id: `state || ''` keeps the state out of every index (the state index holds an entry
# for every finished run that was RUNNING until vacuum removes it, and a scan of it reads them all).
_ADVANCE = f"""
WITH advanced AS (
    UPDATE run SET last_seq = c.last, updated_at = $5
    FROM unnest($1::text[], $2::text[], $3::int4[], $4::int4[]) AS c(id, owner, after, last)
    WHERE run.id = c.id AND run.lease_owner = c.owner AND run.state || '' = '{RUNNING}'
        AND run.last_seq = c.after
    RETURNING run.id
), stored AS (
    INSERT INTO {_EVENT}
    SELECT e.run_id, e.seq, e.type, e.data::json, e.created_at
    FROM unnest($6::text[], $7::int4[], $8::text[], $9::text[], $10::float8[])
        AS e(run_id, seq, type, data, created_at)
    WHERE e.run_id IN (SELECT id FROM advanced)
)
SELECT id FROM advanced
"""

# statements.TRANSITION for many runs at once (one change per run), with each change's event at the
# run's new last_seq: a NULL condition is switched off, a NULL value keeps the stored one (but
# pending_action, which is set as given).
_CHANGE = f"""
WITH changed AS (
    UPDATE run SET
        state = c.state,
        updated_at = $16,
        last_seq = run.last_seq + 1,
        attempt = run.attempt + c.attempt_inc,
        completed_at = c.completed_at,
        lease_owner = NULL,
        lease_expires_at = NULL,
        resume = NULL,
        pending_action = c.pending_action::json,
        result = COALESCE(c.result::json, run.result),
        error_reason = COALESCE(c.error_reason, run.error_reason),
        error_message = COALESCE(c.error_message, run.error_message),
        agent_state = COALESCE(c.agent_state::json, run.agent_state),
        messages = COALESCE(c.messages::json, run.messages)
    FROM unnest(
        $1::text[], $2::text[], $3::text[], $4::float8[], $5::float8[], $6::int4[], $7::text[], $8::int4[],
        $9::float8[], $10::text[], $11::text[], $12::text[], $13::text[], $14::text[], $15::text[],
        $17::text[], $18::text[]
    ) AS c(
        id, states, owner, lease_before, deadline_before, seq, state, attempt_inc,
        completed_at, pending_action, result, error_reason, error_message, agent_state, messages,
        event_type, event_data
    )
    WHERE run.id = c.id
        AND run.state = ANY (string_to_array(c.states, ','))
        AND (c.owner IS NULL OR run.lease_owner = c.owner)
        AND (c.lease_before IS NULL OR run.lease_expires_at < c.lease_before)
        AND (c.deadline_before IS NULL OR run.deadline < c.deadline_before)
        AND (c.seq IS NULL OR run.last_seq = c.seq)
    RETURNING run.*, c.event_type AS event_type_, c.event_data AS event_data_
), stored AS (
    INSERT INTO {_EVENT} SELECT id, last_seq, event_type_, event_data_::json, $16 FROM changed
)
SELECT {_RUN_COLUMNS} FROM changed
"""

# The sessions of the new runs are locked (statements.lock_sessions' advisory locks, in one order
# on every replica; a new session has no row to lock), so two replicas cannot both start a run of
# one session; then whether a run is queued (a statement of its own, after the locks).
_LOCK_SESSIONS = f"""
SELECT count(*) FROM (
    SELECT pg_advisory_xact_lock({SESSION_LOCKS}, k)
    FROM (SELECT DISTINCT hashtext(s) AS k FROM unnest($1::text[]) AS s ORDER BY k) AS keys
) AS locked
"""
# Whether any run is queued and, of (session, org) pairs, those with a queued, running or paused
# run: one statement, after the locks (it must see what a replica that held a session's lock
# committed). Sessions are looked up by session only, as statements.SESSION_BUSY does: `|| ''`
# keeps org and state out of every index.
_QUEUE_STATE = f"""
SELECT EXISTS (SELECT 1 FROM run WHERE state = '{QUEUED}'), ARRAY(
    SELECT ARRAY[k.s, k.o] FROM unnest($1::text[], $2::text[]) AS k(s, o)
    WHERE EXISTS (
        SELECT 1 FROM run
        WHERE run.session_id = k.s AND run.org_id || '' = k.o AND (run.state || '') IN ({_quoted(ACTIVE)})
    )
)
"""
_BY_KEY = """
SELECT * FROM run
WHERE (org_id, idempotency_key) IN (SELECT o, k FROM unnest($1::text[], $2::text[]) AS k(o, k))
"""


def _run(record: Any) -> RunRecord:
    return RunRecord(**dict(record.items()))


def _event_arrays(events: Sequence[EventRecord]) -> list[list[Any]]:
    return [
        [e.run_id for e in events],
        [e.seq for e in events],
        [e.type for e in events],
        [json.dumps(e.data) for e in events],
        [e.created_at for e in events],
    ]


class PgSteps:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        raw = conn.connection.driver_connection  # the asyncpg connection
        assert raw is not None
        self._raw: Any = raw

    def _await(self, awaitable: Awaitable[T]) -> T:
        try:
            return await_(awaitable)
        except Exception as exc:
            if self._raw.is_closed() or gone(exc) or broken(exc):
                raise ConnectionLost(str(exc)) from exc
            raise

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        _at_commit.pop(self._raw, None)
        self._await(self._raw.execute("BEGIN"))
        try:
            yield
        except BaseException:
            _at_commit.pop(self._raw, None)
            # First the SQLAlchemy side (autocommit: no statement): a connection it invalidated
            # stays unusable until rolled back.
            with contextlib.suppress(Exception):
                self.conn.rollback()
            with contextlib.suppress(Exception):
                if not self._raw.is_closed():
                    await_(self._raw.execute("ROLLBACK"))
            raise
        self._await(self._raw.execute(_commit(self._raw)))  # with the notifications
        self.conn.commit()

    def advance(self, chains: Sequence[Chain], now: float) -> set[str]:
        rows = self._await(
            self._raw.fetch(
                _ADVANCE,
                [c.run_id for c in chains],
                [c.owner for c in chains],
                [c.after for c in chains],
                [c.last for c in chains],
                now,
                *_event_arrays([e for c in chains for e in c.events]),
            )
        )
        return {row[0] for row in rows}

    def change(self, changes: Sequence[Change], now: float) -> list[RunRecord | None]:
        outcomes = [c.outcome for c in changes]
        rows = self._await(
            self._raw.fetch(
                _CHANGE,
                [c.run_id for c in changes],
                [",".join(c.states) for c in changes],
                [c.owner for c in changes],
                [c.lease_before for c in changes],
                [c.deadline_before for c in changes],
                [c.seq for c in changes],
                [o.state for o in outcomes],
                [1 if o.release else 0 for o in outcomes],
                [now if o.state in TERMINAL else None for o in outcomes],
                [_json(o.pending_action) for o in outcomes],
                [_json(o.result) for o in outcomes],
                [o.error_reason for o in outcomes],
                [o.error_message for o in outcomes],
                [_json(o.agent_state) for o in outcomes],
                [_json(o.messages) for o in outcomes],
                now,
                [o.event_type for o in outcomes],
                [json.dumps(o.event_data) for o in outcomes],
            )
        )
        changed = {run.id: run for run in map(_run, rows)}
        return [changed.get(c.run_id) for c in changes]

    def queue_state(self, sessions: Sequence[SessionKey]) -> tuple[bool, set[SessionKey]]:
        self._await(self._raw.fetchval(_LOCK_SESSIONS, sorted({sid for sid, _ in sessions})))
        ids, orgs = [s for s, _ in sessions], [o for _, o in sessions]
        any_queued, busy = self._await(self._raw.fetchrow(_QUEUE_STATE, ids, orgs))
        if any_queued:
            return True, set()
        return False, {(sid, org) for sid, org in busy}

    def runs_by_key(self, keys: Sequence[IdempotencyKey]) -> dict[IdempotencyKey, RunRecord]:
        rows = self._await(self._raw.fetch(_BY_KEY, [o for o, _ in keys], [k for _, k in keys]))
        return {(run.org_id, run.idempotency_key or ""): run for run in map(_run, rows)}

    def insert_runs(
        self, rows: Sequence[dict[str, Any]], sessions: Sequence[dict[str, Any]]
    ) -> dict[str, RunRecord]:
        ids = [row["id"] for row in rows]
        starts = [start_event(row["id"], row["session_id"], row["created_at"]) for row in rows]
        inserted = self._await(
            self._raw.fetch(
                _INSERT_RUNS,
                *_RUNS.arrays(rows),
                *_SESSIONS.arrays(sessions),
                ids,
                ids,
                [json.dumps(e.data) for e in starts],
                [e.created_at for e in starts],
            )
        )
        return {run.id: run for run in map(_run, inserted)}

    def insert_deliveries(self, rows: Sequence[dict[str, Any]]) -> None:
        self._await(self._raw.execute(_DELIVERIES.insert(), *_DELIVERIES.arrays(rows)))


def broken(exc: BaseException) -> bool:
    """asyncpg's own protocol state is off (say an unsolicited FATAL error of a server shutting
    down was read before the connection's end): the connection is not to be used again."""
    return isinstance(exc, asyncpg.InternalClientError)


# ---- notifications -----------------------------------------------------------------------------

# Per asyncpg connection, the notifications to send with its transaction's COMMIT.
_at_commit: weakref.WeakKeyDictionary[Any, list[tuple[str, str]]] = weakref.WeakKeyDictionary()
# Payloads written into the statement as they are: what the store announces (its origin, a hex id,
# and run ids) always is. Anything else goes as a parameter, in a statement of its own.
_PLAIN = frozenset("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-_:.")
_NOTIFY = "SELECT pg_notify(c, p) FROM unnest({}::text[], {}::text[]) AS n(c, p)"


def notify_at_commit(conn: Connection, notices: Sequence[tuple[str, str]]) -> None:
    """Inside the writer's transaction: NOTIFY (channel, payload) for each of `notices` when it
    commits (PostgreSQL delivers a notification at commit, and not at all on a rollback). They are
    sent in the COMMIT's round trip, as one statement with array literals (one entry in
    pg_stat_statements however many there are)."""
    raw: Any = conn.connection.driver_connection
    plain: list[tuple[str, str]] = []
    other: list[tuple[str, str]] = []
    for notice in notices:
        (plain if _PLAIN.issuperset(notice[0]) and _PLAIN.issuperset(notice[1]) else other).append(notice)
    if other:
        await_(raw.execute(_NOTIFY.format("$1", "$2"), [c for c, _ in other], [p for _, p in other]))
    _at_commit.setdefault(raw, []).extend(plain)


def _commit(raw: Any) -> str:
    """COMMIT, after the notifications queued by notify_at_commit."""
    notices = _at_commit.pop(raw, [])
    if not notices:
        return "COMMIT"
    channels, payloads = (_array_literal(column) for column in zip(*notices, strict=True))
    return f"{_NOTIFY.format(channels, payloads)}; COMMIT"


def _array_literal(values: Sequence[str]) -> str:
    return "'{" + ",".join(f'"{v}"' for v in values) + "}'"  # only _PLAIN characters: nothing to escape
