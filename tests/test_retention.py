"""Retention: finished runs older than their cutoff go, with their events, finished webhook
deliveries and emptied sessions, in batches of short transactions; non-terminal runs and pending
deliveries stay whatever their age; replicas on one PostgreSQL database take turns; the background
task purges on its interval and stops with the server; the options parse or stop startup clearly.

Ages come from the cutoff handed to the purge (`before`) or from the task's clock, so no test waits
for time or rewrites timestamps, except where a row must look older than the store ever makes it."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import grpc
import pytest
from agentrun.v1 import run_pb2, run_service_pb2_grpc
from agentrun.v1 import run_service_pb2 as pb
from sqlalchemy import inspect, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from cli import main as cli_main
from server import settings as server_settings
from server.app import running
from server.engine.retention import Duration, DurationError, OrgAges, Retention, RetentionSettings
from server.store import migrations
from server.store.contract import Purged, Store, open_store
from server.store.records import (
    CANCELLED,
    COMPLETED,
    CONTENT_DELTA,
    ERROR,
    FAILED,
    PAUSED,
    PAUSED_EVENT,
    QUEUED,
    RUNNING,
    STOP,
    EventRecord,
    Outcome,
    RunFilter,
    RunRecord,
)
from server.store.retention import PURGE_LOCK_KEY
from server.store.tables import RUN, SCHEMA_VERSION, SESSION
from tests.conftest import server_settings as settings_for
from tests.test_store_contract import attempt, new_run
from tests.waiting import until

ORG = "org-a"
OWNER = "worker-1"
HOOK = "http://127.0.0.1:9/hook"
ENDINGS = {
    COMPLETED: Outcome(COMPLETED, STOP, {"state": COMPLETED}, result={"output": "done"}),
    FAILED: Outcome(FAILED, ERROR, {"reason": "X"}, error_reason="X", error_message="failed"),
    CANCELLED: Outcome(CANCELLED, ERROR, {"reason": "CANCELLED"}, error_reason="CANCELLED"),
}
PAUSE = Outcome(PAUSED, PAUSED_EVENT, {}, pending_action={"tool_call_id": "t1", "name": "send", "args": {}})


@pytest.fixture
async def store(durable_url: str) -> AsyncIterator[Store]:
    async with open_store(durable_url, lambda _: None) as opened:
        yield opened


@contextlib.asynccontextmanager
async def raw(url: str) -> AsyncIterator[AsyncConnection]:
    """Plain SQL on the test's database, beside the store (test setup and inspection only)."""
    engine = create_async_engine(url.replace("sqlite://", "sqlite+aiosqlite://", 1))
    try:
        async with engine.begin() as conn:
            yield conn
    finally:
        await engine.dispose()


async def sessions_left(url: str, session_ids: list[str]) -> set[str]:
    async with raw(url) as conn:
        rows = await conn.execute(select(SESSION.c.id).where(SESSION.c.id.in_(session_ids)))
        return set(rows.scalars())


async def started(store: Store, **fields: Any) -> RunRecord:
    run, _ = await store.create_run(new_run(**fields), lease=(OWNER, 60.0))
    assert run.state == RUNNING  # nothing queued ahead: started at once
    return run


async def finish(store: Store, state: str = COMPLETED, deltas: int = 0, **fields: Any) -> RunRecord:
    """A run that ended in `state`, with START, `deltas` content events and its final event."""
    run = await started(store, **fields)
    events = [
        EventRecord(run.id, seq, CONTENT_DELTA, {"text": "x"}, time.time()) for seq in range(2, 2 + deltas)
    ]
    if events:
        assert await (await store.append(run.id, OWNER, events))
    done = await store.transition(run.id, ENDINGS[state], states=[RUNNING], owner=OWNER)
    assert done is not None
    return done


async def finish_many(store: Store, count: int, deltas: int = 0, **fields: Any) -> list[RunRecord]:
    states = sorted(ENDINGS)
    runs = [finish(store, states[i % 3], deltas, **fields) for i in range(count)]
    return list(await asyncio.gather(*runs))


async def deliver_all(store: Store, status: int) -> None:
    """Send every due webhook once: 200 makes it DELIVERED, anything else FAILED (no retry)."""
    for delivery in await store.deliveries.claim_due("hooks", 100, 60.0):
        assert await store.deliveries.record(delivery, "hooks", attempt(status), None) is not None


def just_after(runs: list[RunRecord]) -> float:
    last = max(r.completed_at or 0.0 for r in runs)
    return last + 1e-6


async def gone(store: Store, run: RunRecord) -> bool:
    return (
        await store.get_run(run.id) is None
        and await store.list_events(run.id, 0, 100) == []
        and await store.deliveries.for_run(run.id) == []
    )


