"""Agents that run on pydantic-ai's agent loop.

A run streams pydantic-ai's events (`Agent.run_stream_events`) and maps them onto the engine's
events. A tool that needs approval is a deferred tool: the run ends with `DeferredToolRequests`, which
becomes `ApprovalRequired` carrying the whole message history as JSON, so the run can resume in
another process from nothing but that state and the human's decision.
"""

from __future__ import annotations

import base64
import functools
import json
import time
from collections.abc import AsyncGenerator, Iterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any

from pydantic_ai import Agent as PydanticAIAgent
from pydantic_ai import AgentRunEvents, AgentRunResultEvent, StructuredDict, Tool
from pydantic_ai.exceptions import ToolFailed
from pydantic_ai.messages import (
    AgentStreamEvent,
    AudioUrl,
    BinaryContent,
    DocumentUrl,
    FunctionToolCallEvent,
    FunctionToolResultEvent,
    ImageUrl,
    ModelMessage,
    ModelMessagesTypeAdapter,
    PartDeltaEvent,
    PartStartEvent,
    TextPart,
    TextPartDelta,
    ThinkingPart,
    ThinkingPartDelta,
    UserContent,
    VideoUrl,
)
from pydantic_ai.models import Model
from pydantic_ai.output import OutputSpec
from pydantic_ai.run import AgentRunResult
from pydantic_ai.settings import ModelSettings
from pydantic_ai.tools import DeferredToolRequests, DeferredToolResults, ToolApproved, ToolDenied

from server.agents.base import (
    Agent,
    AgentContext,
    AgentEvent,
    AgentInfo,
    ApprovalRequired,
    ContentDelta,
    Finished,
    Media,
    Options,
    ReasoningDelta,
    RunInput,
    ToolEnd,
    ToolStart,
    Usage,
)
from server.agents.demo_model import DEMO_MODEL_NAME, build_demo_model
from server.agents.plain import demo_followups
from server.agents.registry import AgentSpec
from server.agents.tools import TOOLS

# The default JSON answer shape, matching what the plain agents return for response_format "json".
_ANSWER_SCHEMA = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}
_URL_TYPES: tuple[tuple[str, type[ImageUrl | AudioUrl | VideoUrl]], ...] = (
    ("image/", ImageUrl),
    ("audio/", AudioUrl),
    ("video/", VideoUrl),
)
_Prompt = str | list[UserContent]


def _tool(name: str, needs_approval: bool) -> Tool[None]:
    func = TOOLS[name]

    @functools.wraps(func)
    def reporting(*args: Any, **kwargs: Any) -> str:
        try:
            return func(*args, **kwargs)
        except Exception as exc:
            # Like the plain agents, a tool's error goes back to the model as a failed result instead
            # of failing the run; ToolFailed also keeps the model from retrying the same call.
            raise ToolFailed(f"error: {exc}") from exc

    return Tool(reporting, name=name, requires_approval=needs_approval)


def _model(name: str, provider: str = "") -> Model | str:
    # Any other name goes to pydantic-ai as is ("provider:model"); it works where that provider is installed.
    if name == DEMO_MODEL_NAME:
        return build_demo_model()
    return f"{provider}:{name}" if provider and ":" not in name else name


def _media(item: Media) -> UserContent:
    if item.data.startswith(("http://", "https://")):
        url_type = next((t for prefix, t in _URL_TYPES if item.type.startswith(prefix)), DocumentUrl)
        return url_type(item.data, media_type=item.type)
    return BinaryContent(base64.b64decode(item.data, validate=True), media_type=item.type)


def _prompt(run_input: RunInput) -> _Prompt:
    if not run_input.media:
        return run_input.message
    return [run_input.message, *(_media(m) for m in run_input.media)]


def _settings(options: Options) -> ModelSettings | None:
    settings = ModelSettings()
    if options.temperature is not None:
        settings["temperature"] = options.temperature
    if options.max_tokens is not None:
        settings["max_tokens"] = options.max_tokens
    return settings or None


def _output_type(run_input: RunInput) -> OutputSpec[Any]:
    # DeferredToolRequests is always allowed: it is how a tool needing approval pauses the run.
    if run_input.response_format != "json":
        return [str, DeferredToolRequests]
    return [StructuredDict(run_input.json_schema or _ANSWER_SCHEMA), DeferredToolRequests]


def _verdict(approved: bool, reason: str) -> ToolApproved | ToolDenied:
    if approved:
        return ToolApproved()
    return ToolDenied(f"A human refused this call{': ' + reason if reason else ''}.")


def _paused_state(result: AgentRunResult[Any], requests: DeferredToolRequests) -> dict[str, Any]:
    """What a paused run stores: its history, the calls awaiting approval and the decisions made so far."""
    if requests.calls:
        raise RuntimeError("the agent deferred tool calls to an external executor; that is not supported")
    pending = [
        {"tool_call_id": c.tool_call_id, "name": c.tool_name, "arguments_json": c.args_as_json_str()}
        for c in requests.approvals
    ]
    messages = ModelMessagesTypeAdapter.dump_python(result.all_messages(), mode="json")
    return {"messages": messages, "pending": pending, "decisions": {}}


