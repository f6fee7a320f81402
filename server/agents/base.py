"""The Agent interface: what the engine needs from any agent framework.

An agent is an async generator of typed events. The engine persists each event in order, then
acts on the last one: `Finished` completes the run, `ApprovalRequired` pauses it. An exception
fails the run with reason AGENT_ERROR (an AgentFailure names its own reason). Cancellation arrives
as `asyncio.CancelledError` at the agent's next await.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class Media:
    type: str
    data: str


@dataclass(frozen=True, slots=True)
class Options:
    model: str = ""
    provider: str = ""
    temperature: float | None = None
    max_tokens: int | None = None
    system_prompt: str = ""


@dataclass(frozen=True, slots=True)
class RunInput:
    message: str
    media: tuple[Media, ...] = ()
    options: Options = Options()
    generate_followups: bool = False
    response_format: str = "text"  # "text" | "json"
    json_schema: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    """A human decision on a paused tool call, handed to the agent when the run resumes."""

    tool_call_id: str
    approved: bool
    reason: str = ""


class AgentFailure(Exception):
    """Ends the run FAILED with this reason (PROVIDER_ERROR, say) rather than the generic AGENT_ERROR."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True, slots=True)
class PriorTurn:
    """An earlier completed run of the same session."""

    message: str
    output: str
    # Its model conversation (pydantic-ai's JSON form), when the agent that ran it kept one.
    messages: list[dict[str, Any]] | None = None


# Loads the session's earlier turns, oldest first; only agents that use a conversation call it.
HistoryLoader = Callable[[], Awaitable[list[PriorTurn]]]


async def _no_history() -> list[PriorTurn]:
    return []


@dataclass(frozen=True, slots=True)
class AgentContext:
    run_id: str
    session_id: str
    user_id: str
    input: RunInput
    attempt: int = 1
    # What the agent returned in `ApprovalRequired.state` when it paused (JSON-safe), else None.
    state: dict[str, Any] | None = None
    # Set when the run resumes after Continue.
    decision: Decision | None = None
    history: HistoryLoader = _no_history


@dataclass(slots=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    model_calls: int = 0
    tool_ms: int = 0


# ---- events an agent yields -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReasoningDelta:
    text: str


@dataclass(frozen=True, slots=True)
class ContentDelta:
    text: str


@dataclass(frozen=True, slots=True)
class ToolStart:
    tool_call_id: str
    name: str
    arguments_json: str


@dataclass(frozen=True, slots=True)
class ToolEnd:
    tool_call_id: str
    name: str
    result: str
    duration_ms: int
    is_error: bool = False


@dataclass(frozen=True, slots=True)
class ApprovalRequired:
    """Last event of a pausing agent. `state` must be JSON-serialisable: it is stored so the run
    can resume in another process after a restart."""

    tool_call_id: str
    name: str
    arguments_json: str
    state: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Finished:
    """Last event of a completing agent. `output` is the full answer text; `output_json` is set
    for JSON answers."""

    output: str
    output_json: Any = None
    followups: tuple[str, ...] = ()
    usage: Usage = field(default_factory=Usage)
    # This run's part of the conversation (pydantic-ai's JSON form), stored for the session's next runs.
    messages: list[dict[str, Any]] | None = None


AgentEvent = ReasoningDelta | ContentDelta | ToolStart | ToolEnd | ApprovalRequired | Finished


@dataclass(frozen=True, slots=True)
class AgentInfo:
    id: str
    name: str
    description: str = ""
    model: str = ""
    tools: tuple[str, ...] = ()
    approval_tools: tuple[str, ...] = ()
    is_team: bool = False
    member_ids: tuple[str, ...] = ()


class Agent(Protocol):
    @property
    def info(self) -> AgentInfo: ...

    def run(self, ctx: AgentContext) -> AsyncGenerator[AgentEvent, None]:
        """Execute (or resume, when ctx.decision is set) and yield events; the last one is
        Finished or ApprovalRequired."""
        ...
