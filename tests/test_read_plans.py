"""The run reads find their rows through the index of what they look up (id, number, session), never
through an index that makes them read a share of the table: their cost must not grow with the store.
SQLite keeps no statistics, so its planner can prefer an index with more equalities (org, state)
that matches every run of an org; these plans are checked on a schema made by the server's own
migrations, in its index order."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, Executable, create_engine, insert

from server.store import statements as st
from server.store.migrations import migrate
from server.store.reads import run_from_row, view_record
from server.store.tables import RUN

ID = "(id=?)"
NUMBER = "INTEGER PRIMARY KEY (rowid=?)"
SESSION = "ix_run_session (session_id=? AND number<?)"

READS: list[tuple[str, Executable, dict[str, Any], str]] = [
    ("RUN_BY_ID", st.RUN_BY_ID, {"ref": "a"}, ID),
    ("RUN_BY_ID_IN_ORG", st.RUN_BY_ID_IN_ORG, {"ref": "a", "org": "acme"}, ID),
    ("RUN_BY_NUMBER", st.RUN_BY_NUMBER, {"ref": 7}, NUMBER),
    ("RUN_BY_NUMBER_IN_ORG", st.RUN_BY_NUMBER_IN_ORG, {"ref": 7, "org": "acme"}, NUMBER),
    ("RUNS_BY_ID", st.RUNS_BY_ID, {"ids": ["a", "b", "c"]}, ID),
    ("RUNS_BY_ID_IN_ORG", st.RUNS_BY_ID_IN_ORG, {"ids": ["a", "b", "c"], "org": "acme"}, ID),
    ("RUNS_BY_NUMBER", st.RUNS_BY_NUMBER, {"numbers": [1, 2, 3]}, NUMBER),
    ("RUNS_BY_NUMBER_IN_ORG", st.RUNS_BY_NUMBER_IN_ORG, {"numbers": [1, 2, 3], "org": "acme"}, NUMBER),
    ("SESSION_HISTORY", st.SESSION_HISTORY, {"sid": "s", "org": "acme", "before": 9, "lim": 100}, SESSION),
]


@pytest.fixture(scope="module")
def conn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Connection]:
    path: Path = tmp_path_factory.mktemp("plans") / "agentrun.db"
    engine = create_engine(f"sqlite:///{path}")
    migrate(engine)
    with contextlib.closing(engine.connect()) as connection:
        yield connection
    engine.dispose()


def plan(conn: Connection, statement: Executable, params: dict[str, Any]) -> list[str]:
    compiled = conn.execute(statement, params).context
    raw: Any = conn.connection.dbapi_connection
    rows = raw.execute(f"EXPLAIN QUERY PLAN {compiled.statement}", compiled.parameters[0]).fetchall()
    return [str(row[3]) for row in rows]


@pytest.mark.parametrize(("name", "statement", "params", "lookup"), READS, ids=[r[0] for r in READS])
def test_a_run_read_searches_by_what_it_looks_up(
    conn: Connection, name: str, statement: Executable, params: dict[str, Any], lookup: str
) -> None:
    steps = plan(conn, statement, params)
    assert len(steps) == 1, (name, steps)
    assert steps[0].startswith("SEARCH run USING") and steps[0].endswith(lookup), (name, steps)


def test_a_run_read_row_makes_the_same_record_by_position_as_by_name(conn: Connection) -> None:
    values: dict[str, Any] = {
        "id": "run-1", "agent_id": "echo", "org_id": "acme", "user_id": "u", "session_id": "s",
        "state": "PAUSED", "attempt": 2, "input": {"message": "hi"}, "result": {"output": "o"},
        "error_reason": "R", "error_message": "m", "pending_action": {"tool_call_id": "t"},
        "decisions": [{"tool_call_id": "t"}], "timeout_s": 9.5, "deadline": 3.0, "idempotency_key": "k",
        "webhook_url": "http://w", "webhook_format": "RUN", "webhook_result": {"state": "PENDING"},
        "extras": {"a": "b"}, "trace_context": "00-t", "last_seq": 4, "cancel_requested": True,
        "lease_owner": "w1", "lease_expires_at": 5.0, "created_at": 1.0, "started_at": 1.5,
        "updated_at": 2.0, "completed_at": None, "agent_state": {"x": 1}, "messages": [{"m": 1}],
    }  # fmt: skip
    conn.execute(insert(RUN).values(**values))
    row = conn.execute(st.RUN_BY_ID, {"ref": "run-1"}).one()
    conn.rollback()
    record = view_record(row)
    assert record == run_from_row(row)
    assert record.webhook_result == {"state": "PENDING"} and record.trace_context == "00-t"
    assert record.agent_state is None and record.messages is None  # not read for a Run message