# ---- what a purge deletes ---------------------------------------------------------------------


async def test_old_finished_runs_go_with_their_events_deliveries_and_sessions(
    store: Store, durable_url: str
) -> None:
    old = await finish_many(store, 6, deltas=3)
    hooked = [await finish(store, state, webhook_url=HOOK) for state in (COMPLETED, FAILED)]
    await deliver_all(store, 200)
    failed_hook = await finish(store, webhook_url=HOOK)
    await deliver_all(store, 500)
    old += [*hooked, failed_hook]
    cutoff = just_after(old)
    recent = await finish_many(store, 3, deltas=1)
    assert min(r.completed_at or 0.0 for r in recent) > cutoff

    purged = await store.purge(cutoff)

    assert purged == Purged(runs=9, events=6 * 5 + 3 * 2, deliveries=3, sessions=9)
    for run in old:
        assert await gone(store, run), run.id
    for run in recent:
        assert await store.get_run(run.id) is not None
        assert [e.seq for e in await store.list_events(run.id, 0, 100)] == [1, 2, 3]
    everyone = [r.session_id for r in old + recent]
    assert await sessions_left(durable_url, everyone) == {r.session_id for r in recent}
    assert await store.purge(cutoff) == Purged()  # nothing old is left


async def test_non_terminal_runs_and_pending_webhooks_stay_however_old(
    store: Store, durable_url: str
) -> None:
    running_run = await started(store)
    paused = await store.transition((await started(store)).id, PAUSE, states=[RUNNING], owner=OWNER)
    assert paused is not None and paused.state == PAUSED
    in_flight = await finish(store, webhook_url=HOOK)
    [leased] = await store.deliveries.claim_due("hooks", 10, 60.0)  # being sent
    pending_hook = await finish(store, webhook_url=HOOK)  # due, not sent yet
    old_done = await finish_many(store, 2)
    queued, _ = await store.create_run(new_run())
    assert queued.state == QUEUED
    keep = [running_run, paused, pending_hook, in_flight, queued]
    async with raw(durable_url) as conn:
        # Ancient, and with completed_at set as if a bug had left it: the state decides, not a time.
        ids = [r.id for r in keep]
        await conn.execute(update(RUN).where(RUN.c.id.in_(ids)).values(created_at=1.0, completed_at=1.0))

    purged = await store.purge(time.time() + 86_400 * 365)

    assert purged == Purged(runs=2, events=4, deliveries=0, sessions=2)
    for run in keep:
        kept = await store.get_run(run.id)
        assert kept is not None and kept.state == run.state
        assert await store.list_events(run.id, 0, 100) != []
    assert [d.state for d in await store.deliveries.for_run(pending_hook.id)] == ["PENDING"]
    assert [d.id for d in await store.deliveries.for_run(in_flight.id)] == [leased.id]
    assert all([await gone(store, run) for run in old_done])
    # Once sent, the webhook no longer holds its run back.
    assert await store.deliveries.record(leased, "hooks", attempt(200), None) is not None
    assert await store.purge(time.time() + 86_400 * 365) == Purged(runs=1, events=2, deliveries=1, sessions=1)
    assert await store.get_run(in_flight.id) is None


async def test_a_session_goes_only_with_its_last_run(store: Store, durable_url: str) -> None:
    first = await finish(store, session_id="shared")
    cutoff = just_after([first])
    second = await finish(store, session_id="shared")
    lonely = await finish(store, session_id="lonely")

    assert await store.purge(cutoff) == Purged(runs=1, events=2, deliveries=0, sessions=0)
    assert await sessions_left(durable_url, ["shared", "lonely"]) == {"shared", "lonely"}
    assert await store.get_run(second.id) is not None

    assert await store.purge(just_after([second, lonely])) == Purged(runs=2, events=4, sessions=2)
    assert await sessions_left(durable_url, ["shared", "lonely"]) == set()


async def test_an_org_can_have_its_own_age(store: Store) -> None:
    runs = {org: await finish_many(store, 2, org_id=org) for org in ("a", "kept", "short")}
    orgs: dict[str, float | None] = {"kept": None, "short": time.time() + 10}
    # The default cutoff is before every run: only "short", whose own cutoff is later, loses runs.
    purged = await store.purge(time.time() - 3600, orgs=orgs)
    assert purged is not None and purged.runs == 2
    assert all([await gone(store, r) for r in runs["short"]])
    # A later default reaches "a" but not "kept", which keeps its runs forever.
    purged = await store.purge(time.time() + 10, orgs=orgs)
    assert purged is not None and purged.runs == 2
    assert all([await gone(store, r) for r in runs["a"]])
    assert all([await store.get_run(r.id) is not None for r in runs["kept"]])

    settings = RetentionSettings(max_age_s=100.0, orgs=OrgAges("kept=0,short=10"))
    assert settings.cutoffs(1000.0) == (900.0, {"kept": None, "short": 990.0})
    assert RetentionSettings(orgs=OrgAges("x=0")).enabled is False


