"""What one group commit does with its ops, the same on every backend. The hot ops are typed (event
appends, new runs, state changes) and applied set by set: a backend's `Steps` runs each set as one
statement where it pays (PostgreSQL, server/store/pg_writes.py) or row by row where statements are
cheap (SQLite, server/store/sqlite_steps.py). Any other write is a `Call`: a function run on the
connection, in queue order.

Order: a caller awaits every op but an append, so ops of different callers in one batch are
concurrent and any order of them is a valid one. What a caller may queue without waiting (appends,
then the run's final change) keeps its order: per run, appends and changes apply in queue order;
calls apply in queue order relative to everything. Within the ops between two calls (a segment),
new runs are stored first, then in rounds: per run, its next appends and its next change."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy import Connection

from server.store.records import (
    QUEUED,
    RUNNING,
    START,
    TERMINAL,
    EventRecord,
    NewRun,
    Outcome,
    RunRecord,
)

# SQLSTATEs of a server that went away or is restarting: connection exceptions, admin/crash shutdown,
# cannot connect now.
GONE = ("08", "57P01", "57P02", "57P03")
SessionKey = tuple[str, str]  # (session id, org id)
IdempotencyKey = tuple[str, str]  # (org id, idempotency key)


@dataclass(slots=True)
class Tx:
    """What a write op sees: the connection of the open transaction and a list of events to
    publish once that transaction commits."""

    conn: Connection
    published: list[EventRecord] = field(default_factory=list)
    # Set by an op that queued a run, so other replicas' dispatchers are told.
    queued: bool = False
    # Runs an op asked to cancel, so the replica executing each is told at once.
    cancels: list[str] = field(default_factory=list)


class ConnectionLost(Exception):
    """A backend's steps lost the connection (not the statement's fault): worth reconnecting and
    trying the batch again."""


def gone(exc: BaseException) -> bool:
    """A driver error that says the server went away."""
    return str(getattr(exc, "sqlstate", "") or "").startswith(GONE)


# ---- ops ---------------------------------------------------------------------------------------


@dataclass(slots=True)
class Append:
    """Events of a RUNNING run leased by `owner`; the result says whether they were stored."""

    run_id: str
    owner: str
    events: list[EventRecord]
    future: asyncio.Future[bool]


@dataclass(slots=True)
class Admit:
    """A new run (no per-org caps): QUEUED, or with `lease` RUNNING at once when no run is queued
    and its session is idle. Result: (run, True), or (the run stored under its idempotency key,
    False)."""

    new: NewRun
    lease: tuple[str, float] | None
    future: asyncio.Future[tuple[RunRecord, bool] | None]


@dataclass(slots=True)
class Change:
    """A conditional state change with its event (see SqlStore.transition); result: the run as it
    left it, or None when the conditions did not hold. `webhook` renders the outbox row of a run with
    a webhook_url that ends."""

    run_id: str
    outcome: Outcome
    states: tuple[str, ...]
    owner: str | None
    lease_before: float | None
    deadline_before: float | None
    seq: int | None
    webhook: Callable[[RunRecord, float], dict[str, Any]]
    future: asyncio.Future[RunRecord | None]


@dataclass(slots=True)
class Call:
    fn: Callable[[Tx], Any]
    future: asyncio.Future[Any]


Op = Append | Admit | Change | Call


@dataclass(frozen=True, slots=True)
class Chain:
    """Appends of one run that apply together: one owner, seqs after+1..last without a gap."""

    run_id: str
    owner: str
    after: int
    last: int
    events: list[EventRecord]


# ---- what a backend provides ---------------------------------------------------------------------


class Steps(Protocol):
    """The statements of a batch on one backend's connection, each over a set of rows."""

    def transaction(self) -> AbstractContextManager[None]: ...

    def advance(self, chains: Sequence[Chain], now: float) -> set[str]:
        """For each chain (at most one per run) whose run is RUNNING, leased to its owner and at
        last_seq == after: set last_seq = last and store the chain's events. Returns the run ids
        advanced."""
        ...

    def change(self, changes: Sequence[Change], now: float) -> list[RunRecord | None]:
        """Apply each change (at most one per run) whose conditions hold, storing its event
        (`change_event`); the runs as they left it, None where the conditions did not hold."""
        ...

    def queue_state(self, sessions: Sequence[SessionKey]) -> tuple[bool, set[SessionKey]]:
        """Whether any run is QUEUED; if none, which of `sessions` have a queued, running or paused
        run (their rows locked first, so replicas cannot both start a run of one session)."""
        ...

    def runs_by_key(self, keys: Sequence[IdempotencyKey]) -> dict[IdempotencyKey, RunRecord]: ...

    def insert_runs(
        self, rows: Sequence[dict[str, Any]], sessions: Sequence[dict[str, Any]]
    ) -> dict[str, RunRecord]:
        """Insert runs, numbered in the order of `rows`; one whose idempotency key is taken is
        skipped. For each run inserted, its START event (`start_event`) and its session `sessions[i]`
        (`session_row`): inserted, or the stored one counted up by one with the new `updated_at`.
        Returns the runs inserted, by id."""
        ...

    def insert_deliveries(self, rows: Sequence[dict[str, Any]]) -> None: ...


