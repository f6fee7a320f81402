"""pydantic-ai's stream events as engine events, with tool calls timed on the way, and the stream
of a run's events itself (`streamed`)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterable, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from pydantic_ai.messages import (
    AgentStreamEvent,
    FunctionToolCallEvent,
    FunctionToolResultEvent,
    PartDeltaEvent,
    PartStartEvent,
    TextPart,
    TextPartDelta,
    ThinkingPart,
    ThinkingPartDelta,
)
from pydantic_ai.run import AgentRunResult
from pydantic_ai.tools import RunContext

from server.agents.base import AgentEvent, ContentDelta, ReasoningDelta, ToolEnd, ToolStart, Usage


@dataclass(slots=True)
class EventMapper:
    """Maps one run's pydantic-ai stream events onto engine events, timing tool calls on the way."""

    approval_tools: frozenset[str]
    decided: frozenset[str]
    started: dict[str, float] = field(default_factory=dict)
    tool_ms: int = 0

    def map(self, event: AgentStreamEvent) -> Iterator[AgentEvent]:
        if isinstance(event, PartStartEvent | PartDeltaEvent):
            yield from self._delta(event)
        elif isinstance(event, FunctionToolCallEvent):
            yield from self._call(event)
        elif isinstance(event, FunctionToolResultEvent):
            yield self._result(event)

    @staticmethod
    def _delta(event: PartStartEvent | PartDeltaEvent) -> Iterator[AgentEvent]:
        # A part's first chunk arrives in its start event, the rest as deltas.
        content = event.part if isinstance(event, PartStartEvent) else event.delta
        if isinstance(content, ThinkingPart) and content.content:
            yield ReasoningDelta(content.content)
        elif isinstance(content, ThinkingPartDelta) and content.content_delta:
            yield ReasoningDelta(content.content_delta)
        elif isinstance(content, TextPart) and content.content:
            yield ContentDelta(content.content)
        elif isinstance(content, TextPartDelta) and content.content_delta:
            yield ContentDelta(content.content_delta)

    def _call(self, event: FunctionToolCallEvent) -> Iterator[AgentEvent]:
        part = event.part
        # A call that needs approval and wasn't decided yet will pause the run instead of executing:
        # it is announced by ApprovalRequired, and started for real when the run resumes.
        if part.tool_name in self.approval_tools and part.tool_call_id not in self.decided:
            return
        self.started[part.tool_call_id] = time.perf_counter()
        yield ToolStart(part.tool_call_id, part.tool_name, part.args_as_json_str())

    def _result(self, event: FunctionToolResultEvent) -> ToolEnd:
        part = event.part
        started = self.started.pop(part.tool_call_id, None)
        duration_ms = int((time.perf_counter() - started) * 1000) if started is not None else 0
        self.tool_ms += duration_ms
        result = part.model_response_str(wrap_if_error=False)
        return ToolEnd(part.tool_call_id, part.tool_name, result, duration_ms, part.outcome != "success")


def usage_of(result: AgentRunResult[Any], tool_ms: int) -> Usage:
    usage = result.usage
    return Usage(
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        reasoning_tokens=usage.output_reasoning_tokens,
        model_calls=usage.requests,
        tool_ms=tool_ms,
    )


# What `streamed` drives: a pydantic-ai run (`Agent.run` with all but this argument bound) that
# hands every node's events to `event_stream_handler`.
Handler = Callable[[RunContext[Any], AsyncIterable[AgentStreamEvent]], Awaitable[None]]
StartRun = Callable[[Handler], Awaitable[AgentRunResult[Any]]]
# An event, and for a tool call the future that lets the tool run.
_Item = tuple[AgentStreamEvent, asyncio.Future[None] | None]


async def streamed(start: StartRun) -> AsyncGenerator[AgentStreamEvent | AgentRunResult[Any], None]:
    """A run's events as they come, then its result (or its exception).

    As in `Agent.run_stream_events`, the run goes on in a task of its own, so pydantic-ai's cancel
    scopes and the tools' tasks never span our yields. Unlike it, the run hands its events over
    through a queue it need not wait on, where run_stream_events' zero-buffer stream took two task
    switches per event (of 86 event-loop turns per demo run, 76 are left). The one wait kept is at
    a tool call: the tool runs only once the consumer asks for the next event, that is after the
    engine has stored its TOOL_START (the tool ledger)."""
    queue: asyncio.Queue[_Item | None] = asyncio.Queue()  # None: the run has ended
    loop = asyncio.get_running_loop()

    async def handler(_ctx: RunContext[Any], events: AsyncIterable[AgentStreamEvent]) -> None:
        async for event in events:
            if isinstance(event, FunctionToolCallEvent):
                recorded = loop.create_future()
                queue.put_nowait((event, recorded))
                await recorded
            else:
                queue.put_nowait((event, None))

    async def run() -> AgentRunResult[Any]:
        try:
            return await start(handler)
        finally:
            queue.put_nowait(None)

    task = asyncio.create_task(run(), name="pydantic-ai run")
    try:
        while (item := await queue.get()) is not None:
            event, recorded = item
            yield event
            if recorded is not None and not recorded.done():
                recorded.set_result(None)
        yield await task
    finally:
        if not task.done():
            task.cancel()
            await asyncio.wait([task])  # raises only if this task is cancelled meanwhile
        if not task.cancelled():
            task.exception()  # retrieved: it was raised above, or the consumer stopped first
