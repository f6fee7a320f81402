"""Table definitions. Times are UNIX epoch seconds (float): the same type on every engine, cheap
to compare and to turn into protobuf Timestamps."""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, BigInteger, Column, Float, Index, Integer, UniqueConstraint
from sqlmodel import Field, SQLModel


def _json(nullable: bool = True) -> Any:
    # none_as_null: Python None is SQL NULL, not the JSON text 'null' (COALESCE relies on it).
    return Field(default=None, sa_column=Column(JSON(none_as_null=True), nullable=nullable))


class RunRow(SQLModel, table=True):
    __tablename__ = "run"
    __table_args__ = (
        UniqueConstraint("org_id", "idempotency_key", name="uq_run_idempotency"),
        Index("ix_run_state_number", "state", "number"),
        Index("ix_run_lease", "state", "lease_expires_at"),
        Index("ix_run_session", "session_id", "number"),
        Index("ix_run_org_number", "org_id", "number"),
        # Per-org counts of running and queued runs (fair-use limits).
        Index("ix_run_state_org", "state", "org_id"),
        # Retention's purge: finished runs by when they ended (server/store/retention.py).
        Index("ix_run_state_completed", "state", "completed_at"),
        # A deleted run's number is never given to another run (plain rowids reuse the largest).
        {"sqlite_autoincrement": True},
    )

    # Integer primary key: SQLite's rowid (64 bits), a BIGSERIAL on PostgreSQL (migration 8 widened
    # the SERIAL of older databases); family C's integer run id.
    number: int | None = Field(
        default=None, sa_column=Column(BigInteger().with_variant(Integer(), "sqlite"), primary_key=True)
    )
    id: str = Field(max_length=36, unique=True)
    agent_id: str = Field(max_length=64)
    org_id: str = Field(default="", max_length=128)
    user_id: str = Field(default="", max_length=128)
    session_id: str = Field(max_length=128)
    state: str = Field(max_length=16)
    attempt: int = 1
    input: dict[str, Any] = _json(nullable=False)
    # Output, tool calls, reasoning steps, follow-ups and usage, written when the run pauses or ends.
    result: dict[str, Any] | None = _json()
    error_reason: str | None = Field(default=None, max_length=64)
    error_message: str | None = None
    pending_action: dict[str, Any] | None = _json()
    # Opaque agent state stored at a pause so the run can resume in any process.
    agent_state: dict[str, Any] | None = _json()
    # The run's model conversation, kept for the later runs of its session.
    messages: list[dict[str, Any]] | None = _json()
    # The decision the next attempt hands to the agent (set by Continue, cleared when claimed).
    resume: dict[str, Any] | None = _json()
    decisions: list[dict[str, Any]] | None = _json()
    timeout_s: float
    deadline: float = Field(sa_column=Column(Float, nullable=False))
    idempotency_key: str | None = Field(default=None, max_length=256)
    request_hash: str | None = Field(default=None, max_length=64)
    webhook_url: str | None = None
    # Shape of the webhook body (RUN, JOB, AGENT_RESPONSE).
    webhook_format: str | None = Field(default=None, max_length=16)
    # Outcome of the latest webhook delivery: {delivery_id, state, status_code, message}.
    webhook_result: dict[str, Any] | None = _json()
    extras: dict[str, Any] | None = _json()
    # W3C traceparent of the call that submitted the run: its span continues that trace anywhere.
    trace_context: str | None = Field(default=None, max_length=64)
    last_seq: int = 0
    cancel_requested: bool = False
    lease_owner: str | None = Field(default=None, max_length=64)
    lease_expires_at: float | None = Field(default=None, sa_column=Column(Float))
    created_at: float = Field(sa_column=Column(Float, nullable=False))
    started_at: float | None = Field(default=None, sa_column=Column(Float))
    updated_at: float = Field(sa_column=Column(Float, nullable=False))
    completed_at: float | None = Field(default=None, sa_column=Column(Float))


class RunEventRow(SQLModel, table=True):
    __tablename__ = "run_event"

    run_id: str = Field(primary_key=True, max_length=36)
    seq: int = Field(primary_key=True)
    type: str = Field(max_length=24)
    data: dict[str, Any] = _json(nullable=False)
    created_at: float = Field(sa_column=Column(Float, nullable=False))


class WebhookDeliveryRow(SQLModel, table=True):
    """The outbox: written in the transaction that ends the run, sent and retried by the deliverer."""

    __tablename__ = "webhook_delivery"
    __table_args__ = (
        Index("ix_delivery_due", "state", "next_attempt_at"),
        Index("ix_delivery_run", "run_id"),
    )

    # Sent as `webhook-id` on every attempt.
    id: str = Field(primary_key=True, max_length=40)
    run_id: str = Field(max_length=36)
    url: str
    payload: dict[str, Any] = _json(nullable=False)
    state: str = Field(max_length=16)
    # Attempts counted against the limit (RetryWebhookDelivery starts a new count) and all attempts made.
    attempt_count: int = 0
    attempts: list[dict[str, Any]] | None = _json()
    # Retries stop after the attempt limit or once this time has passed.
    give_up_at: float = Field(sa_column=Column(Float, nullable=False))
    next_attempt_at: float = Field(sa_column=Column(Float, nullable=False))
    lease_owner: str | None = Field(default=None, max_length=64)
    lease_expires_at: float | None = Field(default=None, sa_column=Column(Float))
    created_at: float = Field(sa_column=Column(Float, nullable=False))
    delivered_at: float | None = Field(default=None, sa_column=Column(Float))
    traceparent: str | None = Field(default=None, max_length=64)


class SessionRow(SQLModel, table=True):
    __tablename__ = "session"

    id: str = Field(primary_key=True, max_length=128)
    org_id: str = Field(default="", max_length=128)
    user_id: str = Field(default="", max_length=128)
    agent_id: str = Field(max_length=64)
    run_count: int = 0
    created_at: float = Field(sa_column=Column(Float, nullable=False))
    updated_at: float = Field(sa_column=Column(Float, nullable=False))


class SchemaVersionRow(SQLModel, table=True):
    __tablename__ = "schema_version"

    version: int = Field(primary_key=True)
    applied_at: float = Field(sa_column=Column(Float, nullable=False))


RUN = RunRow.__table__  # type: ignore[attr-defined]
RUN_EVENT = RunEventRow.__table__  # type: ignore[attr-defined]
SESSION = SessionRow.__table__  # type: ignore[attr-defined]
WEBHOOK_DELIVERY = WebhookDeliveryRow.__table__  # type: ignore[attr-defined]
SCHEMA_VERSION = SchemaVersionRow.__table__  # type: ignore[attr-defined]
