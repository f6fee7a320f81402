"""Plain records the store hands out: decoupled from the ORM classes and cheap to build."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

QUEUED, RUNNING, PAUSED = "QUEUED", "RUNNING", "PAUSED"
COMPLETED, FAILED, CANCELLED = "COMPLETED", "FAILED", "CANCELLED"
TERMINAL = frozenset({COMPLETED, FAILED, CANCELLED})
STATES = (QUEUED, RUNNING, PAUSED, COMPLETED, FAILED, CANCELLED)

# Event types, as stored.
START, REASONING_DELTA, CONTENT_DELTA = "START", "REASONING_DELTA", "CONTENT_DELTA"
TOOL_START, TOOL_END, PAUSED_EVENT = "TOOL_START", "TOOL_END", "PAUSED"
STOP, ERROR, STATUS = "STOP", "ERROR", "STATUS"
FINAL_EVENTS = frozenset({STOP, ERROR})


@dataclass(slots=True)
class RunRecord:
    number: int
    id: str
    agent_id: str
    org_id: str
    user_id: str
    session_id: str
    state: str
    attempt: int
    input: dict[str, Any]
    result: dict[str, Any] | None
    error_reason: str | None
    error_message: str | None
    pending_action: dict[str, Any] | None
    decisions: list[dict[str, Any]] | None
    timeout_s: float
    deadline: float
    idempotency_key: str | None
    webhook_url: str | None
    extras: dict[str, Any] | None
    last_seq: int
    cancel_requested: bool
    lease_owner: str | None
    lease_expires_at: float | None
    created_at: float
    started_at: float | None
    updated_at: float
    completed_at: float | None
    # Read only where needed (claim, idempotency check): the agent state can be a whole conversation.
    agent_state: dict[str, Any] | None = None
    resume: dict[str, Any] | None = None
    request_hash: str | None = None
    messages: list[dict[str, Any]] | None = None
    webhook_format: str | None = None
    webhook_result: dict[str, Any] | None = None
    trace_context: str | None = None  # the `traceparent` of the call that submitted the run

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL


@dataclass(slots=True)
class EventRecord:
    run_id: str
    seq: int
    type: str
    data: dict[str, Any]
    created_at: float
    # Not stored: on the event of a state change, the run as that change left it (lets waiters in
    # this process skip a read).
    run: RunRecord | None = None

    @property
    def final(self) -> bool:
        return self.type in FINAL_EVENTS


@dataclass(slots=True)
class NewRun:
    """What a submission stores; the store fills in number, state and timestamps."""

    id: str
    agent_id: str
    org_id: str
    user_id: str
    session_id: str
    input: dict[str, Any]
    timeout_s: float
    idempotency_key: str | None = None
    request_hash: str | None = None
    webhook_url: str | None = None
    webhook_format: str | None = None
    extras: dict[str, Any] | None = None
    trace_context: str | None = None  # the submitting call's `traceparent`


# Webhook delivery states.
PENDING, DELIVERED = "PENDING", "DELIVERED"


@dataclass(slots=True)
class DeliveryRecord:
    id: str
    run_id: str
    url: str
    payload: dict[str, Any]
    state: str
    attempt_count: int
    attempts: list[dict[str, Any]] | None
    give_up_at: float
    next_attempt_at: float
    lease_owner: str | None
    lease_expires_at: float | None
    created_at: float
    delivered_at: float | None
    traceparent: str | None = None  # the run's trace, sent with every attempt


@dataclass(frozen=True, slots=True)
class PriorRun:
    """A completed earlier run of a session, as the next run's history needs it."""

    input: dict[str, Any]
    result: dict[str, Any] | None
    messages: list[dict[str, Any]] | None


@dataclass(slots=True)
class RunFilter:
    org_id: str | None = None
    agent_id: str = ""
    session_id: str = ""
    user_id: str = ""
    states: tuple[str, ...] = ()
    created_after: float | None = None
    created_before: float | None = None
    # Top-level metadata (extras) keys that must hold these string values.
    metadata: dict[str, str] = field(default_factory=dict)
    # Only the newest matching run of each session.
    latest_per_session: bool = False


@dataclass(slots=True)
class Outcome:
    """How a run ends, pauses or goes back to the queue, written in one conditional transaction with
    its event. result, error_* and agent_state keep their stored value when None."""

    state: str
    event_type: str
    event_data: dict[str, Any]
    result: dict[str, Any] | None = None
    error_reason: str | None = None
    error_message: str | None = None
    # Set as given (None clears it): an action is pending only while PAUSED.
    pending_action: dict[str, Any] | None = None
    agent_state: dict[str, Any] | None = None
    # The run's model conversation, for the next runs of its session.
    messages: list[dict[str, Any]] | None = None
    # Back to the queue for another attempt (attempt + 1).
    release: bool = False
