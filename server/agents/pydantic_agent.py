"""Agents that run on pydantic-ai's agent loop.

A run streams pydantic-ai's events (pydantic_events.streamed: `Agent.iter`, the model streaming
underneath) and maps them onto the engine's events. A tool that needs approval is a deferred tool:
the run ends with `DeferredToolRequests`, which becomes `ApprovalRequired` carrying the whole message
history as JSON (conversation.py). Provider failures end the run with PROVIDER_ERROR and the
provider's own message.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import json
from collections.abc import AsyncGenerator, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

from pydantic_ai import Agent as PydanticAIAgent
from pydantic_ai import RunContext, Tool
from pydantic_ai.exceptions import (
    ModelAPIError,
    ModelHTTPError,
    ToolFailed,
    UnexpectedModelBehavior,
    UsageLimitExceeded,
    UserError,
)
from pydantic_ai.messages import (
    AudioUrl,
    BinaryContent,
    DocumentUrl,
    ImageUrl,
    ModelMessage,
    UserContent,
    VideoUrl,
)
from pydantic_ai.models import Model
from pydantic_ai.models.instrumented import InstrumentationSettings
from pydantic_ai.output import OutputSpec
from pydantic_ai.run import AgentRun, AgentRunResult
from pydantic_ai.settings import ModelSettings
from pydantic_ai.tools import DeferredToolRequests, DeferredToolResults

from server.agents import conversation, followups, teams
from server.agents.base import (
    Agent,
    AgentContext,
    AgentEvent,
    AgentFailure,
    AgentInfo,
    ApprovalRequired,
    Finished,
    Media,
    Options,
    RunInput,
)
from server.agents.providers import ModelCatalog, ModelRef
from server.agents.pydantic_events import EventMapper, Iterate, streamed, usage_of
from server.agents.registry import AgentSpec
from server.agents.schema_output import schema_output
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


def _output_type(run_input: RunInput) -> OutputSpec[Any] | None:
    # DeferredToolRequests is always allowed: it is how a tool needing approval pauses the run. None
    # is the agent's own [str, DeferredToolRequests], whose output schema was built with the agent
    # (passed per run, pydantic-ai builds a schema and an output toolset for the run).
    if run_input.response_format != "json":
        return None
    return [schema_output(run_input.json_schema or _ANSWER_SCHEMA), DeferredToolRequests]


def _provider_message(body: object) -> str:
    """The human part of a provider's error body ({"error": {"message": ...}} on most APIs)."""
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and isinstance(inner.get("message"), str):
            return str(inner["message"])
        if isinstance(inner, str):
            return inner
    return str(body)[:500] if body else ""


def _failure(exc: Exception, model: str) -> AgentFailure | None:
    if isinstance(exc, ModelHTTPError):
        detail = _provider_message(exc.body)
        return AgentFailure(
            "PROVIDER_ERROR", f"{model}: HTTP {exc.status_code}{': ' + detail if detail else ''}"
        )
    if isinstance(exc, ModelAPIError):
        return AgentFailure("PROVIDER_ERROR", f"{model}: {exc.message}")
    if isinstance(exc, UnexpectedModelBehavior):
        return AgentFailure("MODEL_OUTPUT_INVALID", f"{model}: {exc.message}")
    if isinstance(exc, UsageLimitExceeded):
        return AgentFailure("USAGE_LIMIT_EXCEEDED", str(exc))
    if isinstance(exc, UserError):
        return AgentFailure("PROVIDER_NOT_CONFIGURED", f"{model}: {exc}")
    return None


@dataclass(slots=True)
class _Turn:
    """What one execution of a run works from: a fresh prompt after the session's history, or the
    stored state of a paused run plus the decisions."""

    prompt: _Prompt | None
    history: list[ModelMessage]
    history_len: int
    results: DeferredToolResults | None = None


