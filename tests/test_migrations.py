"""Migrations bring an existing database forward without losing a row: a SQLite file made before
run numbers were AUTOINCREMENT keeps its runs and their numbers, and then never reuses a deleted
run's number."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

from sqlalchemy import MetaData, Table, create_engine, insert

from server.store.contract import open_store
from server.store.records import COMPLETED, QUEUED, STOP, NewRun, Outcome
from server.store.tables import RUN
from tests.test_store_contract import new_run

DONE = Outcome(COMPLETED, STOP, {"state": COMPLETED}, result={"output": "done"})


def _row(new: NewRun) -> dict[str, Any]:
    now = time.time()
    return {
        **{k: getattr(new, k) for k in NewRun.__slots__},
        "state": QUEUED,
        "attempt": 1,
        "deadline": now + new.timeout_s,
        "last_seq": 1,
        "cancel_requested": False,
        "created_at": now,
        "updated_at": now,
    }


def _database_of_v4(path: Path, runs: list[NewRun]) -> None:
    """The schema as migrations 1-4 left it (`run` without AUTOINCREMENT), holding `runs`."""
    old = MetaData()
    for table in RUN.metadata.sorted_tables:
        table.to_metadata(old)
    run: Table = old.tables["run"]
    run.dialect_options["sqlite"]["autoincrement"] = False
    engine = create_engine(f"sqlite:///{path}")
    with engine.begin() as conn:
        old.create_all(conn)
        conn.execute(insert(run), [_row(new) for new in runs])
        conn.execute(
            insert(old.tables["schema_version"]), [{"version": v, "applied_at": 0.0} for v in (1, 2, 3, 4)]
        )
    engine.dispose()
    with sqlite3.connect(path) as db:
        ddl = db.execute("SELECT sql FROM sqlite_master WHERE name = 'run'").fetchone()[0]
    assert "AUTOINCREMENT" not in ddl.upper()


async def test_v5_rebuilds_run_with_autoincrement_and_keeps_every_row(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    runs = [new_run() for _ in range(3)]
    _database_of_v4(path, runs)
    async with open_store(f"sqlite:///{path}", lambda _: None) as store:
        found = [await store.get_run(new.id) for new in runs]
        assert [r.number if r else None for r in found] == [1, 2, 3]
        newest = found[2]
        assert newest is not None
        assert await store.transition(newest.id, DONE, states=[QUEUED]) is not None
        assert await store.delete_run(newest.id)
        after, _ = await store.create_run(new_run())
        assert after.number == 4  # not 3 again
    with sqlite3.connect(path) as db:
        ddl = db.execute("SELECT sql FROM sqlite_master WHERE name = 'run'").fetchone()[0]
        tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "AUTOINCREMENT" in ddl.upper() and "run_before_v5" not in tables
