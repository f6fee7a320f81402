"""A group commit's statements on SQLite: one per row, on the writer thread's connection (no
network: a statement costs SQLite a few microseconds). The statements are the store's Core ones
(server/store/statements.py), compiled once and run on the DB-API connection (server/store/prepared.py)
inside the transaction SQLAlchemy began."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.engine import Dialect

from server.store import statements as st
from server.store.batch import (
    Chain,
    Change,
    IdempotencyKey,
    SessionKey,
    change_event,
    event_row,
    run_values,
    session_row,
    start_event,
)
from server.store.prepared import Prepared
from server.store.records import TERMINAL, EventRecord, NewRun, RunRecord
from server.store.tables import RUN_EVENT, WEBHOOK_DELIVERY

# The columns each INSERT is given: every one with a default included, so none is computed in Python.
RUN_KEYS = list(run_values(NewRun("", "", "", "", "", {}, 0.0), None, 0.0))
SESSION_KEYS = list(session_row(NewRun("", "", "", "", "", {}, 0.0), 0.0))
EVENT_KEYS = [c.name for c in RUN_EVENT.c]


class SqliteStatements:
    """The prepared statements of the SQLite steps, built once per writer."""

    def __init__(self, dialect: Dialect, insert_run_ignore: Any, count_session: Any) -> None:
        self.dialect = dialect
        self.insert_run = Prepared(st.INSERT_RUN, dialect, RUN_KEYS)
        self.insert_run_ignore = Prepared(insert_run_ignore, dialect, RUN_KEYS)
        self.count_session = Prepared(count_session, dialect, SESSION_KEYS)
        self.insert_event = Prepared(RUN_EVENT.insert(), dialect, EVENT_KEYS)
        self.advance = Prepared(st.ADVANCE, dialect)
        self.transition = Prepared(st.TRANSITION, dialect)
        self.any_queued = Prepared(st.ANY_QUEUED, dialect)
        self.session_busy = Prepared(st.SESSION_BUSY, dialect)
        self.run_by_key = Prepared(st.RUN_BY_KEY, dialect)
        self._deliveries: dict[tuple[str, ...], Prepared] = {}

    def insert_deliveries(self, keys: tuple[str, ...]) -> Prepared:
        prepared = self._deliveries.get(keys)
        if prepared is None:
            prepared = self._deliveries[keys] = Prepared(WEBHOOK_DELIVERY.insert(), self.dialect, keys)
        return prepared


def change_params(change: Change, now: float) -> dict[str, Any]:
    """The parameters of statements.TRANSITION for a change."""
    outcome = change.outcome
    return {
        "rid": change.run_id,
        "states": list(change.states),
        "owner": change.owner,
        "lease_before": change.lease_before,
        "deadline_before": change.deadline_before,
        "seq": change.seq,
        "now": now,
        "v_state": outcome.state,
        "v_completed_at": now if outcome.state in TERMINAL else None,
        "attempt_inc": 1 if outcome.release else 0,
        "v_pending_action": outcome.pending_action,
        "v_result": outcome.result,
        "v_error_reason": outcome.error_reason,
        "v_error_message": outcome.error_message,
        "v_agent_state": outcome.agent_state,
        "v_messages": outcome.messages,
    }


class SqliteSteps:
    """batch.Steps on SQLite, row by row."""

    def __init__(self, conn: Connection, statements: SqliteStatements) -> None:
        self.conn = conn
        self._raw: Any = conn.connection.dbapi_connection
        self._st = statements

    def transaction(self) -> AbstractContextManager[Any]:
        return self.conn.begin()

    def advance(self, chains: Sequence[Chain], now: float) -> set[str]:
        done = set()
        events = []
        for c in chains:
            params = {"rid": c.run_id, "owner": c.owner, "after": c.after, "last": c.last, "now": now}
            if self._st.advance.execute(self._raw, params).rowcount == 1:
                done.add(c.run_id)
                events += c.events
        self._insert_events(events)
        return done

    def change(self, changes: Sequence[Change], now: float) -> list[RunRecord | None]:
        runs = [self._run(self._st.transition, change_params(c, now)) for c in changes]
        self._insert_events(
            [change_event(c.outcome, r, now) for c, r in zip(changes, runs, strict=True) if r]
        )
        return runs

    def queue_state(self, sessions: Sequence[SessionKey]) -> tuple[bool, set[SessionKey]]:
        # No session locks: SQLite serializes writes (statements.lock_sessions).
        if self._st.any_queued.execute(self._raw, {}).fetchone() is not None:
            return True, set()
        busy = set()
        for sid, org in sessions:
            if self._st.session_busy.execute(self._raw, {"sid": sid, "org": org}).fetchone() is not None:
                busy.add((sid, org))
        return False, busy

    def runs_by_key(self, keys: Sequence[IdempotencyKey]) -> dict[IdempotencyKey, RunRecord]:
        found = {}
        for org, key in keys:
            run = self._run(self._st.run_by_key, {"org": org, "key": key})
            if run is not None:
                found[(org, key)] = run
        return found

    def insert_runs(
        self, rows: Sequence[dict[str, Any]], sessions: Sequence[dict[str, Any]]
    ) -> dict[str, RunRecord]:
        inserted = {}
        starts = []
        for values, session in zip(rows, sessions, strict=True):
            statement = self._st.insert_run_ignore if values["idempotency_key"] else self._st.insert_run
            run = self._run(statement, values)
            if run is not None:
                inserted[run.id] = run
                self._st.count_session.execute(self._raw, session)
                starts.append(start_event(run.id, run.session_id, run.created_at))
        self._insert_events(starts)
        return inserted

    def insert_deliveries(self, rows: Sequence[dict[str, Any]]) -> None:
        for row in rows:
            self._st.insert_deliveries(tuple(row)).execute(self._raw, row)

    def _insert_events(self, events: Sequence[EventRecord]) -> None:
        if events:
            self._st.insert_event.executemany(self._raw, [event_row(e) for e in events])

    def _run(self, statement: Prepared, params: dict[str, Any]) -> RunRecord | None:
        """The one run a statement returns (RETURNING or SELECT of every column), if any."""
        rows = statement.rows(statement.execute(self._raw, params))
        return RunRecord(**rows[0]) if rows else None
