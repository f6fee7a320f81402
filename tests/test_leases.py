"""Leases: a process renews the leases of the runs it executes and no others, so a run whose
runner is gone (a crash inside the server, a lost final write) is ended by the sweeper instead of
staying RUNNING forever."""

from __future__ import annotations

import asyncio
import uuid

from agentrun.v1 import run_pb2

from server.engine.engine import Submission
from server.store.records import ERROR, FAILED, RUNNING, TOOL_START, EventRecord, NewRun, Outcome
from tests.conftest import Harness, Launcher
from tests.waiting import until

S = run_pb2


async def orphan(h: Harness, *tools: str) -> str:
    """A run stored leased to this very process, as a run whose runner died would be (no runner has
    it), which had called `tools` before it was lost."""
    engine = h.server.engine
    new = NewRun(
        id=str(uuid.uuid4()),
        agent_id="echo",
        org_id="",
        user_id="",
        session_id=str(uuid.uuid4()),
        input={"message": "orphan"},
        timeout_s=3600.0,
    )
    run, created = await engine.store.create_run(new, lease=(engine.owner, engine.settings.lease_s))
    assert created and run.state == "RUNNING" and run.lease_owner == engine.owner
    calls = [
        EventRecord(run.id, seq, TOOL_START, {"id": f"c{seq}", "name": name, "arguments_json": "{}"}, 0.0)
        for seq, name in enumerate(tools, start=2)
    ]
    if calls:
        assert await (await engine.store.append(run.id, engine.owner, calls))
    return run.id


async def ended(h: Harness, run_id: str) -> run_pb2.Run:
    async def done() -> bool:
        return (await h.get(run_id)).state in (S.RUN_STATE_COMPLETED, S.RUN_STATE_FAILED)

    # lease 2 s + sweeps every 0.3 s (tests/conftest.py FAST): renewed, it would never end.
    await until(done, timeout=20, what="the orphaned run to be swept")
    return await h.get(run_id)


async def test_a_lost_run_that_called_no_tool_that_acts_runs_again(h: Harness) -> None:
    run_id = await orphan(h, "calculator", "clock")
    run = await ended(h, run_id)
    assert (run.state, run.attempt) == (S.RUN_STATE_COMPLETED, 2)
    events = await h.events(run_id=run_id)
    statuses = [e.status.reason for e in events if e.type == S.EVENT_TYPE_STATUS]
    assert statuses == ["WORKER_LOST", "RETRIED"]


async def test_a_lost_run_that_called_a_tool_that_may_have_acted_fails(h: Harness) -> None:
    run = await ended(h, await orphan(h, "calculator", "send_email"))
    assert (run.state, run.error.reason, run.attempt) == (S.RUN_STATE_FAILED, "WORKER_LOST", 1)


async def test_a_lost_run_with_no_attempts_left_fails(launch: Launcher) -> None:
    h = await launch(max_attempts=1)
    run = await ended(h, await orphan(h))
    assert (run.state, run.error.reason) == (S.RUN_STATE_FAILED, "WORKER_LOST")


async def test_a_worker_whose_events_stop_being_stored_stops_its_agent(h: Harness) -> None:
    """Another process ended the run (as a sweeper does after a lost lease): the worker's next
    events are refused, and it stops the agent instead of running it (and its model) to the end."""
    engine = h.server.engine
    run = await h.run("slow", "tokens=400 delay_ms=25")  # ten seconds of tokens

    async def streaming() -> bool:
        return engine.executing(run.id) and (await h.get(run.id)).state == S.RUN_STATE_RUNNING

    await until(streaming, what="the run to execute here")
    ended = Outcome(FAILED, ERROR, {"reason": "WORKER_LOST"}, error_reason="WORKER_LOST")
    assert await engine.store.transition(run.id, ended, states=[RUNNING]) is not None
    await until(lambda: not engine.executing(run.id), timeout=3, what="the worker to stop its agent")
    final = await h.get(run.id)
    assert (final.state, final.error.reason) == (S.RUN_STATE_FAILED, "WORKER_LOST")


async def test_a_run_cancelled_before_its_task_ran_ends_cancelled(h: Harness) -> None:
    """A cancel that lands between a run's start and the first step of its task: cancelling the
    task then would skip all of its code, so the run would stay RUNNING with its slot held forever
    (and CancelRun spun on it)."""
    engine = h.server.engine
    sub = Submission(agent_id="slow", input={"message": "tokens=100 delay_ms=50"})
    run, created = await engine.submit(sub, start=True)
    assert created and run.state == "RUNNING" and engine.executing(run.id)
    engine.cancel_here(run.id)  # no await since the start: the task has not run yet
    final = await asyncio.wait_for(engine.wait(run), timeout=10)
    assert (final.state, final.error_reason) == ("CANCELLED", "CANCELLED")
    await until(lambda: not engine.executing(run.id), what="the worker slot to be freed")
