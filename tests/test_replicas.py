"""Several server replicas on one PostgreSQL database: any replica answers for any run. Streams,
Cancel and Continue sent to one replica reach a run that another executes; LISTEN/NOTIFY carries
the news between them (the replicas here poll rarely, so only the notifications can be fast)."""

from __future__ import annotations

import asyncio
import time

import pytest
from agentrun.v1 import run_pb2
from agentrun.v1 import run_service_pb2 as pb

from tests.conftest import Harness, Launcher
from tests.waiting import until

S = run_pb2


@pytest.fixture
def database_url(postgres_url: str) -> str:
    return postgres_url


async def replicas(launch: Launcher) -> tuple[Harness, Harness]:
    """`front` takes requests but executes nothing; `worker` executes."""
    worker = await launch(poll_interval_s=5.0)
    front = await launch(workers=0, poll_interval_s=5.0)
    return front, worker


async def test_a_stream_through_another_replica_is_live_and_whole(launch: Launcher) -> None:
    front, worker = await replicas(launch)
    run = await front.run("slow", "tokens=30 delay_ms=20")
    started = time.monotonic()
    events = await front.events(run_id=run.id, after_seq=0)
    assert time.monotonic() - started < 3  # not waiting for 5 s polls
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert events[-1].type == S.EVENT_TYPE_STOP
    assert len([e for e in events if e.type == S.EVENT_TYPE_CONTENT_DELTA]) == 30
    assert (await worker.get(run.id)).state == S.RUN_STATE_COMPLETED


async def test_cancel_and_continue_reach_the_executing_replica(launch: Launcher) -> None:
    front, _ = await replicas(launch)
    long = await front.run("slow", "tokens=500 delay_ms=20")
    async with asyncio.timeout(5):
        while (await front.get(long.id)).state != S.RUN_STATE_RUNNING:
            await asyncio.sleep(0.02)
    cancelled = (await front.stub.CancelRun(pb.CancelRunRequest(run_id=long.id))).run
    assert cancelled.state == S.RUN_STATE_CANCELLED

    paused = await front.run("approval", "email the team", wait=True)
    assert paused.state == S.RUN_STATE_PAUSED
    started = time.monotonic()
    request = pb.ContinueRequest(run_id=paused.id, decision=S.DECISION_APPROVE, wait=True)
    done = (await front.stub.Continue(request)).run
    assert done.state == S.RUN_STATE_COMPLETED and time.monotonic() - started < 3


async def test_a_cancel_reaches_the_executing_replica_at_once(launch: Launcher) -> None:
    """Leases of 30 s are renewed every 10 s: a cancel that waited for the renewal would take that
    long. NOTIFY tells the executing replica at once."""
    worker = await launch(poll_interval_s=5.0, lease_s=30.0)
    front = await launch(workers=0, poll_interval_s=5.0, lease_s=30.0)
    long = await front.run("slow", "tokens=500 delay_ms=20")

    async def running() -> bool:
        return worker.server.engine.executing(long.id)

    await until(running, what="the run to execute on the worker")
    started = time.monotonic()
    cancelled = (await front.stub.CancelRun(pb.CancelRunRequest(run_id=long.id))).run
    took = time.monotonic() - started
    assert cancelled.state == S.RUN_STATE_CANCELLED
    assert took < 3.0, f"the cancel took {took:.1f}s"
    assert not worker.server.engine.executing(long.id)


async def test_two_working_replicas_run_each_run_once(launch: Launcher) -> None:
    a = await launch(workers=4)
    b = await launch(workers=4)
    runs = await asyncio.gather(*(h.run("slow", "tokens=3 delay_ms=10") for h in (a, b) for _ in range(20)))
    async with asyncio.timeout(30):
        for run in runs:
            while (await a.get(run.id)).state != S.RUN_STATE_COMPLETED:
                await asyncio.sleep(0.05)
    for run in runs:
        events = await a.events(run_id=run.id, after_seq=0)
        assert [e.type for e in events].count(S.EVENT_TYPE_START) == 1
        assert [e.type for e in events].count(S.EVENT_TYPE_STOP) == 1
        assert (await a.get(run.id)).attempt == 1


async def test_two_replicas_never_start_two_runs_of_one_new_session(launch: Launcher) -> None:
    # The first runs of a new session, one through each replica at the same moment: a session with
    # no row yet had nothing to lock, and both replicas started their run.
    a, b = await launch(workers=64), await launch(workers=64)
    quiet = "tokens=1 delay_ms=60000"  # START, then a minute

    async def first_event(h: Harness, session: str) -> str:
        run = pb.RunRequest(agent_id="slow", input=run_pb2.RunInput(message=quiet), session_id=session)
        request = pb.StreamRunRequest(run=run)
        stream = h.stub.StreamRun(request)
        run_id = (await stream.read()).event.run_id
        stream.cancel()  # the run goes on
        return run_id

    for attempt in range(4):  # the race is narrow: try it on many sessions, several times
        sessions = [f"race-{attempt}-{i}" for i in range(40)]
        both = (asyncio.gather(first_event(a, s), first_event(b, s)) for s in sessions)
        pairs = await asyncio.gather(*both)
        for session, ids in zip(sessions, pairs, strict=True):
            states = sorted([(await a.get(run_id)).state for run_id in ids])
            assert states == [S.RUN_STATE_QUEUED, S.RUN_STATE_RUNNING], session
        await asyncio.gather(*(a.stub.CancelRun(pb.CancelRunRequest(run_id=i)) for ids in pairs for i in ids))
