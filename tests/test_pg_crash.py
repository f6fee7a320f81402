"""Crashes with several server processes on one PostgreSQL: a replica killed mid-stream, and the
database restarted under load. Every accepted run must end exactly once, and streams re-attached
through a survivor must see no gap and no repeat. And the store's writer, its connection killed
between two commits, reconnects and commits the next writes."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator

import asyncpg
import grpc
import pytest
from agentrun.v1 import run_pb2
from agentrun.v1 import run_service_pb2 as pb

from server.store.contract import open_store
from server.store.records import RUNNING
from tests import postgres
from tests.test_process import Proc
from tests.test_store_contract import delta, new_run

S = run_pb2
TERMINAL: set[int] = {S.RUN_STATE_COMPLETED, S.RUN_STATE_FAILED, S.RUN_STATE_CANCELLED}
FINAL = {S.EVENT_TYPE_STOP, S.EVENT_TYPE_ERROR}


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    started: list[Proc] = []
    yield started
    for proc in started:
        if proc.p.poll() is None:
            proc.stop(signal.SIGKILL)


def events_of(proc: Proc, run_id: str) -> list[run_pb2.RunEvent]:
    return list(proc.stub.ListRunEvents(pb.ListRunEventsRequest(run_id=run_id, page_size=1000)).events)


def assert_ended_once(proc: Proc, run_id: str) -> run_pb2.Run:
    run = proc.get(run_id)
    assert run.state in TERMINAL
    events = events_of(proc, run_id)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert [e.type in FINAL for e in events].count(True) == 1 and events[-1].type in FINAL
    return run


def test_a_replica_killed_mid_stream(postgres_url: str, procs: list[Proc]) -> None:
    executor = Proc(postgres_url)
    # Answers and sweeps, executes nothing; one attempt per run: lost runs end WORKER_LOST, not queued
    # again (tests/test_process.py covers that).
    survivor = Proc(postgres_url, "--workers", "0", "--max-attempts", "1")
    procs += [executor, survivor]
    runs = [executor.run("slow", "tokens=400 delay_ms=20") for _ in range(4)]
    for run in runs:
        assert executor.wait_for(run.id, {S.RUN_STATE_RUNNING}, 5).state == S.RUN_STATE_RUNNING

    seen: list[run_pb2.RunEvent] = []
    request = pb.StreamRunRequest(run_id=runs[0].id, after_seq=0)
    reader = threading.Thread(target=lambda: seen.extend(r.event for r in survivor.stub.StreamRun(request)))
    reader.start()
    deadline = time.monotonic() + 5
    while len(seen) < 10 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(seen) >= 10  # live events of a run executing elsewhere
    executor.stop(signal.SIGKILL)
    reader.join(timeout=10)
    assert not reader.is_alive()

    assert [e.seq for e in seen] == list(range(1, len(seen) + 1))  # no gap, no repeat
    assert seen[-1].type == S.EVENT_TYPE_ERROR and seen[-1].error.reason == "WORKER_LOST"
    for run in runs:
        ended = survivor.wait_for(run.id, TERMINAL, 5)
        assert ended.error.reason == "WORKER_LOST"
        assert_ended_once(survivor, run.id)
    assert survivor.stub.GetRun(pb.GetRunRequest(run_id=runs[0].id)).run.last_seq == seen[-1].seq


def test_the_database_restarts_under_load(procs: list[Proc]) -> None:
    cluster = postgres.Cluster()
    admin = cluster.start()
    try:
        url, _ = postgres.fresh_database(admin)
        a, b = Proc(url), Proc(url)
        procs += [a, b]
        accepted: list[str] = []
        refused = 0
        stop = time.monotonic() + 4
        restarted = False
        while time.monotonic() < stop:
            for proc in (a, b):
                try:
                    accepted.append(proc.run("slow", "tokens=5 delay_ms=20").id)
                except grpc.RpcError:
                    refused += 1  # while the database is down: an error, never a lost run
            if not restarted and time.monotonic() > stop - 3:
                cluster.restart()
                restarted = True
            time.sleep(0.01)
        assert restarted and len(accepted) > 20
        for run_id in accepted:
            deadline = time.monotonic() + 20
            while (state := _state(a, run_id)) not in TERMINAL and time.monotonic() < deadline:
                time.sleep(0.05)
            assert state in TERMINAL, run_id
            assert_ended_once(a, run_id)
        # after the restart both servers serve again
        assert a.run("echo", "back", wait=True).state == S.RUN_STATE_COMPLETED
        assert b.run("echo", "back", wait=True).state == S.RUN_STATE_COMPLETED
    finally:
        cluster.stop()


def _state(proc: Proc, run_id: str) -> int:
    try:
        return int(proc.get(run_id).state)
    except grpc.RpcError:
        return S.RUN_STATE_UNSPECIFIED


async def _kill_connections(url: str) -> int:
    """Terminate every other connection to the database (as a restart or an administrator would):
    the server sends each a FATAL error and closes it."""
    db = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://", 1))
    try:
        return int(
            await db.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        )
    finally:
        await db.close()


@pytest.mark.parametrize("first", ["append", "claim"])
async def test_the_writer_reconnects_when_its_connection_is_killed(postgres_url: str, first: str) -> None:
    """The first write after the kill runs on asyncpg directly (an append) or through SQLAlchemy
    (a claim); either way the batch is retried on a new connection, not failed."""
    async with open_store(postgres_url, lambda _: None) as store:
        run, _ = await store.create_run(new_run(), lease=("w1", 60.0))
        assert run.state == RUNNING
        assert await _kill_connections(postgres_url) >= 1
        if first == "claim":
            assert await store.claim("w2", 5, 60.0) == ([], False)
        assert await (await store.append(run.id, "w1", [delta(run.id, 2)])) is True
        later, _ = await store.create_run(new_run())
        assert [e.seq for e in await store.list_events(run.id, 0, 10)] == [1, 2]
        assert (await store.get_run(later.id)) is not None