# ---- the plan --------------------------------------------------------------------------------------


def run_batch(tx: Tx, steps: Steps, batch: Sequence[Op]) -> list[Any]:
    """Apply the ops of a batch inside the open transaction; their results, in batch order."""
    results: list[Any] = [None] * len(batch)
    segment: list[int] = []
    for i, op in enumerate(batch):
        if isinstance(op, Call):
            _segment(tx, steps, batch, segment, results)
            segment = []
            results[i] = op.fn(tx)
        else:
            segment.append(i)
    _segment(tx, steps, batch, segment, results)
    return results


def _segment(tx: Tx, steps: Steps, batch: Sequence[Op], indexes: list[int], results: list[Any]) -> None:
    if not indexes:
        return
    now = time.time()
    admits = [(i, op) for i in indexes if isinstance(op := batch[i], Admit)]
    if admits:
        _admit(tx, steps, admits, now, results)
    pending = [(i, op) for i in indexes if isinstance(op := batch[i], Append | Change)]
    while pending:
        pending = _round(tx, steps, pending, now, results)


# ---- appends and changes ---------------------------------------------------------------------------


def _round(
    tx: Tx,
    steps: Steps,
    pending: list[tuple[int, Append | Change]],
    now: float,
    results: list[Any],
) -> list[tuple[int, Append | Change]]:
    """Per run, the appends up to its next change that chain together, and that change if all of
    them did; returns the ops left for the next round."""
    by_run: dict[str, list[tuple[int, Append | Change]]] = {}
    for item in pending:
        by_run.setdefault(item[1].run_id, []).append(item)
    chains: list[tuple[Chain, list[tuple[int, Append]]]] = []
    changes: list[tuple[int, Change]] = []
    left: list[tuple[int, Append | Change]] = []
    for ops in by_run.values():
        chain, rest = _chain(ops, results)
        if chain:
            first, last = chain[0][1], chain[-1][1]
            events = [e for _, append in chain for e in append.events]
            link = Chain(first.run_id, first.owner, first.events[0].seq - 1, last.events[-1].seq, events)
            chains.append((link, chain))
        if rest and isinstance(next_op := rest[0][1], Change):
            changes.append((rest[0][0], next_op))
            rest = rest[1:]
        left += rest
    if chains:
        advanced = steps.advance([c for c, _ in chains], now)
        for c, chained in chains:
            stored = c.run_id in advanced
            for i, _ in chained:
                results[i] = stored
            if stored:
                tx.published += c.events
    if changes:
        records = steps.change([c for _, c in changes], now)
        deliveries = []
        for (i, change), record in zip(changes, records, strict=True):
            results[i] = record
            if record is None:
                continue
            if record.webhook_url and change.outcome.state in TERMINAL:
                # The outbox row commits with the end of the run: a crash cannot lose the notification.
                deliveries.append(change.webhook(record, now))
            tx.published.append(change_event(change.outcome, record, now))
            tx.queued = tx.queued or change.outcome.state == QUEUED
        if deliveries:
            steps.insert_deliveries(deliveries)
    left.sort(key=lambda item: item[0])
    return left


def _chain(
    ops: list[tuple[int, Append | Change]], results: list[Any]
) -> tuple[list[tuple[int, Append]], list[tuple[int, Append | Change]]]:
    """The leading appends of one run's ops that apply as one (same owner, no seq gap from one to
    the next), and the ops after them. An append without events is stored as it is; one with a gap
    inside can never be (both are answered here and do not break the chain)."""
    chain: list[tuple[int, Append]] = []
    k = 0
    while k < len(ops):
        i, op = ops[k]
        if not isinstance(op, Append):
            break
        if not op.events or not _contiguous(op.events):
            results[i] = not op.events
            k += 1
            continue
        if chain:
            prev = chain[-1][1]
            if op.owner != prev.owner or op.events[0].seq != prev.events[-1].seq + 1:
                break  # applies (or not) after the chain: in the next round
        chain.append((i, op))
        k += 1
    return chain, ops[k:]


