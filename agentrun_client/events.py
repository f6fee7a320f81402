"""Typed run events: one frozen dataclass per event type, each keeping the `proto` it came from.

async for event in client.stream("echo", "hi"):
    match event:
        case ContentDelta(text=text):
            print(text, end="")
        case Stop() | ErrorEvent():
            print()
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import ClassVar, TypedDict

from agentrun.v1 import run_pb2

_T = run_pb2.EventType


@dataclass(frozen=True, kw_only=True)
class Event:
    """What every event has: its run, its position `seq` in the run's log (1, 2, 3, ... without gaps),
    when it was recorded, and the message it came from."""

    run_id: str
    seq: int
    time: datetime.datetime
    proto: run_pb2.RunEvent = field(repr=False, compare=False)
    # STOP and ERROR end a run's log.
    final: ClassVar[bool] = False

    @property
    def type(self) -> run_pb2.EventType:
        return self.proto.type


@dataclass(frozen=True, kw_only=True)
class Start(Event):
    """First event of every run."""

    session_id: str
    attempt: int


@dataclass(frozen=True, kw_only=True)
class ReasoningDelta(Event):
    """A fragment of the agent's reasoning."""

    text: str


@dataclass(frozen=True, kw_only=True)
class ContentDelta(Event):
    """A fragment of the answer; the fragments in seq order make the output."""

    text: str


@dataclass(frozen=True, kw_only=True)
class ToolStart(Event):
    """A tool call began: `tool_call` has its id, name and arguments."""

    tool_call: run_pb2.ToolCall


@dataclass(frozen=True, kw_only=True)
class ToolEnd(Event):
    """A tool call ended: `tool_call` has its result, duration and error flag."""

    tool_call: run_pb2.ToolCall


@dataclass(frozen=True, kw_only=True)
class Paused(Event):
    """The run waits for a decision on `pending_action` (approve or reject it to go on)."""

    pending_action: run_pb2.PendingAction


@dataclass(frozen=True, kw_only=True)
class Stop(Event):
    """The run completed; last event of its log."""

    final: ClassVar[bool] = True
    state: run_pb2.RunState
    followups: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class ErrorEvent(Event):
    """The run failed or was cancelled (`reason` says which, e.g. CANCELLED, WORKER_LOST,
    DEADLINE_EXCEEDED); last event of its log."""

    final: ClassVar[bool] = True
    reason: str
    message: str


@dataclass(frozen=True, kw_only=True)
class StatusChange(Event):
    """A state change that neither starts nor ends the run (`reason` RESUMED, RELEASED, RETRIED)."""

    state: run_pb2.RunState
    reason: str


@dataclass(frozen=True, kw_only=True)
class UnknownEvent(Event):
    """An event type this client does not know (a newer server); see `proto`."""


RunEvent = (
    Start
    | ReasoningDelta
    | ContentDelta
    | ToolStart
    | ToolEnd
    | Paused
    | Stop
    | ErrorEvent
    | StatusChange
    | UnknownEvent
)


class _Common(TypedDict):
    run_id: str
    seq: int
    time: datetime.datetime
    proto: run_pb2.RunEvent


def parse_event(proto: run_pb2.RunEvent) -> RunEvent:
    """The typed event for a RunEvent message."""
    common = _Common(
        run_id=proto.run_id,
        seq=proto.seq,
        time=proto.create_time.ToDatetime(tzinfo=datetime.UTC),
        proto=proto,
    )
    t = proto.type
    if t == _T.EVENT_TYPE_START:
        return Start(**common, session_id=proto.start.session_id, attempt=proto.start.attempt)
    if t == _T.EVENT_TYPE_REASONING_DELTA:
        return ReasoningDelta(**common, text=proto.text)
    if t == _T.EVENT_TYPE_CONTENT_DELTA:
        return ContentDelta(**common, text=proto.text)
    if t == _T.EVENT_TYPE_TOOL_START:
        return ToolStart(**common, tool_call=proto.tool_call)
    if t == _T.EVENT_TYPE_TOOL_END:
        return ToolEnd(**common, tool_call=proto.tool_call)
    if t == _T.EVENT_TYPE_PAUSED:
        return Paused(**common, pending_action=proto.pending_action)
    if t == _T.EVENT_TYPE_STOP:
        return Stop(**common, state=proto.stop.state, followups=tuple(proto.stop.followups))
    if t == _T.EVENT_TYPE_ERROR:
        return ErrorEvent(**common, reason=proto.error.reason, message=proto.error.message)
    if t == _T.EVENT_TYPE_STATUS:
        return StatusChange(**common, state=proto.status.state, reason=proto.status.reason)
    return UnknownEvent(**common)
