"""The pydantic-ai runtime with the offline demo model, driven directly (no server, no database)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any, TypeVar

import pytest
from pydantic_ai.messages import ModelMessage, ModelRequest, ToolReturnPart
from pydantic_ai.models.function import AgentInfo as ModelInfo
from pydantic_ai.models.function import DeltaToolCall, DeltaToolCalls, FunctionModel

from server.agents.base import (
    Agent,
    AgentContext,
    AgentEvent,
    ApprovalRequired,
    ContentDelta,
    Decision,
    Finished,
    Options,
    ReasoningDelta,
    RunInput,
    ToolEnd,
    ToolStart,
)
from server.agents.pydantic_agent import PydanticAgent
from server.agents.registry import AgentRegistry

T = TypeVar("T")
EMAIL_REQUEST = "Please email the team that the release is done"


@pytest.fixture(scope="module")
def registry() -> AgentRegistry:
    return AgentRegistry.load()


def context(message: str, **kwargs: Any) -> AgentContext:
    return run_context(RunInput(message), **kwargs)


def run_context(run_input: RunInput, **kwargs: Any) -> AgentContext:
    return AgentContext(run_id="run-1", session_id="session-1", user_id="user-1", input=run_input, **kwargs)


async def collect(agent: Agent | None, ctx: AgentContext) -> list[AgentEvent]:
    assert agent is not None
    return [event async for event in agent.run(ctx)]


def of_type(events: list[AgentEvent], kind: type[T]) -> list[T]:
    return [e for e in events if isinstance(e, kind)]


async def pause(registry: AgentRegistry) -> ApprovalRequired:
    events = await collect(registry.get("ai-approval"), context(EMAIL_REQUEST))
    assert isinstance(events[-1], ApprovalRequired)
    return events[-1]


async def test_echo_streams_reasoning_then_the_message_word_by_word(registry: AgentRegistry) -> None:
    message = "the quick brown fox jumps"
    events = await collect(registry.get("ai-echo"), context(message))

    assert isinstance(events[0], ReasoningDelta)
    deltas = of_type(events, ContentDelta)
    assert len(deltas) == 5
    assert "".join(d.text for d in deltas) == message
    finished = events[-1]
    assert isinstance(finished, Finished)
    assert finished.output == message
    assert finished.usage.model_calls == 1
    assert finished.usage.output_tokens > 0
    assert finished.followups == ()


async def test_tools_agent_calls_the_calculator(registry: AgentRegistry) -> None:
    events = await collect(registry.get("ai-tools"), context("what is 2 * (3 + 4)?"))

    kinds = [type(e) for e in events if isinstance(e, ToolStart | ToolEnd | Finished)]
    assert kinds == [ToolStart, ToolEnd, Finished]
    start, end, finished = of_type(events, ToolStart)[0], of_type(events, ToolEnd)[0], events[-1]
    assert start.name == "calculator"
    assert json.loads(start.arguments_json) == {"expression": "2 * (3 + 4)"}
    assert (end.tool_call_id, end.name, end.is_error) == (start.tool_call_id, "calculator", False)
    assert end.result == "14"
    assert isinstance(finished, Finished)
    assert "14" in finished.output
    assert finished.usage.model_calls == 2
    assert finished.usage.tool_ms == end.duration_ms


async def test_tools_agent_uses_the_clock_without_arithmetic(registry: AgentRegistry) -> None:
    events = await collect(registry.get("ai-tools"), context("what time is it?"))

    assert [e.name for e in of_type(events, ToolStart)] == ["clock"]
    assert isinstance(events[-1], Finished)


async def test_a_failing_tool_is_reported_to_the_model_not_raised(registry: AgentRegistry) -> None:
    events = await collect(registry.get("ai-tools"), context("what is 1 / 0"))

    end = of_type(events, ToolEnd)[0]
    assert end.is_error
    assert "division by zero" in end.result
    assert isinstance(events[-1], Finished)
    assert "failed" in events[-1].output


async def test_approval_pauses_with_json_safe_state(registry: AgentRegistry) -> None:
    paused = await pause(registry)

    assert paused.name == "send_email"
    assert json.loads(paused.arguments_json)["to"] == "team@example.com"
    assert json.loads(json.dumps(paused.state)) == paused.state


async def test_approved_call_runs_after_resume(registry: AgentRegistry) -> None:
    paused = await pause(registry)
    state = json.loads(json.dumps(paused.state))  # as if stored and read back by another process

    ctx = context(EMAIL_REQUEST, state=state, decision=Decision(paused.tool_call_id, approved=True))
    events = await collect(registry.get("ai-approval"), ctx)

    end = of_type(events, ToolEnd)[0]
    assert (end.tool_call_id, end.name, end.is_error) == (paused.tool_call_id, "send_email", False)
    assert "queued for delivery" in end.result
    assert isinstance(events[-1], Finished)
    assert "queued for delivery" in events[-1].output


async def test_rejected_call_is_reported_as_refused(registry: AgentRegistry) -> None:
    paused = await pause(registry)
    state = json.loads(json.dumps(paused.state))

    decision = Decision(paused.tool_call_id, approved=False, reason="not today")
    ctx = context(EMAIL_REQUEST, state=state, decision=decision)
    events = await collect(registry.get("ai-approval"), ctx)

    end = of_type(events, ToolEnd)[0]
    assert (end.tool_call_id, end.name, end.is_error) == (paused.tool_call_id, "send_email", True)
    assert "not today" in end.result
    finished = events[-1]
    assert isinstance(finished, Finished)
    assert "refused" in finished.output
    assert "not today" in finished.output


async def test_followups_when_asked(registry: AgentRegistry) -> None:
    ctx = run_context(RunInput("tell me about otters", generate_followups=True))
    events = await collect(registry.get("ai-echo"), ctx)

    assert isinstance(events[-1], Finished)
    assert len(events[-1].followups) == 3


async def test_json_answer_streams_as_text(registry: AgentRegistry) -> None:
    ctx = run_context(RunInput("hello there", response_format="json"))
    events = await collect(registry.get("ai-echo"), ctx)

    finished = events[-1]
    assert isinstance(finished, Finished)
    assert finished.output_json == {"answer": "hello there"}
    assert json.loads(finished.output) == finished.output_json
    assert "".join(d.text for d in of_type(events, ContentDelta)) == finished.output


async def test_run_options_reach_the_model(registry: AgentRegistry) -> None:
    agent = registry.get("ai-echo")
    assert isinstance(agent, PydanticAgent)
    seen: list[Any] = []

    async def stream(messages: list[ModelMessage], info: ModelInfo) -> AsyncIterator[str]:
        seen.append(info.model_settings)
        yield "ok"

    options = Options(temperature=0.25, max_tokens=64)
    ctx = run_context(RunInput("hi", options=options))
    with agent.agent.override(model=FunctionModel(stream_function=stream)):
        await collect(agent, ctx)

    assert seen[0]["temperature"] == 0.25
    assert seen[0]["max_tokens"] == 64


async def test_parallel_approvals_are_asked_one_at_a_time(registry: AgentRegistry) -> None:
    """Two calls needing approval in one response: the engine decides one at a time, the run goes
    on once both are decided."""
    agent = registry.get("ai-approval")
    assert isinstance(agent, PydanticAgent)

    async def two_emails(messages: list[ModelMessage], _: ModelInfo) -> AsyncIterator[str | DeltaToolCalls]:
        last = messages[-1]
        if isinstance(last, ModelRequest) and any(isinstance(p, ToolReturnPart) for p in last.parts):
            yield "done"
            return
        args = json.dumps({"to": "team@example.com", "subject": "s"})
        yield {i: DeltaToolCall("send_email", args, tool_call_id=f"c{i}") for i in (1, 2)}

    with agent.agent.override(model=FunctionModel(stream_function=two_emails)):
        first = (await collect(agent, context("x")))[-1]
        assert isinstance(first, ApprovalRequired) and first.tool_call_id == "c1"
        state = json.loads(json.dumps(first.state))
        second = await collect(agent, context("x", state=state, decision=Decision("c1", approved=True)))
        assert len(second) == 1 and isinstance(second[0], ApprovalRequired) and second[0].tool_call_id == "c2"
        state = json.loads(json.dumps(second[0].state))
        events = await collect(agent, context("x", state=state, decision=Decision("c2", approved=False)))

    assert sorted((e.tool_call_id, e.is_error) for e in of_type(events, ToolEnd)) == [
        ("c1", False),
        ("c2", True),
    ]
    assert isinstance(events[-1], Finished)


async def test_resume_without_state_fails(registry: AgentRegistry) -> None:
    ctx = context("x", state={}, decision=Decision("c1", approved=True))
    with pytest.raises(ValueError, match="cannot resume"):
        await collect(registry.get("ai-approval"), ctx)


async def test_cancellation_stops_the_run(registry: AgentRegistry) -> None:
    agent = registry.get("ai-echo")
    assert isinstance(agent, PydanticAgent)
    received = 0
    streaming = asyncio.Event()

    async def consume() -> None:
        nonlocal received
        # As the engine does: aclosing, so the run is torn down in this task when it stops.
        async with contextlib.aclosing(agent.run(context("word " * 100_000))) as events:
            async for _ in events:
                received += 1
                if received == 10:
                    streaming.set()

    task = asyncio.create_task(consume())
    await streaming.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert received < 100_000
    assert [t for t in asyncio.all_tasks() if t is not asyncio.current_task()] == []
