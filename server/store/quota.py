"""Per-org caps inside the writer's transactions: the queue claim that skips orgs at their running
cap (their runs wait, everyone else's are claimed), the "start at once" check of a submission, and
the queued-runs limit. Only used when a cap is set; without one the plain statements run.

Counting is exact only while one transaction at a time counts: the backend's `serialized(conn)`
says whether this one may (always on SQLite, with its single writer; on PostgreSQL, where replicas
claim concurrently, when a transaction-scoped advisory lock is free). A transaction that may not
does not wait (no lock-order deadlocks with its other writes): it claims nothing this round or
queues the run instead of starting it, and the other's work goes on."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection, Row

from server.store import statements as st

# Enough rounds for a few orgs with more queued runs than headroom in one window; each round claims
# at least one run or ends the claim.
MAX_ROUNDS = 8
Serialized = Callable[[Connection], bool]


class QueueFull(Exception):
    """The org already has its limit of queued runs (the submission stored nothing)."""


def running_by_org(conn: Connection) -> dict[str, int]:
    # RUNNING runs are bounded by the workers of all replicas: a small, index-only count.
    return {org: int(n) for org, n in conn.execute(st.RUNNING_BY_ORG).all()}


def claim(conn: Connection, params: dict[str, Any], cap: int) -> list[Row[Any]]:
    """Lease up to params["lim"] of the oldest claimable queued runs, at most `cap` running per org."""
    running = running_by_org(conn)
    claimed: list[Row[Any]] = []
    for _ in range(MAX_ROUNDS):
        want = params["lim"] - len(claimed)
        full = [org for org, n in running.items() if n >= cap]
        rows = conn.execute(st.CLAIM_CANDIDATES, {"full": full, "lim": want}).all() if want > 0 else []
        picked = []
        for row in rows:
            if running.get(row.org_id, 0) < cap:
                running[row.org_id] = running.get(row.org_id, 0) + 1
                picked.append(row.number)
        if picked:
            claimed += conn.execute(st.CLAIM_NUMBERS, {**params, "numbers": picked}).all()
        if len(rows) < want or not picked:
            break  # the queue has nothing more for orgs with room
    return claimed


def may_start(conn: Connection, org_id: str, cap: int, serialized: Serialized) -> bool:
    """A new run of `org_id` may skip the queue: the org is below its cap and no queued run of an org
    with room is waiting (runs of orgs at their cap wait anyway; they do not hold others back)."""
    if cap <= 0:
        return conn.execute(st.ANY_QUEUED).first() is None
    if not serialized(conn):
        return False
    running = running_by_org(conn)
    full = [org for org, n in running.items() if n >= cap]
    if org_id in full:
        return False
    return conn.execute(st.ANY_QUEUED_OUTSIDE, {"full": full}).first() is None


def queue_full(conn: Connection, org_id: str, limit: int) -> bool:
    if limit <= 0:
        return False
    return int(conn.execute(st.QUEUED_IN_ORG, {"org": org_id, "lim": limit}).scalar_one()) >= limit
