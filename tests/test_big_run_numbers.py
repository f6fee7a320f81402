"""Run numbers past 32 bits (BIGINT since migration 8, SQLite's 64-bit rowid) name their runs like
any other: GetRun and BatchGetRuns by number, ListRuns' cursor across them, family C's run ids."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest
from agentrun.v1 import run_service_pb2 as pb

from common.local_channel import LocalChannel
from gateway.app import running_gateway
from gateway.families.c import setup as family_c
from gateway.settings import GatewaySettings
from tests.conftest import Harness, Launcher

PAST_32_BITS = 2**31 + 1_000


async def next_number_after(database_url: str, number: int) -> None:
    """Make the store give the next run the number after `number`."""
    if database_url.startswith("sqlite"):
        with sqlite3.connect(database_url.removeprefix("sqlite:///")) as db:
            db.execute("UPDATE sqlite_sequence SET seq = ? WHERE name = 'run'", (number,))
        return
    db = await asyncpg.connect(database_url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await db.execute("SELECT setval(pg_get_serial_sequence('run', 'number'), $1)", number)
    finally:
        await db.close()


@pytest.fixture
def database_url(durable_url: str) -> str:
    """A SQLite file or a PostgreSQL database: this test reaches into it from outside the store."""
    return durable_url


@pytest.fixture
async def h(launch: Launcher) -> Harness:
    return await launch()


@pytest.fixture
async def http(h: Harness) -> AsyncIterator[httpx.AsyncClient]:
    assert h.server.local is not None
    config = GatewaySettings(listen="127.0.0.1:0", upstream=f"127.0.0.1:{h.server.port}")
    async with (
        running_gateway(config, [family_c], None, LocalChannel(h.server.local)) as gateway,
        httpx.AsyncClient(base_url=gateway.url) as client,
    ):
        yield client


async def test_a_run_numbered_past_32_bits_is_found_by_its_number(
    h: Harness, database_url: str, http: httpx.AsyncClient
) -> None:
    small = await h.run("echo", "before", wait=True)
    await next_number_after(database_url, PAST_32_BITS)
    big = await h.run("echo", "after", wait=True)
    assert big.number == PAST_32_BITS + 1
    assert (await h.get(str(big.number))).id == big.id
    batch = await h.stub.BatchGetRuns(pb.BatchGetRunsRequest(run_ids=[str(big.number), str(small.number)]))
    assert [r.id for r in batch.runs] == [big.id, small.id] and not batch.missing_run_ids
    # ListRuns pages newest first; its cursor is the last run's number, past 32 bits here.
    first = await h.stub.ListRuns(pb.ListRunsRequest(page_size=1))
    assert [r.id for r in first.runs] == [big.id] and first.next_page_token
    second = await h.stub.ListRuns(pb.ListRunsRequest(page_size=1, page_token=first.next_page_token))
    assert [r.id for r in second.runs] == [small.id]
    # Family C names runs by number.
    answer = await http.get(f"/api/runs/{big.number}")
    assert answer.status_code == 200, answer.text
    assert (await http.get(f"/api/runs/{big.number + 1}")).status_code == 404