def _contiguous(events: list[EventRecord]) -> bool:
    return all(b.seq == a.seq + 1 for a, b in itertools.pairwise(events))


def change_event(outcome: Outcome, run: RunRecord, now: float) -> EventRecord:
    """The event a change stores, at the run's new last_seq; it carries the run as the change left it."""
    return EventRecord(run.id, run.last_seq, outcome.event_type, outcome.event_data, now, run)


# ---- new runs --------------------------------------------------------------------------------------


def run_values(new: NewRun, lease: tuple[str, float] | None, now: float) -> dict[str, Any]:
    """The row of a new run: QUEUED, or RUNNING under `lease` (owner, seconds)."""
    values = {
        **{k: getattr(new, k) for k in NewRun.__slots__},
        "state": QUEUED,
        "attempt": 1,
        "deadline": now + new.timeout_s,
        "last_seq": 1,
        "cancel_requested": False,
        "created_at": now,
        "updated_at": now,
        "lease_owner": None,
        "lease_expires_at": None,
        "started_at": None,
    }
    if lease is not None:
        values |= {
            "state": RUNNING,
            "lease_owner": lease[0],
            "lease_expires_at": now + lease[1],
            "started_at": now,
        }
    return values


def start_event(run_id: str, session_id: str, now: float) -> EventRecord:
    """Stored with the run, so every run's log (even one cancelled while queued) begins with it and a
    stream can send it at once."""
    return EventRecord(run_id, 1, START, {"session_id": session_id, "attempt": 1}, now)


def _admit(
    tx: Tx,
    steps: Steps,
    admits: list[tuple[int, Admit]],
    now: float,
    results: list[Any],
) -> None:
    """New runs, decided in queue order as if one by one: a run with a lease starts at once only
    while no run is queued (one queued earlier in the batch included) and its session has no active
    run (one started earlier in the batch included)."""
    keys = list(dict.fromkeys(_key(a.new) for _, a in admits if a.new.idempotency_key))
    stored = steps.runs_by_key(keys) if keys else {}
    leased = list(dict.fromkeys(_session(a.new) for _, a in admits if a.lease is not None))
    # Without a lease no run starts at once: then nothing need be read.
    any_queued, busy = steps.queue_state(leased) if leased else (True, set())
    rows: list[dict[str, Any]] = []
    sessions: list[dict[str, Any]] = []
    inserting: list[tuple[int, Admit]] = []
    first_of_key: dict[IdempotencyKey, int] = {}
    repeats: list[tuple[int, int]] = []  # (op, the op earlier in the batch with the same key)
    for i, admit in admits:
        new = admit.new
        key = _key(new) if new.idempotency_key else None
        if key is not None and key in stored:
            results[i] = (stored[key], False)
            continue
        if key is not None and key in first_of_key:
            repeats.append((i, first_of_key[key]))
            continue
        at_once = admit.lease is not None and not any_queued and _session(new) not in busy
        busy.add(_session(new))
        any_queued = any_queued or not at_once
        rows.append(run_values(new, admit.lease if at_once else None, now))
        sessions.append(session_row(new, now))
        inserting.append((i, admit))
        if key is not None:
            first_of_key[key] = i
    inserted = steps.insert_runs(rows, sessions) if rows else {}
    taken: list[tuple[int, Admit]] = []  # keys another replica stored meanwhile
    for i, admit in inserting:
        run = inserted.get(admit.new.id)
        if run is None:
            taken.append((i, admit))
            continue
        results[i] = (run, True)
        tx.published.append(start_event(run.id, run.session_id, now))
        tx.queued = tx.queued or run.state == QUEUED
    if taken:
        found = steps.runs_by_key([_key(a.new) for _, a in taken])
        for i, admit in taken:
            run = found.get(_key(admit.new))
            results[i] = (run, False) if run is not None else None
    for i, first in repeats:
        earlier = results[first]
        results[i] = (earlier[0], False) if earlier is not None else None


def _key(new: NewRun) -> IdempotencyKey:
    return (new.org_id, new.idempotency_key or "")


def _session(new: NewRun) -> SessionKey:
    return (new.session_id, new.org_id)


def session_row(new: NewRun, now: float) -> dict[str, Any]:
    return {
        "id": new.session_id,
        "org_id": new.org_id,
        "user_id": new.user_id,
        "agent_id": new.agent_id,
        "run_count": 1,
        "created_at": now,
        "updated_at": now,
    }


def event_row(event: EventRecord) -> dict[str, Any]:
    return {
        "run_id": event.run_id,
        "seq": event.seq,
        "type": event.type,
        "data": event.data,
        "created_at": event.created_at,
    }
