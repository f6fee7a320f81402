"""Migrations bring an existing database forward without losing a row: a SQLite file made before
run numbers were AUTOINCREMENT keeps its runs and their numbers, and then never reuses a deleted
run's number; a PostgreSQL database whose run numbers were a 32-bit SERIAL keeps its runs and goes
on numbering past 2**31."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from sqlalchemy import Integer, MetaData, Table, create_engine, insert
from sqlalchemy.ext.asyncio import create_async_engine

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


def _schema_of_v7() -> MetaData:
    """The tables as migrations 1-7 left them: run.number the 32-bit integer of before v8."""
    old = MetaData()
    for table in RUN.metadata.sorted_tables:
        table.to_metadata(old)
    old.tables["run"].c.number.type = Integer()
    return old


async def _postgres_of_v7(url: str, runs: list[NewRun]) -> None:
    """A PostgreSQL database as migrations 1-7 left it (run.number a SERIAL), holding `runs`."""
    old = _schema_of_v7()
    engine = create_async_engine(url)
    async with engine.begin() as conn:
        await conn.run_sync(old.create_all)
        await conn.execute(insert(old.tables["run"]), [_row(new) for new in runs])
        rows = [{"version": v, "applied_at": 0.0} for v in range(1, 8)]
        await conn.execute(insert(old.tables["schema_version"]), rows)
    await engine.dispose()


async def _number_types(db: asyncpg.Connection) -> tuple[str, str]:
    column = await db.fetchval(
        "SELECT data_type FROM information_schema.columns WHERE table_name = 'run' AND column_name = 'number'"
    )
    sequence = await db.fetchval(
        "SELECT data_type::text FROM pg_sequences WHERE sequencename = 'run_number_seq'"
    )
    return column, sequence


@pytest.mark.parametrize("made_by", ["v7", "v8"])
async def test_postgresql_run_numbers_go_past_32_bits(postgres_url: str, made_by: str) -> None:
    """A database made before v8 (run.number a SERIAL) is widened keeping its runs and their numbers;
    a new one is made BIGINT at once. Either numbers runs past 2**31 - 1."""
    runs = [new_run() for _ in range(2)] if made_by == "v7" else []
    db = await asyncpg.connect(postgres_url.replace("postgresql+asyncpg://", "postgresql://", 1))
    try:
        if made_by == "v7":
            await _postgres_of_v7(postgres_url, runs)
            assert await _number_types(db) == ("integer", "integer")
        async with open_store(postgres_url, lambda _: None) as store:
            assert await _number_types(db) == ("bigint", "bigint")
            found = [await store.get_run(new.id) for new in runs]
            assert [r.number if r else None for r in found] == list(range(1, len(runs) + 1))
            await db.execute(f"SELECT setval('run_number_seq', {2**31 + 5})")
            first, _ = await store.create_run(new_run())
            second, _ = await store.create_run(new_run(), lease=("w1", 30.0))
            assert (first.number, second.number) == (2**31 + 6, 2**31 + 7)
            again = await store.get_run(second.id)
            assert again is not None and again.number == 2**31 + 7
    finally:
        await db.close()
