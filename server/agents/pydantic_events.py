"""pydantic-ai's stream events as engine events, with tool calls timed on the way, and the stream
of a run's events itself (`streamed`)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Callable, Iterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, TypeGuard

from pydantic_ai import CallToolsNode, ModelRequestNode
from pydantic_ai.messages import (
    AgentStreamEvent,
    FunctionToolCallEvent,
    FunctionToolResultEvent,
    ModelMessage,
    ModelResponse,
    ModelResponseStreamEvent,
    PartDeltaEvent,
    PartStartEvent,
    TextPart,
    TextPartDelta,
    ThinkingPart,
    ThinkingPartDelta,
    ToolCallPart,
)
from pydantic_ai.models import Model, ModelRequestParameters
from pydantic_ai.models.wrapper import WrapperModel
from pydantic_ai.run import AgentRun, AgentRunResult
from pydantic_ai.settings import ModelSettings
from pydantic_graph import End, GraphRunContext

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


# What `streamed` drives: the run's `Agent.iter`, every argument bound but the model.
Iterate = Callable[[Model], AbstractAsyncContextManager[AgentRun[Any, Any]]]
AgentNode = ModelRequestNode[Any, Any] | CallToolsNode[Any, Any]
# An event, and for a tool call the future that lets the tool run.
_Item = tuple[AgentStreamEvent, asyncio.Future[None] | None]


class StreamingModel(WrapperModel):
    """A run's model as pydantic-ai's unstreamed path sees it: `request` returns the whole response.
    Underneath it streams, handing each event of the response to `sink` as it comes. pydantic-ai's
    streamed path (`event_stream_handler`, `run_stream_events`) costs ~1 ms of CPU more per demo
    run in the anyio locks, cancel scopes and tasks of its AgentStream; this one hands the model's
    own events over without them."""

    def __init__(self, wrapped: Model, sink: Callable[[ModelResponseStreamEvent], None]) -> None:
        super().__init__(wrapped)
        self.sink = sink

    async def request(
        self,
        messages: list[ModelMessage],
        model_settings: ModelSettings | None,
        model_request_parameters: ModelRequestParameters,
    ) -> ModelResponse:
        async with self.wrapped.request_stream(messages, model_settings, model_request_parameters) as stream:
            async for event in stream:
                self.sink(event)
        return stream.get()


async def streamed(
    iterate: Iterate, model: Model
) -> AsyncGenerator[AgentStreamEvent | AgentRunResult[Any], None]:
    """A run's events as they come (the model's response events, then the tool calls' and results'
    of each tools node), then its result (or its exception).

    As in `Agent.run_stream_events`, the run goes on in a task of its own, so pydantic-ai's cancel
    scopes and the tools' tasks never span our yields, and hands its events over through a queue
    it need not wait on. The one wait is at a tool call: the tool runs only once the consumer asks
    for the next event, that is after the engine has stored its TOOL_START (the tool ledger)."""
    queue: asyncio.Queue[_Item | None] = asyncio.Queue()  # None: the run has ended
    loop = asyncio.get_running_loop()

    def sink(event: AgentStreamEvent) -> None:
        queue.put_nowait((event, None))

    async def stream(node: AgentNode, ctx: GraphRunContext[Any, Any]) -> None:
        async with node.stream(ctx) as events:
            async for event in events:
                if isinstance(event, FunctionToolCallEvent):
                    recorded = loop.create_future()
                    queue.put_nowait((event, recorded))
                    await recorded
                else:
                    sink(event)

    async def run() -> AgentRunResult[Any]:
        try:
            wrapper = StreamingModel(model, sink)
            async with iterate(wrapper) as agent_run:
                # Agent.override (tests) replaces the run's model, and our wrapper with it: its
                # requests are then streamed the way pydantic-ai streams them.
                requests = not _wraps(getattr(agent_run.ctx.deps, "model", None), wrapper)
                node = agent_run.next_node
                while not isinstance(node, End):
                    if _emits(node, requests):
                        await stream(node, agent_run.ctx)
                    node = await agent_run.next(node)
            if agent_run.result is None:
                raise RuntimeError("the pydantic-ai run ended without a result")
            return agent_run.result
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


def _emits(node: object, requests: bool) -> TypeGuard[AgentNode]:
    """Whether to stream a node for its events: a model request only when StreamingModel does not
    stream it already; a tools node only when its response called tools (only those make it emit
    events; streaming the others would only cost time)."""
    if isinstance(node, ModelRequestNode):
        return requests
    return isinstance(node, CallToolsNode) and any(
        isinstance(part, ToolCallPart) for part in node.model_response.parts
    )


def _wraps(model: object, wrapper: Model) -> bool:
    """Whether the run's model is `wrapper` or wraps it (pydantic-ai's instrumentation does)."""
    while model is not None:
        if model is wrapper:
            return True
        model = getattr(model, "wrapped", None)
    return False
