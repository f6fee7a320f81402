"""The `demo` model: an offline, deterministic stand-in for an LLM, built on pydantic-ai's FunctionModel.

It decides only from the message history, so a run resumed in another process continues exactly as
it would have in the first one:

- the last request carries tool results -> it answers with a summary of them;
- the user asks for follow-up questions (followups.py) -> three canned ones, one per line;
- a tool fits the user's message -> it calls it: a team member (a tool taking an `instruction`; the one
  named in the message, else the first), the calculator for arithmetic, else send_email, else clock;
- otherwise -> it echoes the user's message back, one word per text delta.

It streams one thinking line before echoing and before calling a tool, so the reasoning channel is
exercised too. When the run asks for structured output it answers `{"answer": ...}`-style JSON that
fits the requested schema as far as a simple filler can.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic_ai.messages import (
    ModelMessage,
    ModelRequest,
    ModelResponse,
    ModelResponsePart,
    TextContent,
    TextPart,
    ThinkingPart,
    ToolCallPart,
    ToolReturnPart,
    UserContent,
    UserPromptPart,
)
from pydantic_ai.models.function import (
    AgentInfo,
    DeltaThinkingCalls,
    DeltaThinkingPart,
    DeltaToolCall,
    DeltaToolCalls,
    FunctionModel,
)
from pydantic_ai.profiles import ModelProfile
from pydantic_ai.tools import ToolDefinition

from server.agents import followups

DEMO_MODEL_NAME = "demo"

# An arithmetic expression: numbers joined by at least one operator, optionally parenthesised.
_MATH = re.compile(r"[-+(\s]*\d[\d.\s()]*(?:[-+*/%]+[\s(]*\d[\d.\s()]*)+")
# Vendor part ids of the streamed thinking and tool-call parts; text uses FunctionModel's own id.
_THINKING_ID, _TOOL_ID = 0, 1


@dataclass(frozen=True, slots=True)
class _Reply:
    """What the model says in one response: an optional thinking line, then text or one tool call."""

    thinking: str = ""
    text: str = ""
    tool_name: str = ""
    tool_args: dict[str, Any] = field(default_factory=dict)


def _words(text: str) -> list[str]:
    """Split text into word chunks whose concatenation is exactly the original text."""
    chunks = text.split(" ")
    return [c if i == len(chunks) - 1 else c + " " for i, c in enumerate(chunks)]


def _user_prompts(messages: Sequence[ModelMessage]) -> list[str]:
    return [
        _prompt_text(part.content)
        for message in messages
        if isinstance(message, ModelRequest)
        for part in message.parts
        if isinstance(part, UserPromptPart)
    ]


def _prompt_text(content: str | Sequence[UserContent]) -> str:
    if isinstance(content, str):
        return content
    texts: list[str] = []
    for item in content:
        if isinstance(item, str):
            texts.append(item)
        elif isinstance(item, TextContent):
            texts.append(item.content)
    return " ".join(texts)


def _summary(result: ToolReturnPart) -> str:
    text = result.model_response_str(wrap_if_error=False)
    if result.outcome == "denied":
        return f"The {result.tool_name} call was refused and not done: {text}"
    if result.outcome != "success":
        return f"The {result.tool_name} tool failed: {text}"
    return f"The {result.tool_name} tool says: {text}"


def _member(message: str, tools: list[ToolDefinition]) -> str | None:
    members = [
        t.name for t in tools if set(t.parameters_json_schema.get("properties", {})) == {"instruction"}
    ]
    named = [m for m in members if m.lower() in message.lower()]
    return named[0] if named else members[0] if members else None


def _tool_call(message: str, tools: list[ToolDefinition]) -> tuple[str, dict[str, Any]] | None:
    member = _member(message, tools)
    if member is not None:
        return member, {"instruction": message}
    available = {t.name for t in tools}
    match = _MATH.search(message)
    if match and "calculator" in available:
        return "calculator", {"expression": match.group().strip()}
    if "send_email" in available:
        return "send_email", {"to": "team@example.com", "subject": message[:60], "body": message}
    if "clock" in available:
        return "clock", {}
    return None


def _decide(messages: list[ModelMessage], info: AgentInfo) -> _Reply:
    last = messages[-1]
    parts = last.parts if isinstance(last, ModelRequest) else []
    results = [p for p in parts if isinstance(p, ToolReturnPart)]
    if results:
        return _Reply(text=" ".join(_summary(r) for r in results))
    prompts = _user_prompts(messages)
    message = prompts[-1] if prompts else ""
    if message == followups.FOLLOWUP_PROMPT:
        return _Reply(text="\n".join(followups.canned(prompts[-2] if len(prompts) > 1 else "")))
    call = _tool_call(message, info.function_tools)
    if call is None:
        return _Reply(thinking=f"The user said {len(message)} characters; echoing them back.", text=message)
    name, args = call
    return _Reply(thinking=f"I will use the {name} tool.", tool_name=name, tool_args=args)


def _call_id(messages: list[ModelMessage]) -> str:
    # Numbered by position in the history so ids are unique within a run and identical on replay.
    return f"call_{sum(isinstance(m, ModelResponse) for m in messages) + 1}"


def _fill(schema: dict[str, Any], text: str) -> dict[str, Any]:
    """A value for an object schema: the text goes into string fields, other required fields get blanks."""
    properties: dict[str, Any] = schema.get("properties") or {"answer": {"type": "string"}}
    wanted = schema.get("required") or list(properties)
    blanks: dict[str, Any] = {"number": 0, "integer": 0, "boolean": False, "array": [], "object": {}}
    return {name: blanks.get(properties.get(name, {}).get("type", "string"), text) for name in wanted}


def _shape_output(reply: _Reply, info: AgentInfo) -> _Reply:
    """Turn a text answer into the structured output the run asked for, if it asked for one."""
    if reply.tool_name or (info.allow_text_output and not info.model_request_parameters.output_object):
        return reply
    if info.output_tools:
        tool = info.output_tools[0]
        args = _fill(tool.parameters_json_schema, reply.text)
        return _Reply(thinking=reply.thinking, tool_name=tool.name, tool_args=args)
    output_object = info.model_request_parameters.output_object
    schema = output_object.json_schema if output_object else {}
    return _Reply(thinking=reply.thinking, text=json.dumps(_fill(schema, reply.text)))


def _reply(messages: list[ModelMessage], info: AgentInfo) -> _Reply:
    return _shape_output(_decide(messages, info), info)


async def _respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    # Async so FunctionModel calls it inline instead of in a worker thread.
    reply = _reply(messages, info)
    parts: list[ModelResponsePart] = [ThinkingPart(reply.thinking)] if reply.thinking else []
    if reply.tool_name:
        parts.append(ToolCallPart(reply.tool_name, reply.tool_args, tool_call_id=_call_id(messages)))
    else:
        parts.append(TextPart(reply.text))
    return ModelResponse(parts=parts)


async def _stream(
    messages: list[ModelMessage], info: AgentInfo
) -> AsyncIterator[str | DeltaToolCalls | DeltaThinkingCalls]:
    reply = _reply(messages, info)
    if reply.thinking:
        yield {_THINKING_ID: DeltaThinkingPart(content=reply.thinking)}
    if reply.tool_name:
        call = DeltaToolCall(reply.tool_name, json.dumps(reply.tool_args), tool_call_id=_call_id(messages))
        yield {_TOOL_ID: call}
        return
    for chunk in _words(reply.text):
        yield chunk


def build_demo_model() -> FunctionModel:
    # Native structured output: the JSON answer then streams as text, like the plain-text answer does.
    profile = ModelProfile(
        supports_json_schema_output=True,
        supports_json_object_output=True,
        default_structured_output_mode="native",
    )
    return FunctionModel(_respond, stream_function=_stream, model_name=DEMO_MODEL_NAME, profile=profile)
