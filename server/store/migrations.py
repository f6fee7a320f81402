"""Numbered schema migrations, applied in order at startup; each runs once per database."""

from __future__ import annotations

import time
from collections.abc import Callable

from sqlalchemy import JSON, Column, Connection, Engine, String, inspect, select, text
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import SQLModel

from server.store.tables import RUN, SCHEMA_VERSION, WEBHOOK_DELIVERY


def _v1_initial(conn: Connection) -> None:
    SQLModel.metadata.create_all(conn)


def _add_column(conn: Connection, table: str, column: Column[object]) -> None:
    # v1 creates the current tables, so a fresh database already has the column.
    if column.name not in {c["name"] for c in inspect(conn).get_columns(table)}:
        kind = column.type.compile(dialect=conn.dialect)
        conn.execute(text(f"ALTER TABLE {table} ADD COLUMN {column.name} {kind}"))


def _v2_run_messages(conn: Connection) -> None:
    _add_column(conn, "run", Column("messages", JSON(none_as_null=True), nullable=True))


def _v3_webhook_outbox(conn: Connection) -> None:
    _add_column(conn, "run", Column("webhook_format", String(16), nullable=True))
    _add_column(conn, "run", Column("webhook_result", JSON(none_as_null=True), nullable=True))
    WEBHOOK_DELIVERY.create(conn, checkfirst=True)


def _v4_org_state_index(conn: Connection) -> None:
    # v1 creates the current indexes, so a fresh database already has it.
    for index in RUN.indexes:
        if index.name == "ix_run_state_org":
            index.create(conn, checkfirst=True)


def _v5_run_numbers_never_reused(conn: Connection) -> None:
    """SQLite gives the largest rowid again once its row is deleted, so deleting the newest run made
    its number name the next run (family C's run ids are these numbers). AUTOINCREMENT never reuses
    one: rebuild the table with it. PostgreSQL's sequence never reuses a number."""
    if conn.dialect.name != "sqlite":
        return
    ddl = conn.execute(
        text("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'run'")
    ).scalar_one()
    if "AUTOINCREMENT" in ddl.upper():
        return  # created by v1 with the current definition
    conn.execute(text("ALTER TABLE run RENAME TO run_before_v5"))
    for index in RUN.indexes:  # they moved with the old table; the new one creates them again
        conn.execute(text(f"DROP INDEX IF EXISTS {index.name}"))
    RUN.create(conn)
    columns = ", ".join(column.name for column in RUN.columns)
    conn.execute(text(f"INSERT INTO run ({columns}) SELECT {columns} FROM run_before_v5"))
    conn.execute(text("DROP TABLE run_before_v5"))


def _v6_retention_index(conn: Connection) -> None:
    """Retention finds finished runs by when they ended; without this index each batch of a purge
    would read the whole run table. v1 (and v5's rebuild) create it with the current tables."""
    for index in RUN.indexes:
        if index.name == "ix_run_state_completed":
            index.create(conn, checkfirst=True)


def _v7_trace_context(conn: Connection) -> None:
    _add_column(conn, "run", Column("trace_context", String(64), nullable=True))
    _add_column(conn, "webhook_delivery", Column("traceparent", String(64), nullable=True))


def _v8_run_numbers_64_bit(conn: Connection) -> None:
    """run.number was a 32-bit SERIAL on PostgreSQL: after 2,147,483,647 runs no run could be
    stored. Make the column and its sequence BIGINT (v1 creates them so on a new database). The
    column's type change rewrites the table and its indexes under an exclusive lock: on a large
    table startup waits for it. SQLite's INTEGER primary key has 64 bits already."""
    if conn.dialect.name != "postgresql":
        return
    kind = conn.execute(
        text(
            "SELECT data_type FROM information_schema.columns"
            " WHERE table_schema = current_schema() AND table_name = 'run' AND column_name = 'number'"
        )
    ).scalar_one()
    if kind != "bigint":
        conn.execute(text("ALTER TABLE run ALTER COLUMN number TYPE BIGINT"))
    sequence = conn.execute(text("SELECT pg_get_serial_sequence('run', 'number')")).scalar_one()
    # Its maximum becomes BIGINT's too, as it was INTEGER's.
    conn.execute(text(f"ALTER SEQUENCE {sequence} AS BIGINT"))


MIGRATIONS: list[Callable[[Connection], None]] = [
    _v1_initial,
    _v2_run_messages,
    _v3_webhook_outbox,
    _v4_org_state_index,
    _v5_run_numbers_never_reused,
    _v6_retention_index,
    _v7_trace_context,
    _v8_run_numbers_64_bit,
]


def _apply(conn: Connection) -> None:
    SCHEMA_VERSION.create(conn, checkfirst=True)
    done = set(conn.execute(select(SCHEMA_VERSION.c.version)).scalars())
    for number, step in enumerate(MIGRATIONS, start=1):
        if number not in done:
            step(conn)
            conn.execute(SCHEMA_VERSION.insert().values(version=number, applied_at=time.time()))


def migrate(engine: Engine) -> None:
    with engine.begin() as conn:
        _apply(conn)


# Serializes migrations of replicas that start at once (PostgreSQL transaction-scoped advisory lock).
_LOCK = text("SELECT pg_advisory_xact_lock(7352860)")


async def migrate_async(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.execute(_LOCK)
        await conn.run_sync(_apply)