# ---- batches and replicas ---------------------------------------------------------------------


async def test_a_backlog_goes_in_batches_with_other_writes_in_between(store: Store) -> None:
    old = await finish_many(store, 1200)
    cutoff = just_after(old)
    finished = RunFilter(org_id=ORG, states=(COMPLETED, FAILED, CANCELLED))
    sizes = []
    while (batch := await store.purge(cutoff, limit=500)) is not None and batch.runs:
        assert batch.events == 2 * batch.runs
        sizes.append(batch.runs)
        # Each batch committed on its own: the rest is still there, and other writes go on meanwhile.
        _, left = await store.list_runs(finished, before_number=None, limit=1)
        assert left == 1200 - sum(sizes) + len(sizes) - 1  # (runs written after earlier batches stay)
        run = await finish(store)
        assert await store.get_run(run.id) is not None
    assert sizes == [500, 500, 200]
    _, left = await store.list_runs(finished, before_number=None, limit=1)
    assert left == len(sizes)  # only the runs written between the batches


async def test_a_pass_counts_its_batches_and_rows() -> None:
    async with open_store("sqlite:///:memory:", lambda _: None) as store:
        old = await finish_many(store, 5, deltas=1)
        retention = Retention(RetentionSettings(max_age_s=60.0, batch=2))
        done = await retention.purge(store, now=just_after(old) + 60.0)
        assert done == Purged(runs=5, events=15, deliveries=0, sessions=5)
        assert (retention.batches, retention.passes, retention.skipped) == (3, 1, 0)
        assert retention.deleted == done and retention.last_pass_at is not None


async def test_two_replicas_purging_at_once_delete_each_run_once(durable_url: str) -> None:
    async with (
        open_store(durable_url, lambda _: None) as one,
        open_store(durable_url, lambda _: None) as two,
    ):
        old = await finish_many(one, 600)
        now = just_after(old) + 60.0
        replicas = [Retention(RetentionSettings(max_age_s=60.0, batch=100)) for _ in range(2)]
        passes = [r.purge(store, now) for r, store in zip(replicas, (one, two), strict=True)]
        done = await asyncio.gather(*passes)
        assert sum(d.runs for d in done) == 600 and sum(d.events for d in done) == 1200
        assert all([await one.get_run(r.id) is None for r in old[::50]])
        # Both stores go on working.
        for store in (one, two):
            assert (await finish(store)).state == COMPLETED


async def test_a_replica_purging_holds_the_others_off(postgres_url: str) -> None:
    async with open_store(postgres_url, lambda _: None) as store:
        old = await finish_many(store, 3)
        cutoff = just_after(old)
        other = await asyncpg.connect(postgres_url.replace("postgresql+asyncpg://", "postgresql://"))
        try:
            holding = other.transaction()
            await holding.start()
            await other.execute(f"SELECT pg_advisory_xact_lock({PURGE_LOCK_KEY})")
            assert await store.purge(cutoff) is None
            retention = Retention(RetentionSettings(max_age_s=1.0))
            assert await retention.purge(store, now=cutoff + 1.0) == Purged()
            assert (retention.skipped, retention.batches) == (1, 0)
            assert all([await store.get_run(r.id) is not None for r in old])
            # The purge lock is its own: capped claims (which take another one) go on meanwhile.
            queued, _ = await store.create_run(new_run())
            claimed, _ = await store.claim("w2", 10, 30.0, max_running=5)
            assert [r.id for r in claimed] == [queued.id]
            await holding.rollback()
        finally:
            await other.close()
        assert await store.purge(cutoff) == Purged(runs=3, events=6, sessions=3)


# ---- the background task ----------------------------------------------------------------------


async def test_the_task_purges_on_its_interval_and_stops(store: Store) -> None:
    # Its clock runs two hours ahead: every run that ends is an hour past the retention age.
    settings = RetentionSettings(max_age_s=3600.0, interval_s=0.1)
    retention = Retention(settings, clock=lambda: time.time() + 7200)
    retention.start(store)
    assert retention.running
    await finish_many(store, 3)
    await until(lambda: retention.deleted.runs == 3, what="the first runs purged")
    passes = retention.passes
    await finish_many(store, 2)
    await until(lambda: retention.deleted.runs == 5, what="runs that ended later purged on a later pass")
    assert retention.passes > passes and retention.failures == 0
    await retention.stop()
    assert not retention.running
    await retention.stop()  # stopping twice is fine

    off = Retention(RetentionSettings())
    off.start(store)
    assert not off.running