@dataclass(slots=True)
class PydanticAgent:
    """An agents.yaml agent with runtime pydantic-ai."""

    info: AgentInfo
    agent: PydanticAIAgent[None, Any]
    catalog: ModelCatalog
    model_ref: ModelRef

    def resolve(self, options: Options) -> tuple[ModelRef, Model]:
        ref = self.catalog.parse(options.model, options.provider, self.model_ref)
        return ref, self.catalog.model(ref)

    async def run(self, ctx: AgentContext) -> AsyncGenerator[AgentEvent, None]:
        state = conversation.decided_state(ctx) if ctx.decision else None
        if state is not None and (pause := conversation.next_approval(state)) is not None:
            yield pause
            return
        ref, model = self.resolve(ctx.input.options)
        turn = await self._turn(ctx, state)
        mapper = EventMapper(
            frozenset(self.info.approval_tools), frozenset(state["decisions"] if state else ())
        )
        result: AgentRunResult[Any] | None = None
        try:
            async with contextlib.aclosing(streamed(self._iterate(ctx.input, turn), model)) as events:
                async for event in events:
                    if isinstance(event, AgentRunResult):
                        result = event
                        break
                    for mapped in mapper.map(event):
                        yield mapped
            if result is None:
                raise RuntimeError("the pydantic-ai run ended without a result")
            yield await self._ending(ctx, model, result, turn.history_len, mapper.tool_ms)
        except Exception as exc:
            failure = _failure(exc, str(ref))
            if failure is None:
                raise
            raise failure from exc

    async def _turn(self, ctx: AgentContext, state: dict[str, Any] | None) -> _Turn:
        if state is not None:
            history, results = conversation.resumption(state)
            return _Turn(None, history, state["history_len"], results)
        history = conversation.session_history(await ctx.history())
        return _Turn(_prompt(ctx.input), history, len(history))

    def _iterate(self, run_input: RunInput, turn: _Turn) -> Iterate:
        def iterate(model: Model) -> AbstractAsyncContextManager[AgentRun[None, Any]]:
            return self.agent.iter(
                turn.prompt,
                message_history=turn.history or None,
                deferred_tool_results=turn.results,
                output_type=_output_type(run_input),
                model=model,
                instructions=run_input.options.system_prompt or None,
                model_settings=_settings(run_input.options),
            )

        return iterate

    async def _ending(
        self, ctx: AgentContext, model: Model, result: AgentRunResult[Any], history_len: int, tool_ms: int
    ) -> Finished | ApprovalRequired:
        output = result.output
        if isinstance(output, DeferredToolRequests):
            pause = conversation.next_approval(conversation.paused_state(result, output, history_len))
            if pause is None:
                raise RuntimeError("the agent paused without a tool call to approve")
            return pause
        usage = usage_of(result, tool_ms)
        suggested: tuple[str, ...] = ()
        if ctx.input.generate_followups:
            suggested, extra = await followups.suggest(
                model, result.all_messages(), _settings(ctx.input.options)
            )
            followups.add_usage(usage, extra)
        messages = conversation.dump(result.all_messages()[history_len:])
        if isinstance(output, str):
            return Finished(output=output, followups=suggested, usage=usage, messages=messages)
        return Finished(
            output=json.dumps(output), output_json=output, followups=suggested, usage=usage, messages=messages
        )

    async def delegate(self, instruction: str, ctx: RunContext[Any]) -> str:
        """Run this agent as a team member on one instruction, within the team's run and usage."""
        _, model = self.resolve(Options())
        result = await self.agent.run(instruction, model=model, output_type=str, usage=ctx.usage)
        return str(result.output)


def _team_tools(members: Sequence[PydanticAgent]) -> list[Tool[Any]]:
    return [teams.member_tool(m.info.id, m.info.name, m.info.description, m.delegate) for m in members]


def build_pydantic_agent(
    spec: AgentSpec, catalog: ModelCatalog, members: Sequence[PydanticAgent] = ()
) -> Agent:
    tools: list[Tool[Any]] = [_tool(name, name in spec.approval_tools) for name in spec.tools]
    agent: PydanticAIAgent[None, Any] = PydanticAIAgent(
        None,
        instructions=spec.instructions or None,
        tools=[*tools, *_team_tools(members)],
        output_type=[str, DeferredToolRequests],
        name=spec.id,
        model_settings=_settings(
            Options(temperature=spec.options.temperature, max_tokens=spec.options.max_tokens)
        ),
    )
    return PydanticAgent(spec.info(), agent, catalog, catalog.parse(spec.model))


def trace_model_calls() -> None:
    """Give every pydantic-ai agent OpenTelemetry spans for its model requests and tool calls, as
    children of the run's span. Without message contents: prompts and answers stay out of traces."""
    settings = InstrumentationSettings(include_content=False, include_binary_content=False)
    PydanticAIAgent.instrument_all(settings)
