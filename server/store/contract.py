"""What the rest of the server needs of storage. The engine, the runner, the streams and the webhook
deliverer depend on these protocols only; `open_store(url, ...)` picks the backend from the URL and
owns its connections. tests/test_store_contract.py is the conformance suite every backend runs.

Promises every implementation keeps: a run's state changes by one conditional write (a result of
None or False means its conditions did not hold, never a partial write); a run's events have seqs
1, 2, 3... with no gaps and are published (to `publish`, in this process) only after they commit."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

from server.store.deliveries import Outbox
from server.store.dialect import backend_for
from server.store.quota import QueueFull
from server.store.records import (
    DeliveryRecord,
    EventRecord,
    NewRun,
    Outcome,
    PriorRun,
    RunFilter,
    RunRecord,
)
from server.store.retention import Purged
from server.store.sql import SqlStore

__all__ = ["Deliveries", "Outbox", "Publish", "Purged", "QueueFull", "Store", "open_store"]

# Called with the events of every commit, after it committed (the event of a state change carries
# the run as that change left it).
Publish = Callable[[list[EventRecord]], None]


class Deliveries(Protocol):
    """The webhook outbox. Rows are written in the transaction that ends a run; a deliverer claims
    due rows with a lease, so one process at a time sends a row, and records each attempt."""

    async def claim_due(self, owner: str, limit: int, lease_s: float) -> list[DeliveryRecord]:
        """Lease to `owner` for `lease_s` up to `limit` PENDING rows that are due and not leased (or
        whose lease expired), earliest due first; a row leased to one owner is not handed to another."""
        ...

    async def record(
        self, delivery: DeliveryRecord, owner: str, attempt: dict[str, Any], retry_at: float | None
    ) -> DeliveryRecord | None:
        """Store an attempt and end the lease: DELIVERED on a 2xx, else PENDING until `retry_at`, or
        FAILED without one; also shown on the run. None unless `owner` holds the row's lease."""
        ...

    async def retry(self, run_id: str, delivery_id: str, max_age_s: float) -> DeliveryRecord | None:
        """Make a run's delivery PENDING and due now, with a fresh attempt count and age limit; None
        when the run has no such delivery."""
        ...

    async def release(self, owner: str) -> None:
        """End `owner`'s leases of pending rows, so others may send them now."""
        ...

    async def for_run(self, run_id: str) -> list[DeliveryRecord]:
        """A run's deliveries, oldest first."""
        ...

    async def next_due(self) -> float | None:
        """When the earliest pending row is due (a leased one not before its lease expires); None
        when no row is pending."""
        ...


