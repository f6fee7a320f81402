"""Suggested follow-up questions: one more model call after the answer, on the same conversation."""

from __future__ import annotations

import re

from pydantic_ai import Agent as PydanticAIAgent
from pydantic_ai.messages import ModelMessage
from pydantic_ai.models import Model
from pydantic_ai.settings import ModelSettings
from pydantic_ai.usage import RunUsage

from server.agents.base import Usage

# Plain text, one question per line: every model can do that, tool-calling or not.
FOLLOWUP_PROMPT = (
    "Suggest exactly three short follow-up questions the user might ask next about this conversation. "
    "Write one question per line and nothing else."
)
COUNT = 3
_BULLET = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s*")
# Built once, like the agents (the model comes with each call), instead of once per run.
_ASKER: PydanticAIAgent[None, str] = PydanticAIAgent(None, output_type=str, name="followups")


def canned(topic: str) -> tuple[str, ...]:
    """What the offline demo agents suggest: they have no real model to ask."""
    topic = topic[:40]
    return (f"Can you explain more about {topic}?", "What are the next steps?", "Can you give an example?")


def parse(text: str) -> tuple[str, ...]:
    """The questions in a reply, without list markers or blank lines, at most three."""
    lines = (_BULLET.sub("", line).strip() for line in text.splitlines())
    return tuple(line for line in lines if line)[:COUNT]


async def suggest(
    model: Model, history: list[ModelMessage], settings: ModelSettings | None
) -> tuple[tuple[str, ...], RunUsage]:
    result = await _ASKER.run(FOLLOWUP_PROMPT, message_history=history, model=model, model_settings=settings)
    return parse(result.output), result.usage


def add_usage(total: Usage, extra: RunUsage) -> None:
    total.input_tokens += extra.input_tokens
    total.output_tokens += extra.output_tokens
    total.reasoning_tokens += extra.output_reasoning_tokens
    total.model_calls += extra.requests
