"""pydantic_events.streamed: a pydantic-ai run's events as run_stream_events gives them (the same
engine events once mapped), then its result; a tool runs only once the consumer took its call event
(the engine stores TOOL_START in between); a failure comes out of the stream and leaves no task
behind."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from typing import Any

import pytest
from pydantic_ai import Agent, AgentRunResultEvent, Tool
from pydantic_ai.messages import FunctionToolCallEvent, FunctionToolResultEvent, ModelMessage
from pydantic_ai.models import Model
from pydantic_ai.run import AgentRunResult
from pydantic_ai.tools import DeferredToolRequests

from server.agents.base import AgentEvent, ToolEnd
from server.agents.demo_model import build_demo_model
from server.agents.pydantic_events import EventMapper, streamed
from server.agents.schema_output import schema_output


async def collect(agent: Agent[None, Any], prompt: str, **options: Any) -> list[Any]:
    def iterate(model: Model) -> Any:
        return agent.iter(prompt, model=model, **options)

    async with contextlib.aclosing(streamed(iterate, build_demo_model())) as events:
        return [event async for event in events]


def mapped(events: list[Any]) -> list[AgentEvent]:
    mapper = EventMapper(approval_tools=frozenset({"send_email"}), decided=frozenset())
    # A tool's duration is a timing, not content.
    return [
        dataclasses.replace(m, duration_ms=0) if isinstance(m, ToolEnd) else m
        for event in events
        for m in mapper.map(event)
    ]


def shape(messages: list[ModelMessage]) -> list[list[tuple[Any, ...]]]:
    """What the messages say, without their timestamps and ids."""
    return [
        [(type(p).__name__, getattr(p, "content", None), getattr(p, "args", None)) for p in m.parts]
        for m in messages
    ]


def clock() -> str:
    """The time."""
    return "noon"


def calculator(expression: str) -> str:
    """Evaluate arithmetic."""
    return "42"


def send_email(to: str, subject: str, body: str) -> str:
    """Send an email."""
    return "sent"


@pytest.mark.parametrize(
    ("prompt", "tools", "output_type"),
    [
        ("hello from the test", [clock, calculator], None),
        ("what is 6 * 7", [clock, calculator], None),
        ("what time is it?", [clock], None),
        ("answer in json", [], [schema_output({"type": "object"}), DeferredToolRequests]),
        ("email the team", [Tool(send_email, requires_approval=True)], [str, DeferredToolRequests]),
    ],
)
async def test_the_engine_events_of_run_stream_events_then_the_result(
    prompt: str, tools: list[Any], output_type: Any
) -> None:
    agent: Agent[None, Any] = Agent(None, instructions="Repeat the user's message.", tools=tools)
    ours = await collect(agent, prompt, output_type=output_type)
    async with agent.run_stream_events(prompt, model=build_demo_model(), output_type=output_type) as events:
        theirs = [event async for event in events]
    assert isinstance(ours[-1], AgentRunResult) and isinstance(theirs[-1], AgentRunResultEvent)
    assert ours[-1].output == theirs[-1].result.output
    assert shape(ours[-1].all_messages()) == shape(theirs[-1].result.all_messages())
    assert ours[-1].usage == theirs[-1].result.usage
    assert mapped(ours[:-1]) == mapped(theirs[:-1]) != []


async def _turns_for_other_tasks(turns: int = 50) -> None:
    """Suspend for `turns` turns of the loop: a tool run by any other task would run meanwhile."""
    for _ in range(turns):
        await asyncio.sleep(0)


async def test_a_tool_runs_only_after_its_call_was_taken() -> None:
    order: list[str] = []

    def clock() -> str:
        """The time."""
        order.append("tool runs")
        return "noon"

    agent: Agent[None, str] = Agent(None, tools=[clock])

    def iterate(model: Model) -> Any:
        return agent.iter("what time is it?", model=model)

    async with contextlib.aclosing(streamed(iterate, build_demo_model())) as events:
        async for event in events:
            if isinstance(event, FunctionToolCallEvent):
                await _turns_for_other_tasks()  # the engine storing TOOL_START
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

    agent: Agent[None, str] = Agent(None, tools=[clock])
    with pytest.raises(RuntimeError, match="the clock broke"):
        await collect(agent, "what time is it?")
    assert [t for t in asyncio.all_tasks() if t is not asyncio.current_task()] == []
