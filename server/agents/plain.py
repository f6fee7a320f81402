"""Plain async-Python agents: deterministic, offline, and cheap enough to measure the service's
own overhead. The pydantic-ai runtime (pydantic_agent.py) provides the same demos on a real
agent loop."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any

from server.agents import followups
from server.agents.base import (
    AgentContext,
    AgentEvent,
    AgentInfo,
    ApprovalRequired,
    ContentDelta,
    Finished,
    ReasoningDelta,
    RunInput,
    ToolEnd,
    ToolStart,
    Usage,
)
from server.agents.tools import TOOLS

_MATH = re.compile(r"[-+*/%().\d\s]*\d[-+*/%().\d\s]*")


def _words(text: str) -> list[str]:
    words = text.split(" ")
    return [w if i == len(words) - 1 else w + " " for i, w in enumerate(words)]


async def _answer(text: str) -> AsyncGenerator[AgentEvent, None]:
    for word in _words(text):
        yield ContentDelta(word)


def demo_followups(run_input: RunInput) -> tuple[str, ...]:
    return followups.canned(run_input.message) if run_input.generate_followups else ()


def _finish(ctx: AgentContext, output: str, usage: Usage | None = None) -> Finished:
    output_json: Any = None
    if ctx.input.response_format == "json":
        output_json = {"answer": output}
        output = json.dumps(output_json)
    followups = demo_followups(ctx.input)
    return Finished(output=output, output_json=output_json, followups=followups, usage=usage or Usage())


async def _call_tool(call_id: str, name: str, args: dict[str, Any]) -> AsyncGenerator[AgentEvent, None]:
    arguments = json.dumps(args)
    yield ToolStart(call_id, name, arguments)
    started = time.perf_counter()
    try:
        # Off the event loop: a tool that computes or blocks must not stall other runs and RPCs.
        result, failed = await asyncio.to_thread(TOOLS[name], **args), False
    except Exception as exc:  # a tool error is reported to the agent, not raised
        result, failed = f"error: {exc}", True
    yield ToolEnd(call_id, name, result, int((time.perf_counter() - started) * 1000), failed)


@dataclass(frozen=True)
class EchoAgent:
    """Streams one reasoning line, then the message back word by word."""

    info: AgentInfo

    async def run(self, ctx: AgentContext) -> AsyncGenerator[AgentEvent, None]:
        yield ReasoningDelta(f"The user said {len(ctx.input.message)} characters; echoing them back.")
        # _answer's words without a nested async generator: echo measures the service's own cost.
        for word in _words(ctx.input.message):
            yield ContentDelta(word)
        yield _finish(ctx, ctx.input.message)


@dataclass(frozen=True)
class ToolsAgent:
    """Calls `calculator` when the message holds arithmetic, otherwise `clock`, then answers."""

    info: AgentInfo

    async def run(self, ctx: AgentContext) -> AsyncGenerator[AgentEvent, None]:
        match = _MATH.search(ctx.input.message)
        expression = match.group().strip() if match else ""
        name, args = ("calculator", {"expression": expression}) if expression else ("clock", {})
        yield ReasoningDelta(f"I will use the {name} tool.")
        result = ""
        async for event in _call_tool(f"{ctx.run_id}-1", name, args):
            if isinstance(event, ToolEnd):
                result = event.result
            yield event
        answer = f"The {name} tool says: {result}"
        async for delta in _answer(answer):
            yield delta
        yield _finish(ctx, answer)


@dataclass(frozen=True)
class ApprovalAgent:
    """Wants to call `send_email`, which needs approval: pauses, then runs it or reports the refusal."""

    info: AgentInfo

    async def run(self, ctx: AgentContext) -> AsyncGenerator[AgentEvent, None]:
        call_id = f"{ctx.run_id}-email"
        args = {"to": "team@example.com", "subject": ctx.input.message[:60], "body": ctx.input.message}
        if ctx.decision is None:
            yield ReasoningDelta("Sending an email needs a human's approval.")
            yield ApprovalRequired(call_id, "send_email", json.dumps(args), state={"args": args})
            return
        if ctx.decision.approved:
            async for event in _call_tool(call_id, "send_email", (ctx.state or {}).get("args", args)):
                yield event
            answer = "The email was sent."
        else:
            reason = f": {ctx.decision.reason}" if ctx.decision.reason else ""
            yield ToolEnd(call_id, "send_email", f"refused by a human{reason}", 0, True)
            answer = f"The email was not sent because the request was refused{reason}."
        async for delta in _answer(answer):
            yield delta
        yield _finish(ctx, answer)


@dataclass(frozen=True)
class SlowAgent:
    """Streams `tokens` words with `delay_ms` between them (0 = no sleep), for load and cancel tests.
    Options: a message "tokens=N delay_ms=M" overrides the configured values for one run."""

    info: AgentInfo
    tokens: int = 20
    delay_ms: float = 50.0

    def _params(self, message: str) -> tuple[int, float]:
        found = dict(re.findall(r"(tokens|delay_ms)=(\d+(?:\.\d+)?)", message))
        return int(found.get("tokens", self.tokens)), float(found.get("delay_ms", self.delay_ms))

    async def run(self, ctx: AgentContext) -> AsyncGenerator[AgentEvent, None]:
        tokens, delay_ms = self._params(ctx.input.message)
        for i in range(tokens):
            if delay_ms > 0:
                await asyncio.sleep(delay_ms / 1000)
            yield ContentDelta(f"t{i} ")
        yield _finish(ctx, "".join(f"t{i} " for i in range(tokens)))


PLAIN_AGENTS: dict[str, type[EchoAgent | ToolsAgent | ApprovalAgent | SlowAgent]] = {
    "echo": EchoAgent,
    "tools": ToolsAgent,
    "approval": ApprovalAgent,
    "slow": SlowAgent,
}
