"""A pydantic-ai run's conversation as stored data: the session's earlier turns going in, and the
state a paused run keeps so it can resume in any process from nothing but that state and a decision."""

from __future__ import annotations

from typing import Any

from pydantic_ai.messages import (
    ModelMessage,
    ModelMessagesTypeAdapter,
    ModelRequest,
    ModelResponse,
    TextPart,
    UserPromptPart,
)
from pydantic_ai.run import AgentRunResult
from pydantic_ai.tools import DeferredToolRequests, DeferredToolResults, ToolApproved, ToolDenied

from server.agents.base import AgentContext, ApprovalRequired, PriorTurn


def dump(messages: list[ModelMessage]) -> list[dict[str, Any]]:
    return ModelMessagesTypeAdapter.dump_python(messages, mode="json")  # type: ignore[no-any-return]


def load(messages: list[dict[str, Any]]) -> list[ModelMessage]:
    return ModelMessagesTypeAdapter.validate_python(messages)


def session_history(turns: list[PriorTurn]) -> list[ModelMessage]:
    """The session's earlier turns as one message history. A turn run by an agent that kept no model
    conversation (a plain-Python agent) becomes the user's message and the answer."""
    history: list[ModelMessage] = []
    for turn in turns:
        if turn.messages:
            history.extend(load(turn.messages))
        else:
            history.append(ModelRequest(parts=[UserPromptPart(turn.message)]))
            history.append(ModelResponse(parts=[TextPart(turn.output)]))
    return history


def paused_state(
    result: AgentRunResult[Any], requests: DeferredToolRequests, history_len: int
) -> dict[str, Any]:
    """What a paused run stores: its history, the calls awaiting approval and the decisions so far."""
    if requests.calls:
        raise RuntimeError("the agent deferred tool calls to an external executor; that is not supported")
    pending = [
        {"tool_call_id": c.tool_call_id, "name": c.tool_name, "arguments_json": c.args_as_json_str()}
        for c in requests.approvals
    ]
    return {
        "messages": dump(result.all_messages()),
        "history_len": history_len,
        "pending": pending,
        "decisions": {},
    }


def decided_state(ctx: AgentContext) -> dict[str, Any]:
    assert ctx.decision is not None
    state = ctx.state or {}
    if not state.get("messages"):
        raise ValueError("cannot resume: the paused run left no message history in its state")
    decision = {"approved": ctx.decision.approved, "reason": ctx.decision.reason}
    return {**state, "decisions": {**state.get("decisions", {}), ctx.decision.tool_call_id: decision}}


def next_approval(state: dict[str, Any]) -> ApprovalRequired | None:
    """The first call still awaiting a decision: the engine asks about one call at a time, while
    pydantic-ai needs every deferred call decided before the run can go on."""
    for call in state.get("pending", []):
        if call["tool_call_id"] not in state["decisions"]:
            return ApprovalRequired(call["tool_call_id"], call["name"], call["arguments_json"], state=state)
    return None


def _verdict(approved: bool, reason: str) -> ToolApproved | ToolDenied:
    if approved:
        return ToolApproved()
    return ToolDenied(f"A human refused this call{': ' + reason if reason else ''}.")


def resumption(state: dict[str, Any]) -> tuple[list[ModelMessage], DeferredToolResults]:
    """The stored history and the decisions, for pydantic-ai to go on from the pause."""
    verdicts: dict[str, bool | ToolApproved | ToolDenied] = {
        call_id: _verdict(d["approved"], d["reason"]) for call_id, d in state["decisions"].items()
    }
    return load(state["messages"]), DeferredToolResults(approvals=verdicts)