async def test_the_server_runs_retention_and_stops_it_on_shutdown(durable_url: str) -> None:
    settings = dataclasses.replace(
        settings_for(durable_url), retention=RetentionSettings(max_age_s=0.05, interval_s=0.1)
    )
    async with running(settings) as server, grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = run_service_pb2_grpc.RunServiceStub(channel)
        request = pb.RunRequest(agent_id="echo", input=run_pb2.RunInput(message="hi"), wait=True)
        run = (await stub.Run(request)).run
        assert run.state == run_pb2.RUN_STATE_COMPLETED

        async def purged() -> bool:
            try:
                await stub.GetRun(pb.GetRunRequest(run_id=run.id))
            except grpc.aio.AioRpcError as exc:
                return exc.code() == grpc.StatusCode.NOT_FOUND
            return False

        await until(purged, what="the finished run purged by the server's retention task")
        retention = server.retention
        assert retention is not None and retention.running and retention.deleted.runs >= 1
    assert not retention.running


# ---- options and schema -----------------------------------------------------------------------


def test_the_options_parse_durations_and_org_ages() -> None:
    assert server_settings.load([]).retention == RetentionSettings()
    assert not RetentionSettings().enabled
    loaded = server_settings.load(
        ["--retention", "30d", "--retention-org", "acme=7d, big = 1w,free=0", "--retention-batch", "200"],
        environ={"AGENTRUN_RETENTION_INTERVAL": "15m"},
    )
    assert loaded.retention == RetentionSettings(
        max_age_s=30 * 86400.0,
        orgs=OrgAges("acme=604800,big=7d,free=0"),
        interval_s=900.0,
        batch=200,
    )
    assert dict(loaded.retention.orgs) == {"acme": 604800.0, "big": 604800.0, "free": 0.0}
    assert [Duration(t) for t in ("90", "1.5h", "2W", " 10s ", "0")] == [90.0, 5400.0, 1209600.0, 10.0, 0.0]
    assert server_settings.load([], {"AGENTRUN_RETENTION": "12h"}).retention.max_age_s == 43200.0


@pytest.mark.parametrize("text", ["30x", "-1d", "d", "", "1e3", "inf", "nan"])
def test_a_bad_duration_is_refused(text: str) -> None:
    with pytest.raises(DurationError, match="not a duration"):
        Duration(text)


def test_bad_retention_options_stop_startup_clearly(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        server_settings.load(["--retention", "30x"])
    assert exited.value.code == 2
    assert "argument --retention: '30x' is not a duration" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        server_settings.load(["--retention-org", "acme"])
    assert "argument --retention-org: 'acme' is not org=age" in capsys.readouterr().err
    with pytest.raises(ValueError, match="--retention-batch must be between 1 and"):
        server_settings.load(["--retention-batch", "0"])
    with pytest.raises(ValueError, match="--retention-interval must be more than 0"):
        server_settings.load([], {"AGENTRUN_RETENTION_INTERVAL": "0"})


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        ((), {"AGENTRUN_RETENTION": "5y"}, "'5y' is not a duration"),
        (("--retention-batch", "0"), {}, "--retention-batch must be between 1 and"),
    ],
)
def test_the_serve_command_says_so_in_one_line(
    args: tuple[str, ...],
    env: dict[str, str],
    message: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as exited:  # refused before anything starts
        cli_main.main(["serve", "--no-gateway", "--listen", "127.0.0.1:0", *args])
    assert exited.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("agentrun: ") and message in lines[0], lines


async def test_the_migration_adds_the_purge_index_to_an_existing_database(durable_url: str) -> None:
    version = migrations.MIGRATIONS.index(migrations._v6_retention_index) + 1
    async with open_store(durable_url, lambda _: None) as store:
        kept = await finish(store)
    async with raw(durable_url) as conn:  # as the database was before the index existed
        await conn.execute(text("DROP INDEX ix_run_state_completed"))
        await conn.execute(SCHEMA_VERSION.delete().where(SCHEMA_VERSION.c.version == version))
    async with open_store(durable_url, lambda _: None) as store:
        assert await store.get_run(kept.id) is not None
    async with raw(durable_url) as conn:
        indexes = await conn.run_sync(lambda c: inspect(c).get_indexes("run"))
        applied = set((await conn.execute(select(SCHEMA_VERSION.c.version))).scalars())
    columns = {index["name"]: index["column_names"] for index in indexes}
    assert columns.get("ix_run_state_completed") == ["state", "completed_at"]
    assert version in applied
