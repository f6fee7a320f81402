"""server/store/prepared.py runs the store's Core statements on SQLite's DB-API connection. Each
statement is checked against SQLAlchemy executing the same statement on the same data: the same
rows, the same values read back (JSON, booleans, NULLs), the same rows changed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, bindparam, create_engine, insert, select

from server.store import statements as st
from server.store.batch import Change, run_values
from server.store.prepared import Prepared
from server.store.records import COMPLETED, QUEUED, RUNNING, NewRun, Outcome
from server.store.sqlite_steps import RUN_KEYS, change_params
from server.store.tables import RUN, RUN_EVENT, SESSION


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[Connection]:
    engine = create_engine(f"sqlite:///{tmp_path / 'p.db'}")
    RUN.metadata.create_all(engine, tables=[RUN, RUN_EVENT, SESSION])
    with engine.connect() as connection:
        yield connection
    engine.dispose()


def _new(run_id: str, **fields: Any) -> NewRun:
    values: dict[str, Any] = {
        "id": run_id,
        "agent_id": "echo",
        "org_id": "org",
        "user_id": "u",
        "session_id": f"s-{run_id}",
        "input": {"message": "hi", "nested": [1, {"a": None}]},
        "timeout_s": 60.0,
    }
    return NewRun(**(values | fields))


def _raw(conn: Connection) -> Any:
    return conn.connection.dbapi_connection


def test_insert_returning_reads_back_what_sqlalchemy_reads(conn: Connection) -> None:
    prepared = Prepared(st.INSERT_RUN, conn.dialect, RUN_KEYS)
    values = run_values(_new("a", extras={"k": ["v", 1.5, True]}), ("owner", 30.0), 100.0)
    with conn.begin():
        ours = prepared.rows(prepared.execute(_raw(conn), values))
        theirs = conn.execute(select(RUN).where(RUN.c.id == "a")).mappings().one()
    assert ours == [dict(theirs)]
    assert ours[0]["cancel_requested"] is False  # SQLite's 0, read as the Boolean column reads it
    assert ours[0]["extras"] == {"k": ["v", 1.5, True]} and ours[0]["result"] is None


def test_an_in_list_expands_to_its_length_and_literals_bind_themselves(conn: Connection) -> None:
    insert_run = Prepared(st.INSERT_RUN, conn.dialect, RUN_KEYS)
    transition = Prepared(st.TRANSITION, conn.dialect)
    outcome = Outcome(COMPLETED, "STOP", {}, result={"output": "x"})

    def params(run_id: str, states: tuple[str, ...], owner: str | None) -> dict[str, Any]:
        no_future: Any = None
        op = Change(run_id, outcome, states, owner, None, None, None, lambda r, n: {}, no_future)
        return change_params(op, 2.0)

    def change(run_id: str, states: tuple[str, ...], owner: str | None) -> list[dict[str, Any]]:
        return transition.rows(transition.execute(_raw(conn), params(run_id, states, owner)))

    with conn.begin():
        insert_run.execute(_raw(conn), run_values(_new("a"), ("me", 30.0), 1.0))
        insert_run.execute(_raw(conn), run_values(_new("b"), None, 1.0))
        assert change("a", (QUEUED,), None) == []  # RUNNING is not in (QUEUED)
        assert change("a", (QUEUED, RUNNING), "someone else") == []  # the owner condition holds
        [done] = change("a", (QUEUED, RUNNING), "me")
        assert done["state"] == COMPLETED and done["result"] == {"output": "x"}
        assert done["lease_owner"] is None and done["last_seq"] == 2 and done["completed_at"] == 2.0
        [queued_done] = change("b", (RUNNING, QUEUED, "PAUSED"), None)
        assert queued_done["state"] == COMPLETED
    with pytest.raises(ValueError, match="at least one"):
        transition.params(params("a", (), None))


def test_executemany_and_rowcount(conn: Connection) -> None:
    events = Prepared(insert(RUN_EVENT), conn.dialect, [c.name for c in RUN_EVENT.c])
    advance = Prepared(st.ADVANCE, conn.dialect)
    rows = [
        {"run_id": "a", "seq": n, "type": "T", "data": {"n": n, "none": None}, "created_at": 1.0}
        for n in (2, 3)
    ]
    with conn.begin():
        Prepared(st.INSERT_RUN, conn.dialect, RUN_KEYS).execute(
            _raw(conn), run_values(_new("a"), ("me", 9.0), 1.0)
        )
        events.executemany(_raw(conn), rows)
        params = {"rid": "a", "owner": "me", "after": 1, "last": 3, "now": 2.0}
        assert advance.execute(_raw(conn), params).rowcount == 1
        assert advance.execute(_raw(conn), params).rowcount == 0  # last_seq moved on
        stored = conn.execute(select(RUN_EVENT.c.data).order_by(RUN_EVENT.c.seq)).scalars().all()
    assert stored == [{"n": 2, "none": None}, {"n": 3, "none": None}]


def test_an_insert_must_name_every_column_with_a_default(conn: Connection) -> None:
    with pytest.raises(ValueError, match="column default"):
        Prepared(insert(RUN), conn.dialect, ["id", "agent_id"])


def test_a_value_rendered_at_execution_time_is_refused(conn: Connection) -> None:
    statement = select(RUN.c.number).limit(bindparam("lim", literal_execute=True))
    with pytest.raises(ValueError, match="at execution time"):
        Prepared(statement, conn.dialect)