class Store(Protocol):
    # ---- reads --------------------------------------------------------------------------

    async def get_run(self, ref: str, org: str | None = None) -> RunRecord | None:
        """A run by id or number; with `org`, only a run of that org."""
        ...

    async def get_runs(self, refs: Sequence[str], org: str | None = None) -> dict[str, RunRecord]:
        """Runs by ids and/or numbers (with `org`, of that org only), keyed by id and by number."""
        ...

    async def list_runs(
        self, flt: RunFilter, *, before_number: int | None, limit: int, offset: int = 0
    ) -> tuple[list[RunRecord], int]:
        """One page of the runs `flt` selects, newest first, below `before_number`; and how many it
        selects in all."""
        ...

    async def session_history(
        self, session_id: str, org_id: str, before_number: int, limit: int = 100
    ) -> list[PriorRun]:
        """The latest `limit` COMPLETED runs of an org's session before run `before_number`, oldest
        first."""
        ...

    async def list_events(self, run_id: str, after_seq: int, limit: int) -> list[EventRecord]:
        """Up to `limit` stored events of a run with seq > `after_seq`, in seq order."""
        ...

    async def started_tools(self, run_id: str) -> list[str]:
        """The names of the tools the run's stored TOOL_START events say were called (the ledger)."""
        ...

    async def queue_stats(self) -> tuple[int, float | None]:
        """How many runs are queued (every org), and when the oldest of them was submitted."""
        ...

    # ---- runs -----------------------------------------------------------------------------

    async def create_run(
        self,
        new: NewRun,
        lease: tuple[str, float] | None = None,
        *,
        max_running: int = 0,
        max_queued: int = 0,
    ) -> tuple[RunRecord, bool]:
        """Store a run with its START event (seq 1): QUEUED, or with `lease` (owner, seconds) RUNNING
        at once when nothing is queued ahead of it, its session is idle and its org is under
        `max_running`. A taken idempotency key returns the stored run and False. Raises QueueFull
        when the run would be queued while its org has `max_queued` queued (0 = no limit)."""
        ...

    async def delete_run(self, run_id: str) -> bool:
        """Delete a terminal run and its events; False (and nothing deleted) otherwise."""
        ...

    async def update_metadata(
        self, run_id: str, metadata: Mapping[str, Any] | None, org: str | None = None
    ) -> RunRecord | None:
        """Replace a run's metadata (its extras; None or empty: none) in any state, bumping its
        update time, with no event; with `org`, only a run of that org. The run as updated, or None
        when there is no such run."""
        ...

    # ---- the queue and leases -------------------------------------------------------------

    async def claim(
        self, owner: str, limit: int, lease_s: float, max_running: int = 0
    ) -> tuple[list[RunRecord], bool]:
        """Lease up to `limit` of the oldest QUEUED runs whose session is idle to `owner` (RUNNING),
        with `max_running` > 0 none of an org at that many running; each run goes to one claimer.
        Also, when fewer than `limit` were claimed, whether queued runs remain (they wait for an
        earlier run of their session or for room in their org)."""
        ...

    async def renew(self, owner: str, lease_s: float, run_ids: Sequence[str]) -> list[str]:
        """Extend `owner`'s leases on `run_ids` (only runs it still executes) by `lease_s` from now;
        the ids among them with a cancel requested."""
        ...

    async def request_cancel(self, run_id: str) -> bool:
        """Flag a RUNNING run for its lease holder to cancel; False when it is not RUNNING."""
        ...

    async def overdue(self, now: float, limit: int = 500) -> list[RunRecord]:
        """Non-terminal runs whose deadline is before `now`, and RUNNING runs whose lease expired."""
        ...

    async def transition(
        self,
        run_id: str,
        outcome: Outcome,
        *,
        states: Iterable[str],
        owner: str | None = None,
        lease_before: float | None = None,
        deadline_before: float | None = None,
        seq: int | None = None,
    ) -> RunRecord | None:
        """One conditional update from one of `states` to the outcome's state (only while `owner`
        holds the lease / the lease expired before / the deadline passed before / last_seq is `seq`,
        where given), with the outcome's event at the next seq and, when a run with a webhook_url
        ends, its outbox row — all in one transaction. None when the conditions did not hold."""
        ...

    async def decide(self, run_id: str, tool_call_id: str, decision: dict[str, Any]) -> RunRecord | None:
        """PAUSED -> QUEUED with `decision` recorded, if `tool_call_id` is the pending call; applies
        once (None afterwards, as for any other call or state)."""
        ...

    # ---- events and notifications ---------------------------------------------------------

    async def append(self, run_id: str, owner: str, events: list[EventRecord]) -> Awaitable[bool]:
        """Queue events for the next commit; the awaitable says whether they were stored: only for a
        RUNNING run `owner` leases, with seqs that follow its last seq without a gap."""
        ...

    def listen(
        self,
        on_events: Callable[[str], None],
        on_queue: Callable[[], None],
        on_cancel: Callable[[str], None],
        on_health: Callable[[bool], None] = lambda _up: None,
    ) -> AbstractAsyncContextManager[None]:
        """While open, commits of other processes call `on_events(run_id)`, `on_queue()` and, for a
        run `request_cancel` flagged, `on_cancel(run_id)` where the backend can tell (PostgreSQL);
        `on_health(up)` says when that news stops and starts again (a lost connection), so waiters
        poll meanwhile. On SQLite, which has no NOTIFY, the store watches the file instead: another
        process's commit calls `on_queue()` and `on_health(True)` (every waiter re-reads)."""
        ...

    # ---- retention ----------------------------------------------------------------------

    async def purge(
        self, before: float | None, limit: int = 500, orgs: Mapping[str, float | None] | None = None
    ) -> Purged | None:
        """One batch, in one transaction: delete up to `limit` terminal runs that ended before
        `before` (None: no default cutoff) — for an org in `orgs`, before its own cutoff instead
        (None: keep that org's runs) — with their events, their webhook deliveries and the sessions
        left without a run. A run is kept, whatever its age, while it is not terminal or a delivery
        of it is PENDING. None (and nothing deleted) when another replica is purging."""
        ...

    @property
    def deliveries(self) -> Deliveries:
        """The webhook outbox in the same database."""
        ...


@contextlib.asynccontextmanager
async def open_store(url: str, publish: Publish, outbox: Outbox | None = None) -> AsyncIterator[Store]:
    """The store a database URL names (sqlite:///path, sqlite:///:memory:, postgresql+asyncpg://...),
    migrated and ready; its connections are closed when the context exits."""
    async with SqlStore.open(backend_for(url), publish, outbox) as store:
        yield store
