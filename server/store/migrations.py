"""Numbered schema migrations, applied in order at startup; each runs once per database."""

from __future__ import annotations

import time
from collections.abc import Callable

from sqlalchemy import Connection, Engine, select
from sqlmodel import SQLModel

from server.store.tables import SCHEMA_VERSION


def _v1_initial(conn: Connection) -> None:
    SQLModel.metadata.create_all(conn)


MIGRATIONS: list[Callable[[Connection], None]] = [_v1_initial]


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
