"""The server's Prometheus metrics. Labels are bounded: agent ids (from the agents file), states,
error reasons (the error table), org ids (the tenants), outcomes — never a run id. Most figures are
counted where a commit of this process is published (`committed`), so every path that ends a run
(its runner, a cancel, the sweeper) is counted once, by the process whose commit ended it."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

from prometheus_client import Counter, Gauge, Histogram
from sqlalchemy import Engine, event

from server.store.records import TERMINAL, EventRecord, RunRecord

# Seconds, from a few milliseconds (echo) to an hour (the default run timeout).
SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)

RUNS_SUBMITTED = Counter("agentrun_runs_submitted", "Runs stored by this process.", ["agent"])
RUNS_FINISHED = Counter(
    "agentrun_runs_finished",
    "Runs ended by a commit of this process, by final state and error reason.",
    ["agent", "state", "reason"],
)
RUN_SECONDS = Histogram(
    "agentrun_run_duration_seconds", "From submission to the run's end.", ["agent"], buckets=SECONDS
)
QUEUE_WAIT = Histogram(
    "agentrun_queue_wait_seconds", "From submission to the run's first start.", ["agent"], buckets=SECONDS
)
FIRST_EVENT = Histogram(
    "agentrun_time_to_first_event_seconds",
    "From submission to the agent's first event (first attempts only).",
    ["agent"],
    buckets=SECONDS,
)
EVENTS = Counter("agentrun_events_appended", "Run events committed by this process.")
QUEUE_DEPTH = Gauge("agentrun_queue_depth", "Runs waiting in the queue (the whole database).")
QUEUE_OLDEST = Gauge(
    "agentrun_queue_oldest_age_seconds", "Age of the oldest queued run (0 when none is queued)."
)
WRITER_BATCH = Histogram(
    "agentrun_writer_batch_ops",
    "Operations per group commit of the store's single writer.",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
)
WRITER_COMMIT = Histogram("agentrun_writer_commit_seconds", "Time of one group commit.", buckets=SECONDS[:12])
DB_STATEMENTS = Counter("agentrun_db_statements", "SQL statements this process sent to its database.")
LEASE_RENEWALS = Counter("agentrun_lease_renewals", "Leases of executing runs renewed.")
SWEEPS = Counter("agentrun_sweeps", "Sweeps for expired leases and passed deadlines.")
OPEN_STREAMS = Gauge(
    "agentrun_open_streams", "Streams and waiters following a run in this process.", ["kind"]
)
WEBHOOK_ATTEMPTS = Counter("agentrun_webhook_attempts", "Webhook attempts by outcome.", ["outcome"])
WEBHOOK_LAG = Histogram(
    "agentrun_webhook_delivery_lag_seconds",
    "From the delivery's creation (the run's end) to its successful attempt.",
    buckets=SECONDS,
)
ORG_RUNS = Counter("agentrun_org_runs_finished", "Runs ended, by org.", ["org"])
ORG_TOKENS = Counter(
    "agentrun_org_tokens", "Model tokens used by ended runs, by org and kind.", ["org", "kind"]
)
RETENTION_DELETED = Counter("agentrun_retention_deleted", "Rows deleted by retention, by kind.", ["kind"])

_TOKEN_KINDS = ("input_tokens", "output_tokens", "reasoning_tokens")

M = TypeVar("M", Counter, Gauge, Histogram)


class Children(Generic[M]):
    """A labelled metric's children, each looked up once: `labels()` takes a lock and checks its
    arguments on every call, and every run calls it several times. Labels are bounded (see above),
    so is this cache; it holds the very children the metric does."""

    __slots__ = ("_cache", "_metric")

    def __init__(self, metric: M) -> None:
        self._metric: M = metric
        self._cache: dict[tuple[str, ...], M] = {}

    def __call__(self, *values: str) -> M:
        child = self._cache.get(values)
        if child is None:
            child = self._cache[values] = self._metric.labels(*values)
        return child


submitted = Children(RUNS_SUBMITTED)
open_streams = Children(OPEN_STREAMS)
_runs_finished = Children(RUNS_FINISHED)
_run_seconds = Children(RUN_SECONDS)
_queue_wait = Children(QUEUE_WAIT)
_first_event = Children(FIRST_EVENT)
_org_runs = Children(ORG_RUNS)
_org_tokens = Children(ORG_TOKENS)


def committed(events: list[EventRecord]) -> None:
    """Count what a commit of this process did: events appended, runs ended."""
    EVENTS.inc(len(events))
    for e in events:
        run = e.run
        if run is not None and run.state in TERMINAL and e.final:
            _finished(run)


def _finished(run: RunRecord) -> None:
    reason = run.error_reason or ""
    _runs_finished(run.agent_id, run.state, reason).inc()
    if run.completed_at is not None:
        _run_seconds(run.agent_id).observe(max(run.completed_at - run.created_at, 0.0))
    org = run.org_id or "-"
    _org_runs(org).inc()
    usage: dict[str, Any] = (run.result or {}).get("usage", {})
    for kind in _TOKEN_KINDS:
        if usage.get(kind):
            _org_tokens(org, kind.removesuffix("_tokens")).inc(usage[kind])


def started(run: RunRecord) -> None:
    """A worker of this process starts a run's first attempt."""
    if run.attempt == 1 and not run.resume:
        _queue_wait(run.agent_id).observe(max(time.time() - run.created_at, 0.0))


def first_event(run: RunRecord) -> None:
    if run.attempt == 1 and not run.resume:
        _first_event(run.agent_id).observe(max(time.time() - run.created_at, 0.0))


def _statement(*_args: Any) -> None:
    DB_STATEMENTS.inc()


def count_statements() -> None:
    """Count every SQL statement of every engine in this process (idempotent)."""
    if not event.contains(Engine, "before_cursor_execute", _statement):
        event.listen(Engine, "before_cursor_execute", _statement)


QueueStats = Callable[[], Awaitable[tuple[int, float | None]]]


async def refresh_queue(stats: QueueStats) -> None:
    """Read the queue gauges from the database (at scrape time: an idle server reads nothing)."""
    depth, oldest = await stats()
    QUEUE_DEPTH.set(depth)
    QUEUE_OLDEST.set(max(time.time() - oldest, 0.0) if oldest is not None else 0.0)
