"""The store's reads of runs and events, on the reader pool (SQLite: each read whole in one reader
thread). With an org, a read sees only that org's runs: the tenant condition is part of the query,
so another org's run is never fetched."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import ColumnElement, Connection, Executable, func, select
from sqlalchemy.engine import Row

from common import limits
from server.store import statements as st
from server.store.records import QUEUED, TOOL_START, EventRecord, PriorRun, RunFilter, RunRecord
from server.store.tables import RUN, RUN_EVENT

if TYPE_CHECKING:
    from server.store.dialect import Backend

Fetch = Callable[..., Awaitable[list[Sequence[Row[Any]]]]]
# run.number is an INTEGER column, 32 bits on PostgreSQL (SERIAL): no run has a larger number, and a
# larger one cannot even be a query parameter there.
MAX_RUN_NUMBER = limits.MAX_RUN_NUMBER
# ListRuns counts matching runs up to this many (its total_size); more read as this number.
MAX_COUNTED_RUNS = 100_000


def run_number(ref: str) -> int | None:
    """The run number `ref` spells (ASCII digits, at most MAX_RUN_NUMBER), or None: then `ref` can
    only be a run id. Other digits ("²", "١٢") and larger numbers are ids no run has."""
    if not (ref.isascii() and ref.isdigit()) or len(ref.lstrip("0")) > len(str(MAX_RUN_NUMBER)):
        return None
    number = int(ref)
    return number if number <= MAX_RUN_NUMBER else None


def run_from_row(row: Row[Any]) -> RunRecord:
    return RunRecord(**row._mapping)


# A row of st.RECORD_VIEW holds RunRecord's first fields in order, then a few named ones.
_POSITIONAL = next(
    (i for i, (c, f) in enumerate(zip(st.RECORD_VIEW, st.RECORD_FIELDS, strict=False)) if c.name != f),
    len(st.RECORD_VIEW),
)
_NAMED = tuple(c.name for c in st.RECORD_VIEW[_POSITIONAL:])


def view_record(row: Row[Any]) -> RunRecord:
    """A run from a row of st.RECORD_VIEW: by position, five times cheaper than by name (a batch
    builds a hundred)."""
    return RunRecord(*row[:_POSITIONAL], **dict(zip(_NAMED, row[_POSITIONAL:], strict=True)))


def event_from_row(row: Row[Any]) -> EventRecord:
    return EventRecord(row.run_id, row.seq, row.type, row.data, row.created_at)


Query = Executable | tuple[Executable, dict[str, Any]]


def _execute(queries: Sequence[Query], conn: Connection) -> list[Sequence[Row[Any]]]:
    pairs = [q if isinstance(q, tuple) else (q, {}) for q in queries]
    return [conn.execute(statement, params).all() for statement, params in pairs]


class RunReads:
    """Mixed into SqlStore, which provides `_fetch` (run read statements, return their rows) and
    `_backend`."""

    _fetch: Fetch
    _backend: Backend

    async def _read(self, *queries: Query) -> list[Sequence[Row[Any]]]:
        """Like `_fetch`, but whole in one reader thread when the backend can (SQLite's `run_read`:
        one thread hop per read, where its async driver makes several per statement)."""
        run_read: Callable[..., Awaitable[list[Sequence[Row[Any]]]] | None] | None
        run_read = getattr(self._backend, "run_read", None)
        pending = run_read(functools.partial(_execute, queries)) if run_read is not None else None
        return await (pending if pending is not None else self._fetch(*queries))

    async def get_run(self, ref: str, org: str | None = None) -> RunRecord | None:
        """A run by id or number; with `org`, only a run of that org (another org's is None)."""
        number = run_number(ref)
        if org is None:
            query = st.RUN_BY_NUMBER if number is not None else st.RUN_BY_ID
        else:
            query = st.RUN_BY_NUMBER_IN_ORG if number is not None else st.RUN_BY_ID_IN_ORG
        [rows] = await self._read((query, {"ref": ref if number is None else number, "org": org}))
        return view_record(rows[0]) if rows else None

    async def get_runs(self, refs: Sequence[str], org: str | None = None) -> dict[str, RunRecord]:
        """Runs by id or number (with `org`, of that org only); maps each found ref to its run."""
        if not refs:
            return {}
        numbers = {ref: run_number(ref) for ref in refs}
        ids = [ref for ref, number in numbers.items() if number is None]
        wanted = [number for number in numbers.values() if number is not None]
        queries: list[Query] = []
        if ids:
            queries.append((st.RUNS_BY_ID if org is None else st.RUNS_BY_ID_IN_ORG, {"ids": ids, "org": org}))
        if wanted:
            query = st.RUNS_BY_NUMBER if org is None else st.RUNS_BY_NUMBER_IN_ORG
            queries.append((query, {"numbers": wanted, "org": org}))
        results = await self._read(*queries)
        by_id = {record.id: record for rows in results for record in map(view_record, rows)}
        by_number = {record.number: record for record in by_id.values()}
        found = {
            ref: by_number.get(number) if number is not None else by_id.get(ref)
            for ref, number in numbers.items()
        }
        return {ref: record for ref, record in found.items() if record is not None}

    async def list_runs(
        self, flt: RunFilter, *, before_number: int | None, limit: int, offset: int = 0
    ) -> tuple[list[RunRecord], int]:
        conditions = _filter_conditions(flt)
        page = select(*st.RECORD_VIEW).where(*conditions)
        if before_number is not None:
            page = page.where(RUN.c.number < before_number)
        # The total is counted up to a bound: an exact count of a huge table on every page would cost
        # a scan per request.
        matching = select(RUN.c.number).where(*conditions).limit(MAX_COUNTED_RUNS).subquery()
        rows, count = await self._read(
            page.order_by(RUN.c.number.desc()).limit(limit).offset(offset),
            select(func.count()).select_from(matching),
        )
        return [view_record(r) for r in rows], int(count[0][0])

    async def session_history(
        self, session_id: str, org_id: str, before_number: int, limit: int = 100
    ) -> list[PriorRun]:
        """The latest `limit` completed runs of an org's session before run `before_number`, oldest
        first (a session id another org also used shows none of that org's runs)."""
        params = {"sid": session_id, "org": org_id, "before": before_number, "lim": limit}
        [rows] = await self._read((st.SESSION_HISTORY, params))
        return [PriorRun(r.input, r.result, r.messages) for r in reversed(rows)]

    async def list_events(self, run_id: str, after_seq: int, limit: int) -> list[EventRecord]:
        [rows] = await self._read((st.EVENTS_AFTER, {"rid": run_id, "after": after_seq, "lim": limit}))
        return [event_from_row(r) for r in rows]

    async def started_tools(self, run_id: str) -> list[str]:
        """The names of the tools the run's stored TOOL_START events say were called (the ledger)."""
        query = select(RUN_EVENT.c.data).where(RUN_EVENT.c.run_id == run_id, RUN_EVENT.c.type == TOOL_START)
        [rows] = await self._read(query)
        return [str((row.data or {}).get("name", "")) for row in rows]

    async def queue_stats(self) -> tuple[int, float | None]:
        """How many runs are queued (every org), and when the oldest of them was submitted."""
        query = select(func.count(), func.min(RUN.c.created_at)).where(RUN.c.state == QUEUED)
        [rows] = await self._read(query)
        values: Sequence[Any] = rows[0]
        return int(values[0]), values[1]


def _filter_conditions(flt: RunFilter) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if flt.org_id is not None:
        conditions.append(RUN.c.org_id == flt.org_id)
    for column, value in (
        (RUN.c.agent_id, flt.agent_id),
        (RUN.c.session_id, flt.session_id),
        (RUN.c.user_id, flt.user_id),
    ):
        if value:
            conditions.append(column == value)
    if flt.states:
        conditions.append(RUN.c.state.in_(flt.states))
    if flt.created_after is not None:
        conditions.append(RUN.c.created_at >= flt.created_after)
    if flt.created_before is not None:
        conditions.append(RUN.c.created_at < flt.created_before)
    for key, value in sorted(flt.metadata.items()):
        conditions.append(RUN.c.extras[key].as_string() == value)
    if flt.latest_per_session:
        # Uncorrelated: the newest matching run of each session, whatever the outer query is.
        newest = select(func.max(RUN.c.number)).where(*conditions).group_by(RUN.c.session_id)
        return [RUN.c.number.in_(newest.correlate(None))]
    return conditions
