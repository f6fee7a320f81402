"""The runner on the pydantic-ai path. Its appends: events an agent yields while the run's previous
append is being committed go together in one append (pydantic-ai awaits between the events of a
run, which made each its own writer op), still in order and gap-free; a tool call is stored before
the agent goes on (the tool ledger); a run cancelled with events waiting stores them all before its
end. Its history: a run in a session the engine made for it reads none."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass

import pytest
from prometheus_client import REGISTRY

from server.agents.base import (
    AgentContext,
    AgentEvent,
    AgentInfo,
    ContentDelta,
    Finished,
    PriorTurn,
    ToolEnd,
    ToolStart,
)
from server.engine.runner import Runner
from server.store.contract import Store, open_store
from server.store.records import (
    CANCELLED,
    COMPLETED,
    CONTENT_DELTA,
    ERROR,
    TOOL_END,
    EventRecord,
    NewRun,
    RunRecord,
)

OWNER = "worker-1"
INFO = AgentInfo(id="scripted", name="Scripted")
Script = Callable[["Scripted", AgentContext], AsyncGenerator[AgentEvent, None]]


@dataclass
class Scripted:
    """An agent that runs a test's script."""

    script: Script
    store: Store
    committed: asyncio.Event
    runner: Runner | None = None
    info: AgentInfo = INFO

    def run(self, ctx: AgentContext) -> AsyncGenerator[AgentEvent, None]:
        return self.script(self, ctx)


@pytest.fixture
def committed() -> asyncio.Event:
    """Set by every group commit of the store."""
    return asyncio.Event()


@pytest.fixture
async def store(committed: asyncio.Event) -> AsyncIterator[Store]:
    async with open_store("sqlite:///:memory:", lambda _: committed.set()) as opened:
        yield opened


def writer_ops() -> float:
    return REGISTRY.get_sample_value("agentrun_writer_batch_ops_sum") or 0.0


async def execute(
    store: Store, committed: asyncio.Event, script: Script, new_session: bool = False
) -> tuple[RunRecord, list[EventRecord], float]:
    """Run the script as a leased run; its final record, stored events and the writer ops it took."""
    new = NewRun(str(uuid.uuid4()), "scripted", "org", "user", "session", {"message": "hi"}, 60.0)
    run, _ = await store.create_run(new, lease=(OWNER, 60.0))
    agent = Scripted(script, store, committed)
    agent.runner = Runner(store, OWNER, agent, run, new_session=new_session)
    before = writer_ops()
    record = await agent.runner.execute()
    assert record is not None
    return record, await store.list_events(run.id, 0, 100), writer_ops() - before


def texts(events: list[EventRecord]) -> list[str]:
    return [e.data["text"] for e in events if e.type == CONTENT_DELTA]


async def test_events_yielded_during_a_commit_share_an_append(store: Store, committed: asyncio.Event) -> None:
    async def script(agent: Scripted, _: AgentContext) -> AsyncGenerator[AgentEvent, None]:
        agent.committed.clear()
        for word in ("a", "b", "c", "d", "e"):  # back to back: "a" is being committed meanwhile
            yield ContentDelta(word)
        await agent.committed.wait()
        yield ContentDelta("f")  # before the flush of "b".."e" is queued: it joins them
        yield Finished("abcdef")

    record, events, ops = await execute(store, committed, script)
    assert record.state == COMPLETED and record.result is not None and record.result["output"] == "abcdef"
    assert [e.seq for e in events] == list(range(1, 9))  # START, six deltas, STOP
    assert texts(events) == ["a", "b", "c", "d", "e", "f"]
    assert ops == 3  # "a"; "b".."f"; the run's end (one op per event made it 7)


async def test_a_tool_call_is_stored_before_the_agent_goes_on(store: Store, committed: asyncio.Event) -> None:
    ledger: list[list[str]] = []

    async def script(agent: Scripted, ctx: AgentContext) -> AsyncGenerator[AgentEvent, None]:
        yield ContentDelta("a")
        yield ContentDelta("b")  # waits for "a"'s commit
        yield ToolStart("call-1", "clock", "{}")
        ledger.append(await agent.store.started_tools(ctx.run_id))
        yield ToolEnd("call-1", "clock", "noon", 1)
        yield Finished("ab")

    record, events, _ = await execute(store, committed, script)
    assert ledger == [["clock"]]
    assert record.state == COMPLETED
    assert [e.seq for e in events] == list(range(1, len(events) + 1)) and len(events) == 6


async def test_a_cancelled_run_stores_its_waiting_events(store: Store, committed: asyncio.Event) -> None:
    async def script(agent: Scripted, _: AgentContext) -> AsyncGenerator[AgentEvent, None]:
        yield ContentDelta("a")
        yield ContentDelta("b")
        yield ToolStart("call-1", "clock", "{}")
        yield ContentDelta("c")
        yield ContentDelta("d")  # waits behind "c"
        assert agent.runner is not None
        agent.runner.interrupt("cancel", "stop now")
        await asyncio.Event().wait()  # cancelled here
        yield Finished("never")

    record, events, _ = await execute(store, committed, script)
    assert record.state == CANCELLED
    assert [e.seq for e in events] == list(range(1, 9))  # START a b TOOL_START c d TOOL_END ERROR
    assert texts(events) == ["a", "b", "c", "d"]
    assert [e.type for e in events][-2:] == [TOOL_END, ERROR]


async def test_a_run_in_a_session_the_engine_made_reads_no_history(
    store: Store, committed: asyncio.Event
) -> None:
    seen: list[list[PriorTurn]] = []

    async def script(_: Scripted, ctx: AgentContext) -> AsyncGenerator[AgentEvent, None]:
        seen.append(await ctx.history())
        yield Finished("done")

    await execute(store, committed, script)  # the session's first turn
    await execute(store, committed, script)  # the second one sees it
    await execute(store, committed, script, new_session=True)  # as the engine made a new session
    assert [len(turns) for turns in seen] == [0, 1, 0]
    assert seen[1][0].output == "done"