def _decided_state(ctx: AgentContext) -> dict[str, Any]:
    assert ctx.decision is not None
    state = ctx.state or {}
    if not state.get("messages"):
        raise ValueError("cannot resume: the paused run left no message history in its state")
    decision = {"approved": ctx.decision.approved, "reason": ctx.decision.reason}
    return {**state, "decisions": {**state.get("decisions", {}), ctx.decision.tool_call_id: decision}}


def _next_approval(state: dict[str, Any]) -> ApprovalRequired | None:
    """The first call still awaiting a decision: the engine asks about one call at a time, while
    pydantic-ai needs every deferred call decided before the run can go on."""
    for call in state.get("pending", []):
        if call["tool_call_id"] not in state["decisions"]:
            return ApprovalRequired(call["tool_call_id"], call["name"], call["arguments_json"], state=state)
    return None


def _continuation(
    run_input: RunInput, state: dict[str, Any] | None
) -> tuple[_Prompt | None, list[ModelMessage] | None, DeferredToolResults | None]:
    """What to run: the user's prompt on a fresh run, or the stored history and the decisions on a resume."""
    if state is None:
        return _prompt(run_input), None, None
    history = ModelMessagesTypeAdapter.validate_python(state["messages"])
    verdicts: dict[str, bool | ToolApproved | ToolDenied] = {
        call_id: _verdict(d["approved"], d["reason"]) for call_id, d in state["decisions"].items()
    }
    return None, history, DeferredToolResults(approvals=verdicts)


@dataclass(slots=True)
class _EventMapper:
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


def _usage(result: AgentRunResult[Any], tool_ms: int) -> Usage:
    usage = result.usage
    return Usage(
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        reasoning_tokens=usage.output_reasoning_tokens,
        model_calls=usage.requests,
        tool_ms=tool_ms,
    )


def _ending(ctx: AgentContext, result: AgentRunResult[Any], tool_ms: int) -> Finished | ApprovalRequired:
    output = result.output
    if isinstance(output, DeferredToolRequests):
        pause = _next_approval(_paused_state(result, output))
        if pause is None:
            raise RuntimeError("the agent paused without a tool call to approve")
        return pause
    usage = _usage(result, tool_ms)
    followups = demo_followups(ctx.input)
    if isinstance(output, str):
        return Finished(output=output, followups=followups, usage=usage)
    return Finished(output=json.dumps(output), output_json=output, followups=followups, usage=usage)


@dataclass(slots=True)
class PydanticAgent:
    """An agents.yaml agent with runtime pydantic-ai."""

    info: AgentInfo
    agent: PydanticAIAgent[None, Any]

    async def run(self, ctx: AgentContext) -> AsyncGenerator[AgentEvent, None]:
        state = _decided_state(ctx) if ctx.decision else None
        if state is not None and (pause := _next_approval(state)) is not None:
            yield pause
            return
        decided = frozenset(state["decisions"]) if state else frozenset[str]()
        mapper = _EventMapper(frozenset(self.info.approval_tools), decided)
        ending: Finished | ApprovalRequired | None = None
        async with self._events(ctx.input, state) as events:
            async for event in events:
                if isinstance(event, AgentRunResultEvent):
                    ending = _ending(ctx, event.result, mapper.tool_ms)
                    break
                for mapped in mapper.map(event):
                    yield mapped
        if ending is None:
            raise RuntimeError("the pydantic-ai run ended without a result")
        yield ending

    def _events(
        self, run_input: RunInput, state: dict[str, Any] | None
    ) -> AbstractAsyncContextManager[AgentRunEvents[Any]]:
        prompt, history, results = _continuation(run_input, state)
        options = run_input.options
        return self.agent.run_stream_events(
            prompt,
            message_history=history,
            deferred_tool_results=results,
            output_type=_output_type(run_input),
            model=_model(options.model, options.provider) if options.model else None,
            instructions=options.system_prompt or None,
            model_settings=_settings(options),
        )


def build_pydantic_agent(spec: AgentSpec) -> Agent:
    tools = [_tool(name, name in spec.approval_tools) for name in spec.tools]
    agent: PydanticAIAgent[None, Any] = PydanticAIAgent(
        _model(spec.model),
        instructions=spec.instructions or None,
        tools=tools,
        output_type=[str, DeferredToolRequests],
        name=spec.id,
        # A provider's package or API key is checked when a run uses it, so one agent whose
        # provider is unavailable here fails its runs instead of stopping the whole service.
        defer_model_check=True,
    )
    return PydanticAgent(spec.info(), agent)
