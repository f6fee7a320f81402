"""pydantic_events.streamed: a pydantic-ai run's events as run_stream_events gives them, then its
result; a tool runs only once the consumer took its call event (the engine stores TOOL_START in
between); a failure comes out of the stream and leaves no task behind."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest
from pydantic_ai import Agent, AgentRunResultEvent
from pydantic_ai.messages import FunctionToolCallEvent, FunctionToolResultEvent
from pydantic_ai.run import AgentRunResult

from server.agents.demo_model import build_demo_model
from server.agents.pydantic_events import Handler, streamed


async def collect(agent: Agent[None, str], prompt: str) -> list[Any]:
    def start(handler: Handler) -> Any:
        return agent.run(prompt, event_stream_handler=handler)

    async with contextlib.aclosing(streamed(start)) as events:
        return [event async for event in events]


async def test_the_events_of_run_stream_events_then_the_result() -> None:
    agent: Agent[None, str] = Agent(build_demo_model(), instructions="Repeat the user's message.")
    ours = await collect(agent, "hello from the test")
    async with agent.run_stream_events("hello from the test") as events:
        theirs = [event async for event in events]
    assert isinstance(ours[-1], AgentRunResult) and isinstance(theirs[-1], AgentRunResultEvent)
    assert ours[-1].output == theirs[-1].result.output == "hello from the test"
    kinds = [(type(e).__name__, getattr(e, "index", None)) for e in ours[:-1]]
    assert kinds == [(type(e).__name__, getattr(e, "index", None)) for e in theirs[:-1]]


async def test_a_tool_runs_only_after_its_call_was_taken() -> None:
    order: list[str] = []

    def clock() -> str:
        """The time."""
        order.append("tool runs")
        return "noon"

    agent: Agent[None, str] = Agent(build_demo_model(), tools=[clock])

    def start(handler: Handler) -> Any:
        return agent.run("what time is it?", event_stream_handler=handler)

    async with contextlib.aclosing(streamed(start)) as events:
        async for event in events:
            if isinstance(event, FunctionToolCallEvent):
                await asyncio.sleep(0.05)  # the engine storing TOOL_START
                order.append("call stored")
            elif isinstance(event, FunctionToolResultEvent):
                order.append("result")
            elif isinstance(event, AgentRunResult):
                assert "noon" in event.output
    assert order == ["call stored", "tool runs", "result"]


async def test_a_failure_comes_out_of_the_stream_and_leaves_no_task() -> None:
    def clock() -> str:
        """The time."""
        raise RuntimeError("the clock broke")  # raised out of the run, not handed to the model

    agent: Agent[None, str] = Agent(build_demo_model(), tools=[clock])
    with pytest.raises(RuntimeError, match="the clock broke"):
        await collect(agent, "what time is it?")
    assert [t for t in asyncio.all_tasks() if t is not asyncio.current_task()] == []
