"""The store's conformance suite: every backend (SQLite file, SQLite in memory, PostgreSQL) is driven
through the contract in server/store/contract.py only, opened with `open_store`, and must keep the
same promises. Expiry is tested with short leases and waits for the condition, never for time."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Coroutine
from typing import Any

import pytest

from server.store import reads
from server.store.contract import Outbox, QueueFull, Store, open_store
from server.store.records import (
    CANCELLED,
    COMPLETED,
    CONTENT_DELTA,
    DELIVERED,
    FAILED,
    PAUSED,
    PAUSED_EVENT,
    PENDING,
    QUEUED,
    RUNNING,
    START,
    STATUS,
    STOP,
    DeliveryRecord,
    EventRecord,
    NewRun,
    Outcome,
    RunFilter,
    RunRecord,
)
from tests.waiting import until

ORG = "org-a"
HOOK = "http://127.0.0.1:9/hook"
DONE = Outcome(COMPLETED, STOP, {"state": COMPLETED}, result={"output": "done"})
CANCEL = Outcome(CANCELLED, "ERROR", {"reason": "CANCELLED"}, error_reason="CANCELLED", error_message="bye")
RELEASE = Outcome(QUEUED, STATUS, {"state": QUEUED, "reason": "RELEASED"}, release=True)
# The outbox renders its body from the final run (the suite checks it is the final one).
OUTBOX = Outbox(
    lambda run: {"id": run.id, "state": run.state, "output": (run.result or {}).get("output")}, 600.0
)


def new_run(**fields: Any) -> NewRun:
    values: dict[str, Any] = {
        "id": str(uuid.uuid4()),
        "agent_id": "echo",
        "org_id": ORG,
        "user_id": "user-1",
        "session_id": f"session-{uuid.uuid4().hex[:8]}",
        "input": {"message": "hi"},
        "timeout_s": 3600.0,
    }
    return NewRun(**(values | fields))


def attempt(status: int) -> dict[str, Any]:
    error = "" if 200 <= status < 300 else f"receiver answered HTTP {status}"
    return {"at": time.time(), "status_code": status, "error": error, "duration_ms": 3}


@pytest.fixture
def published() -> list[EventRecord]:
    return []


@pytest.fixture
async def store(database_url: str, published: list[EventRecord]) -> AsyncIterator[Store]:
    async with open_store(database_url, published.extend, OUTBOX) as opened:
        yield opened


async def queued(store: Store, **fields: Any) -> RunRecord:
    run, created = await store.create_run(new_run(**fields))
    assert (run.state, created) == (QUEUED, True)
    return run


async def running(store: Store, owner: str = "w1", lease_s: float = 60.0, **fields: Any) -> RunRecord:
    """A run started at once under `owner`'s lease (the queue must be empty)."""
    run, created = await store.create_run(new_run(**fields), lease=(owner, lease_s))
    assert (run.state, run.lease_owner, created) == (RUNNING, owner, True)
    return run


async def stored(store: Store, run_id: str, owner: str, events: list[EventRecord]) -> bool:
    return await (await store.append(run_id, owner, events))


def delta(run_id: str, seq: int, text: str = "x") -> EventRecord:
    return EventRecord(run_id, seq, CONTENT_DELTA, {"text": text}, time.time())


async def delivery(store: Store) -> DeliveryRecord:
    """The outbox row of a run that just ended."""
    run = await running(store, webhook_url=HOOK)
    assert await store.transition(run.id, DONE, states=[RUNNING], owner="w1") is not None
    [row] = await store.deliveries.for_run(run.id)
    return row


# ---- runs ---------------------------------------------------------------------------------


async def test_a_new_run_is_queued_with_its_start_event(store: Store, published: list[EventRecord]) -> None:
    before = time.time()
    new = new_run()
    run, created = await store.create_run(new)
    after = time.time()
    assert created is True
    assert (run.id, run.state, run.attempt, run.last_seq) == (new.id, QUEUED, 1, 1)
    assert (run.lease_owner, run.lease_expires_at, run.started_at, run.completed_at) == (
        None,
        None,
        None,
        None,
    )
    assert before <= run.created_at <= after and run.deadline == run.created_at + 3600.0
    [start] = await store.list_events(run.id, 0, 10)
    assert (start.seq, start.type, start.data) == (1, START, {"session_id": new.session_id, "attempt": 1})
    assert [(e.run_id, e.seq, e.type) for e in published] == [(run.id, 1, START)]

    by_id, by_number = await store.get_run(run.id), await store.get_run(str(run.number))
    assert by_id is not None and by_number is not None
    assert (by_id.id, by_number.id, by_id.state, by_id.input) == (run.id, run.id, QUEUED, {"message": "hi"})
    assert await store.get_run(run.id, org="org-b") is None
    assert await store.get_run(run.id, org=ORG) is not None
    found = await store.get_runs([run.id, "no-such-run", "999999", str(run.number)])
    assert {ref: r.id for ref, r in found.items()} == {run.id: run.id, str(run.number): run.id}
    assert await store.get_runs([run.id], org="org-b") == {}


async def test_a_run_with_a_lease_starts_at_once_only_when_nothing_waits(store: Store) -> None:
    before = time.time()
    first, created = await store.create_run(new_run(session_id="s1"), lease=("w1", 30.0))
    after = time.time()
    assert (first.state, first.lease_owner, created) == (RUNNING, "w1", True)
    assert before + 30.0 <= (first.lease_expires_at or 0) <= after + 30.0
    assert first.started_at is not None and before <= first.started_at <= after

    # Its session is busy: the next run of the session waits in the queue.
    same_session, _ = await store.create_run(new_run(session_id="s1"), lease=("w1", 30.0))
    assert (same_session.state, same_session.lease_owner) == (QUEUED, None)
    # A run is waiting: a new one does not skip the queue.
    behind, _ = await store.create_run(new_run(), lease=("w1", 30.0))
    assert (behind.state, behind.lease_owner) == (QUEUED, None)


async def test_an_idempotency_key_returns_the_stored_run(store: Store, published: list[EventRecord]) -> None:
    first, created = await store.create_run(new_run(idempotency_key="k1", request_hash="h1"))
    again, created_again = await store.create_run(new_run(idempotency_key="k1", request_hash="h2"))
    leased, created_leased = await store.create_run(new_run(idempotency_key="k1"), lease=("w1", 30.0))
    assert (created, created_again, created_leased) == (True, False, False)
    assert (again.id, again.request_hash, again.state) == (first.id, "h1", QUEUED)
    assert (leased.id, leased.state) == (first.id, QUEUED)
    other_org, created_other = await store.create_run(new_run(org_id="org-b", idempotency_key="k1"))
    assert created_other is True and other_org.id != first.id
    assert [e.run_id for e in published if e.type == START] == [first.id, other_org.id]
    _, total = await store.list_runs(RunFilter(org_id=ORG), before_number=None, limit=10)
    assert total == 1


async def test_the_queued_cap_refuses_a_run_and_stores_nothing(store: Store) -> None:
    kept = [await store.create_run(new_run(idempotency_key=f"k{i}"), max_queued=2) for i in range(2)]
    assert [created for _, created in kept] == [True, True]
    with pytest.raises(QueueFull):
        await store.create_run(new_run(), max_queued=2)
    # A replay of a stored submission is answered all the same.
    replay, created = await store.create_run(new_run(idempotency_key="k0"), max_queued=2)
    assert (replay.id, created) == (kept[0][0].id, False)
    # Other orgs have their own count.
    other, _ = await store.create_run(new_run(org_id="org-b"), max_queued=2)
    assert other.state == QUEUED
    runs, total = await store.list_runs(RunFilter(org_id=ORG), before_number=None, limit=10)
    assert total == 2 and [r.id for r in runs] == [kept[1][0].id, kept[0][0].id]  # newest first


async def test_reads_page_runs_and_give_a_sessions_history(store: Store) -> None:
    runs = []
    for i in range(3):
        run = await running(store, session_id="s1", input={"message": f"m{i}"})
        messages = [{"role": "user", "text": f"m{i}"}]
        outcome = Outcome(COMPLETED, STOP, {}, result={"output": f"r{i}"}, messages=messages)
        assert await store.transition(run.id, outcome, states=[RUNNING]) is not None
        runs.append(run)
    await running(store, org_id="org-b", session_id="s1")  # another org's run of the same session id

    page, total = await store.list_runs(RunFilter(org_id=ORG), before_number=None, limit=2)
    assert ([r.id for r in page], total) == ([runs[2].id, runs[1].id], 3)
    rest, _ = await store.list_runs(RunFilter(org_id=ORG), before_number=page[-1].number, limit=2)
    assert [r.id for r in rest] == [runs[0].id]
    done, total_done = await store.list_runs(
        RunFilter(session_id="s1", states=(COMPLETED,)), before_number=None, limit=10
    )
    assert total_done == 3 and {r.org_id for r in done} == {ORG}

    history = await store.session_history("s1", ORG, runs[2].number, limit=5)
    assert [(p.input, p.result, p.messages) for p in history] == [
        ({"message": f"m{i}"}, {"output": f"r{i}"}, [{"role": "user", "text": f"m{i}"}]) for i in range(2)
    ]
    assert [p.input["message"] for p in await store.session_history("s1", ORG, runs[2].number, 1)] == ["m1"]
    assert await store.session_history("s1", "org-c", runs[2].number + 10) == []


async def test_delete_run_only_when_terminal(store: Store) -> None:
    sent = await delivery(store)  # a run whose webhook was delivered: it goes with the run
    [held] = await store.deliveries.claim_due("d", 10, 30.0)
    assert await store.deliveries.record(held, "d", attempt(200), None) is not None
    assert await store.delete_run(sent.run_id) is True
    assert await store.deliveries.for_run(sent.run_id) == []

    run = await running(store, webhook_url=HOOK)
    assert await store.delete_run(run.id) is False
    still = await store.get_run(run.id)
    assert still is not None and still.state == RUNNING
    assert await store.transition(run.id, CANCEL, states=[RUNNING]) is not None
    assert await store.delete_run(run.id) is True
    assert await store.get_run(run.id) is None
    assert await store.list_events(run.id, 0, 10) == []
    # A webhook still to be delivered goes out anyway (its body is stored with it).
    assert [d.state for d in await store.deliveries.for_run(run.id)] == [PENDING]
    assert await store.delete_run(run.id) is False


async def test_update_metadata_replaces_it_in_any_state_within_the_org(
    store: Store, published: list[EventRecord]
) -> None:
    run = await running(store, extras={"family": "C", "keep": 1})
    published.clear()
    updated = await store.update_metadata(run.id, {"task": {"prompt": "new"}}, ORG)
    assert updated is not None and updated.extras == {"task": {"prompt": "new"}}
    assert (updated.state, updated.last_seq, updated.lease_owner) == (RUNNING, 1, "w1")
    assert updated.updated_at >= run.updated_at and published == []  # no event
    assert await store.update_metadata(run.id, {"x": 1}, "org-b") is None  # another org's run
    assert await store.update_metadata("no-such-run", {"x": 1}) is None
    # A state change after it keeps the metadata; metadata of a finished run changes too.
    done = await store.transition(run.id, DONE, states=[RUNNING], owner="w1")
    assert done is not None and done.extras == {"task": {"prompt": "new"}}
    cleared = await store.update_metadata(run.id, {}, None)
    assert cleared is not None and cleared.extras is None and cleared.state == COMPLETED
    again = await store.get_run(str(run.number), ORG)
    assert again is not None and again.extras is None
    flt = RunFilter(org_id=ORG, metadata={"family": "C"})
    assert (await store.list_runs(flt, before_number=None, limit=10))[1] == 0


# ---- the queue and leases -------------------------------------------------------------------


async def test_claim_leases_the_oldest_runs_first(store: Store) -> None:
    runs = [await queued(store) for _ in range(3)]
    before = time.time()
    claimed, waiting = await store.claim("w1", 2, 30.0)
    after = time.time()
    assert [r.id for r in claimed] == [runs[0].id, runs[1].id]
    assert {(r.state, r.lease_owner) for r in claimed} == {(RUNNING, "w1")}
    assert all(before + 30.0 <= (r.lease_expires_at or 0) <= after + 30.0 for r in claimed)
    assert waiting is False  # a full batch: the caller claims again anyway
    more, waiting = await store.claim("w2", 5, 30.0)
    assert ([(r.id, r.lease_owner) for r in more], waiting) == ([(runs[2].id, "w2")], False)
    assert await store.claim("w3", 5, 30.0) == ([], False)


async def test_a_run_waits_for_the_earlier_runs_of_its_session(store: Store) -> None:
    first, second = await queued(store, session_id="s1"), await queued(store, session_id="s1")
    claimed, waiting = await store.claim("w1", 5, 30.0)
    assert ([r.id for r in claimed], waiting) == ([first.id], True)
    assert await store.claim("w1", 5, 30.0) == ([], True)
    assert await store.transition(first.id, DONE, states=[RUNNING], owner="w1") is not None
    claimed, waiting = await store.claim("w1", 5, 30.0)
    assert ([r.id for r in claimed], waiting) == ([second.id], False)


async def test_claim_keeps_each_org_under_its_running_cap(store: Store) -> None:
    a = [await queued(store) for _ in range(3)]
    b = await queued(store, org_id="org-b")
    claimed, waiting = await store.claim("w1", 10, 30.0, max_running=2)
    assert ([r.id for r in claimed], waiting) == ([a[0].id, a[1].id, b.id], True)
    assert await store.claim("w1", 10, 30.0, max_running=2) == ([], True)
    assert await store.transition(a[0].id, DONE, states=[RUNNING]) is not None
    claimed, waiting = await store.claim("w1", 10, 30.0, max_running=2)
    assert ([r.id for r in claimed], waiting) == ([a[2].id], False)

    # A submission of an org at its cap waits; another org's starts, as nothing of its own waits.
    capped, _ = await store.create_run(new_run(), lease=("w1", 30.0), max_running=2)
    assert capped.state == QUEUED
    free, _ = await store.create_run(new_run(org_id="org-c"), lease=("w1", 30.0), max_running=2)
    assert free.state == RUNNING


async def test_renew_extends_leases_and_reports_cancel_requests(store: Store) -> None:
    mine = [await running(store, "w1", 5.0), await running(store, "w1", 5.0)]
    abandoned = await running(store, "w1", 5.0)  # w1 holds its lease but no longer executes it
    theirs = await running(store, "w2", 5.0)
    ids = [r.id for r in mine]
    before = time.time()
    assert await store.renew("w1", 100.0, [*ids, theirs.id]) == []
    after = time.time()
    for run in mine:
        renewed = await store.get_run(run.id)
        assert renewed is not None and before + 100.0 <= (renewed.lease_expires_at or 0) <= after + 100.0
    for run in (abandoned, theirs):
        untouched = await store.get_run(run.id)
        assert untouched is not None and untouched.lease_expires_at == run.lease_expires_at

    assert await store.request_cancel(mine[1].id) is True
    assert await store.renew("w1", 100.0, ids) == [mine[1].id]
    assert await store.renew("w2", 100.0, [theirs.id]) == []
    assert await store.renew("w1", 100.0, []) == []
    waiting = await queued(store)
    assert await store.request_cancel(waiting.id) is False  # only a RUNNING run is asked


async def test_transition_applies_only_when_its_conditions_hold(
    store: Store, published: list[EventRecord]
) -> None:
    run = await running(store, "w1")
    now = time.time()
    assert await store.transition(run.id, DONE, states=[QUEUED, PAUSED]) is None  # wrong state
    assert await store.transition(run.id, DONE, states=[RUNNING], owner="w2") is None  # not the holder
    assert await store.transition(run.id, DONE, states=[RUNNING], seq=2) is None  # last_seq is 1
    assert await store.transition(run.id, DONE, states=[RUNNING], lease_before=now) is None  # lease live
    assert await store.transition(run.id, DONE, states=[RUNNING], deadline_before=now) is None
    assert await store.transition("no-such-run", DONE, states=[RUNNING]) is None
    unchanged = await store.get_run(run.id)
    assert unchanged is not None and (unchanged.state, unchanged.last_seq) == (RUNNING, 1)
    assert [e.seq for e in await store.list_events(run.id, 0, 10)] == [1]

    published.clear()
    ended = await store.transition(run.id, DONE, states=[RUNNING], owner="w1", seq=1)
    assert ended is not None
    assert (ended.state, ended.last_seq, ended.lease_owner, ended.lease_expires_at) == (
        COMPLETED,
        2,
        None,
        None,
    )
    assert ended.result == {"output": "done"} and ended.completed_at is not None
    events = await store.list_events(run.id, 0, 10)
    assert [(e.seq, e.type, e.data) for e in events] == [
        (1, START, events[0].data),
        (2, STOP, DONE.event_data),
    ]
    assert [(e.run_id, e.seq, e.type) for e in published] == [(run.id, 2, STOP)]
    assert published[0].run is not None and published[0].run.state == COMPLETED
    assert await store.transition(run.id, DONE, states=[RUNNING], owner="w1") is None  # applied once
    assert await store.deliveries.for_run(run.id) == []  # no webhook_url, no outbox row


async def test_a_run_with_a_webhook_url_writes_its_outbox_row_when_it_ends(store: Store) -> None:
    run = await running(store, webhook_url=HOOK)
    pending = {"tool_call_id": "call-1", "tool_name": "send", "arguments_json": "{}"}
    pause = Outcome(PAUSED, PAUSED_EVENT, pending, result={"output": "so far"}, pending_action=pending)
    assert await store.transition(run.id, pause, states=[RUNNING], owner="w1") is not None
    assert await store.deliveries.for_run(run.id) == []  # PAUSED is not an end

    ended = await store.transition(run.id, CANCEL, states=[PAUSED])
    assert ended is not None and ended.state == CANCELLED
    [row] = await store.deliveries.for_run(run.id)
    assert (row.run_id, row.url, row.state, row.attempt_count, row.attempts) == (run.id, HOOK, PENDING, 0, [])
    assert (row.lease_owner, row.lease_expires_at, row.delivered_at) == (None, None, None)
    assert row.payload == {"id": run.id, "state": CANCELLED, "output": "so far"}  # rendered from the end
    assert row.next_attempt_at == row.created_at == ended.completed_at  # written in the same transaction
    assert row.give_up_at == row.created_at + 600.0


async def test_append_is_accepted_from_the_lease_holder_only_and_only_contiguous(
    store: Store, published: list[EventRecord]
) -> None:
    run = await running(store, "w1")
    assert await stored(store, run.id, "w2", [delta(run.id, 2)]) is False  # not the lease holder
    assert await stored(store, run.id, "w1", [delta(run.id, 3)]) is False  # a gap after seq 1
    assert await stored(store, run.id, "w1", [delta(run.id, 2), delta(run.id, 4)]) is False  # a gap inside
    assert await stored(store, run.id, "w1", [delta(run.id, 1)]) is False  # seq 1 is taken
    assert [e.seq for e in await store.list_events(run.id, 0, 10)] == [1]

    published.clear()
    assert await stored(store, run.id, "w1", [delta(run.id, 2, "a"), delta(run.id, 3, "b")]) is True
    assert await stored(store, run.id, "w1", [delta(run.id, 4, "c")]) is True
    events = await store.list_events(run.id, 1, 10)
    assert [(e.seq, e.data["text"]) for e in events] == [(2, "a"), (3, "b"), (4, "c")]
    assert [e.seq for e in published] == [2, 3, 4]
    current = await store.get_run(run.id)
    assert current is not None and current.last_seq == 4

    assert await store.transition(run.id, DONE, states=[RUNNING], owner="w1", seq=4) is not None
    assert await stored(store, run.id, "w1", [delta(run.id, 6)]) is False  # the run is no longer RUNNING


async def test_list_events_pages_in_seq_order(store: Store) -> None:
    run = await running(store, "w1")
    assert await stored(store, run.id, "w1", [delta(run.id, seq, str(seq)) for seq in range(2, 8)]) is True
    other = await running(store, "w1")
    assert [[e.seq for e in await store.list_events(run.id, after, 3)] for after in (0, 3, 6, 7)] == [
        [1, 2, 3],
        [4, 5, 6],
        [7],
        [],
    ]
    assert [(e.run_id, e.seq) for e in await store.list_events(other.id, 0, 10)] == [(other.id, 1)]


async def test_decide_applies_once(store: Store) -> None:
    run = await running(store, "w1")
    pending = {"tool_call_id": "call-1", "tool_name": "send", "arguments_json": "{}"}
    pause = Outcome(PAUSED, PAUSED_EVENT, pending, pending_action=pending, agent_state={"step": 1})
    paused = await store.transition(run.id, pause, states=[RUNNING], owner="w1")
    assert paused is not None and (paused.state, paused.pending_action) == (PAUSED, pending)

    decision = {"tool_call_id": "call-1", "decision": "APPROVE"}
    assert await store.decide(run.id, "call-2", decision) is None  # not the pending call
    decided = await store.decide(run.id, "call-1", decision)
    assert decided is not None and (decided.state, decided.decisions, decided.resume) == (
        QUEUED,
        [decision],
        decision,
    )
    assert await store.decide(run.id, "call-1", decision) is None  # applied already
    current = await store.get_run(run.id)
    assert current is not None and current.decisions == [decision]
    [resumed], _ = await store.claim("w2", 1, 30.0)
    assert (resumed.id, resumed.resume, resumed.agent_state) == (run.id, decision, {"step": 1})


async def test_overdue_finds_expired_leases_and_passed_deadlines(store: Store) -> None:
    held = await running(store, "w1", lease_s=60.0)
    expiring = await running(store, "w1", lease_s=0.3)
    finished = await running(store, "w1", timeout_s=0.0)
    assert await store.transition(finished.id, DONE, states=[RUNNING]) is not None
    late = await queued(store, timeout_s=0.0)  # its deadline is its submission time

    async def due() -> set[str]:
        return {r.id for r in await store.overdue(time.time())}

    async def expired() -> bool:
        return expiring.id in await due()

    await until(expired, what="the short lease to expire")
    assert await due() == {expiring.id, late.id}  # not the live lease, not the terminal run
    later = (held.lease_expires_at or 0) + 1.0
    assert {r.id for r in await store.overdue(later)} == {held.id, expiring.id, late.id}
    assert len(await store.overdue(later, limit=2)) == 2

    # What the sweeper does with them: each change applies only while its condition still holds.
    now = time.time()
    assert await store.transition(held.id, RELEASE, states=[RUNNING], lease_before=now) is None
    requeued = await store.transition(expiring.id, RELEASE, states=[RUNNING], lease_before=now)
    assert requeued is not None and (requeued.state, requeued.attempt) == (QUEUED, 2)
    timed_out = Outcome(FAILED, "ERROR", {}, error_reason="DEADLINE_EXCEEDED", error_message="late")
    failed = await store.transition(late.id, timed_out, states=[QUEUED, PAUSED], deadline_before=now)
    assert failed is not None and (failed.state, failed.error_reason) == (FAILED, "DEADLINE_EXCEEDED")
    assert await due() == set()


async def test_listen_hears_other_processes_where_the_backend_can(database_url: str, store: Store) -> None:
    woken: list[str] = []
    queue_wakes: list[int] = []
    cancels: list[str] = []
    if not database_url.startswith("postgresql"):
        # SQLite has no notifications: listening is a no-op and other processes are found by polling.
        async with store.listen(woken.append, lambda: queue_wakes.append(1), cancels.append):
            await queued(store)
        assert (woken, queue_wakes, cancels) == ([], [], [])
        return
    async with (
        open_store(database_url, lambda _: None) as other,
        other.listen(woken.append, lambda: queue_wakes.append(1), cancels.append),
    ):
        await until(lambda: len(queue_wakes) > 0, what="the listener to start")  # it wakes once then
        queue_wakes.clear()
        run = await queued(store)
        await until(lambda: run.id in woken and len(queue_wakes) > 0, what="the other store's commit")
        # A store's own commits are not announced back to it: its run's news, sent before the
        # other store's next commit, never comes.
        own = await queued(other)
        marker = await queued(store)
        await until(lambda: marker.id in woken, what="the other store's next commit")
        assert own.id not in woken
        # A cancel asked through one store reaches the store whose process executes the run.
        [executing], _ = await other.claim("w-other", 1, 60.0)
        assert await store.request_cancel(executing.id) is True
        await until(lambda: cancels == [executing.id], what="the cancel to be announced")


# ---- writes committed together ------------------------------------------------------------------
# Writes queued together share one group commit, and each applies as if it were alone, in queue
# order (PostgreSQL applies each kind of write for many runs in one statement; SQLite one by one).


@pytest.fixture
def commits() -> list[list[EventRecord]]:
    return []


@pytest.fixture
async def grouped(database_url: str, commits: list[list[EventRecord]]) -> AsyncIterator[Store]:
    """A store whose every commit is recorded (the events it published, one list per commit)."""
    async with open_store(database_url, commits.append, OUTBOX) as opened:
        yield opened


async def together(commits: list[list[EventRecord]], *calls: Coroutine[Any, Any, Any]) -> list[Any]:
    """Queue store calls in this order, all before the writer looks at its queue again, and return
    their results (an append's: whether it was stored). They are committed in one transaction."""
    before = len(commits)
    # Each task runs up to its first wait, which comes after it queued its write: all are queued
    # before the writer, woken by the first, takes what is queued.
    tasks = [asyncio.create_task(call) for call in calls]
    results = [await r if isinstance(r, asyncio.Future) else r for r in await asyncio.gather(*tasks)]
    assert len(commits) == before + 1, "the writes were not committed together"
    return results


async def test_appends_of_several_runs_in_one_commit_each_apply_as_if_alone(
    grouped: Store, commits: list[list[EventRecord]]
) -> None:
    a, b = await running(grouped, "w1"), await running(grouped, "w1")
    c = await running(grouped, "w2")
    results = await together(
        commits,
        grouped.append(a.id, "w1", [delta(a.id, 2)]),  # stored
        grouped.append(b.id, "w1", [delta(b.id, 3)]),  # a gap after seq 1
        grouped.append(c.id, "w1", [delta(c.id, 2)]),  # not the lease holder
        grouped.append(a.id, "w1", [delta(a.id, 3), delta(a.id, 5)]),  # a gap inside
        grouped.append(a.id, "w1", [delta(a.id, 3), delta(a.id, 4)]),  # follows seq 2
        grouped.append(b.id, "w1", [delta(b.id, 2)]),  # follows seq 1: the earlier gap stored nothing
        grouped.append(c.id, "w2", [delta(c.id, 2, "mine")]),  # the lease holder's
        grouped.append(c.id, "w2", [delta(c.id, 4)]),  # a gap after seq 2
        grouped.append(a.id, "w2", [delta(a.id, 5)]),  # right seq, not the lease holder
        grouped.append(a.id, "w1", [delta(a.id, 5)]),
    )
    assert results == [True, False, False, False, True, True, True, False, False, True]
    assert [e.seq for e in await grouped.list_events(a.id, 0, 10)] == [1, 2, 3, 4, 5]
    assert [e.seq for e in await grouped.list_events(b.id, 0, 10)] == [1, 2]
    assert [(e.seq, e.data["text"]) for e in await grouped.list_events(c.id, 1, 10)] == [(2, "mine")]
    assert [(e.run_id, e.seq) for e in commits[-1]] == [
        (a.id, 2),
        (a.id, 3),
        (a.id, 4),
        (b.id, 2),
        (c.id, 2),
        (a.id, 5),
    ]
    for run, last in ((a, 5), (b, 2), (c, 2)):
        current = await grouped.get_run(run.id)
        assert current is not None and current.last_seq == last


async def test_a_lease_lost_between_appends_of_one_commit(
    grouped: Store, commits: list[list[EventRecord]]
) -> None:
    run = await running(grouped, "w1")
    later = time.time() + 3600.0
    released, w1_late, (claimed, _), w2_first, ended = (
        await together(
            commits,
            grouped.append(run.id, "w1", [delta(run.id, 2)]),  # stored
            grouped.transition(run.id, RELEASE, states=[RUNNING], lease_before=later),  # the sweeper: seq 3
            grouped.append(run.id, "w1", [delta(run.id, 3)]),  # the old holder, too late
            grouped.claim("w2", 1, 60.0),
            grouped.append(run.id, "w2", [delta(run.id, 4)]),  # the new holder
            grouped.transition(run.id, DONE, states=[RUNNING], owner="w2", seq=4),
        )
    )[1:]
    assert released is not None and (released.state, released.attempt, released.last_seq) == (QUEUED, 2, 3)
    assert w1_late is False
    assert [(r.id, r.lease_owner) for r in claimed] == [(run.id, "w2")]
    assert w2_first is True
    assert ended is not None and (ended.state, ended.last_seq) == (COMPLETED, 5)
    events = await grouped.list_events(run.id, 0, 10)
    assert [(e.seq, e.type) for e in events] == [
        (1, START),
        (2, CONTENT_DELTA),
        (3, STATUS),
        (4, CONTENT_DELTA),
        (5, STOP),
    ]
    assert [e.seq for e in commits[-1]] == [2, 3, 4, 5]
    assert [e.run.state if e.run else None for e in commits[-1]] == [None, QUEUED, None, COMPLETED]


async def test_changes_of_several_runs_in_one_commit(
    grouped: Store, commits: list[list[EventRecord]]
) -> None:
    hooked = await running(grouped, "w1", webhook_url=HOOK)
    plain, other = await running(grouped, "w1"), await running(grouped, "w2")
    first, again, refused, cancelled = (
        await together(
            commits,
            grouped.append(hooked.id, "w1", [delta(hooked.id, 2)]),
            grouped.transition(hooked.id, DONE, states=[RUNNING], owner="w1", seq=2),  # sees the append
            grouped.transition(hooked.id, CANCEL, states=[RUNNING]),  # it ended just before
            grouped.transition(other.id, DONE, states=[RUNNING], owner="w1"),  # not the lease holder
            grouped.transition(plain.id, CANCEL, states=[RUNNING]),
        )
    )[1:]
    assert first is not None and (first.state, first.last_seq, first.result) == (
        COMPLETED,
        3,
        {"output": "done"},
    )
    assert again is None and refused is None
    assert cancelled is not None and (cancelled.state, cancelled.error_reason) == (CANCELLED, "CANCELLED")
    [row] = await grouped.deliveries.for_run(hooked.id)
    assert row.payload == {"id": hooked.id, "state": COMPLETED, "output": "done"}
    assert await grouped.deliveries.for_run(plain.id) == []  # no webhook_url
    assert [(e.run_id, e.seq, e.type) for e in commits[-1]] == [
        (hooked.id, 2, CONTENT_DELTA),
        (hooked.id, 3, STOP),
        (plain.id, 2, "ERROR"),
    ]
    still = await grouped.get_run(other.id)
    assert still is not None and (still.state, still.last_seq) == (RUNNING, 1)


async def test_runs_submitted_together_are_decided_as_if_one_by_one(
    grouped: Store, commits: list[list[EventRecord]]
) -> None:
    earlier, _ = await grouped.create_run(new_run(idempotency_key="old"))
    assert await grouped.transition(earlier.id, DONE, states=[QUEUED]) is not None  # the queue is empty
    lease = ("w1", 60.0)
    submitted = await together(
        commits,
        grouped.create_run(new_run(session_id="s1"), lease=lease),  # starts at once
        grouped.create_run(new_run(session_id="s1"), lease=lease),  # its session is busy: queued
        grouped.create_run(new_run(session_id="s2"), lease=lease),  # a run is queued now: queued too
        grouped.create_run(new_run(idempotency_key="k1", request_hash="first")),
        grouped.create_run(new_run(idempotency_key="k1", request_hash="second")),  # the same key
        grouped.create_run(new_run(idempotency_key="old")),  # a key stored before
        grouped.create_run(new_run(org_id="org-b", idempotency_key="k1")),  # another org's key
    )
    runs = [run for run, _ in submitted]
    assert [created for _, created in submitted] == [True, True, True, True, False, False, True]
    assert [r.state for r in runs] == [RUNNING, QUEUED, QUEUED, QUEUED, QUEUED, COMPLETED, QUEUED]
    assert (runs[0].lease_owner, runs[1].lease_owner) == ("w1", None)
    assert (runs[4].id, runs[4].request_hash) == (runs[3].id, "first")
    assert runs[5].id == earlier.id
    created = [runs[i] for i in (0, 1, 2, 3, 6)]
    assert [r.number for r in created] == sorted(r.number for r in created)  # in submission order
    assert len({r.number for r in created}) == 5
    assert [(e.run_id, e.seq, e.type) for e in commits[-1]] == [(r.id, 1, START) for r in created]
    for run in created:
        assert [e.type for e in await grouped.list_events(run.id, 0, 10)] == [START]
    claimed, _ = await grouped.claim("w2", 10, 60.0)
    # The run of s1 waits for the first; the others go in submission order.
    assert [r.id for r in claimed] == [runs[2].id, runs[3].id, runs[6].id]


async def test_a_write_that_fails_does_not_take_the_others_of_its_commit_down(
    grouped: Store, commits: list[list[EventRecord]]
) -> None:
    """The commit fails as a whole (a second run with a taken id), then each write is tried in a
    transaction of its own: only the bad one fails."""
    run = await running(grouped, "w1")
    taken = new_run(id=run.id)
    before = len(commits)
    tasks = [
        asyncio.create_task(call)
        for call in (
            grouped.append(run.id, "w1", [delta(run.id, 2)]),
            grouped.create_run(new_run()),
            grouped.create_run(taken),
            grouped.transition(run.id, DONE, states=[RUNNING], owner="w1", seq=2),
        )
    ]
    appended, created, duplicate, ended = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(duplicate, Exception)
    assert isinstance(appended, asyncio.Future) and await appended is True
    assert isinstance(created, tuple) and created[0].state == QUEUED
    assert isinstance(ended, RunRecord) and (ended.state, ended.last_seq) == (COMPLETED, 3)
    assert [(e.run_id, e.seq) for e in commits[before]] == [(run.id, 2), (created[0].id, 1), (run.id, 3)]
    assert [e.type for e in await grouped.list_events(run.id, 0, 10)] == [START, CONTENT_DELTA, STOP]
    assert [(e.run_id, e.type) for e in await grouped.list_events(created[0].id, 0, 10)] == [
        (created[0].id, START)
    ]


# ---- the webhook outbox -------------------------------------------------------------------------


async def test_claim_due_leases_a_row_to_one_owner(store: Store) -> None:
    row = await delivery(store)
    before = time.time()
    first, second = await asyncio.gather(
        store.deliveries.claim_due("a", 10, 30.0), store.deliveries.claim_due("b", 10, 30.0)
    )
    after = time.time()
    claimed = first + second
    assert [d.id for d in claimed] == [row.id]
    assert claimed[0].lease_owner == ("a" if first else "b")
    assert before + 30.0 <= (claimed[0].lease_expires_at or 0) <= after + 30.0
    assert await store.deliveries.claim_due("c", 10, 30.0) == []


async def test_claim_due_takes_at_most_limit_rows_earliest_first(store: Store) -> None:
    rows = [await delivery(store) for _ in range(3)]
    claimed = await store.deliveries.claim_due("a", 2, 30.0)
    assert [d.id for d in claimed] == [rows[0].id, rows[1].id]
    assert [d.id for d in await store.deliveries.claim_due("b", 2, 30.0)] == [rows[2].id]


async def test_two_stores_never_claim_the_same_row(durable_url: str) -> None:
    async with (
        open_store(durable_url, lambda _: None, OUTBOX) as store,
        open_store(durable_url, lambda _: None) as other,
    ):
        await _never_the_same_row(store, other)


async def _never_the_same_row(store: Store, other: Store) -> None:
    rows = {(await delivery(store)).id for _ in range(6)}
    claims = await asyncio.gather(
        *(
            s.deliveries.claim_due(f"{name}{i}", 2, 30.0)
            for i in range(4)
            for name, s in (("a", store), ("b", other))
        )
    )
    ids = [d.id for batch in claims for d in batch]
    assert sorted(ids) == sorted(rows)  # each row once, to one owner


async def test_an_expired_lease_can_be_claimed_by_another_owner(store: Store) -> None:
    row = await delivery(store)
    [held] = await store.deliveries.claim_due("a", 10, 1.0)
    assert await store.deliveries.claim_due("b", 10, 30.0) == []
    taken: list[DeliveryRecord] = []

    async def b_claims() -> bool:
        taken.extend(await store.deliveries.claim_due("b", 10, 30.0))
        return bool(taken)

    await until(b_claims, what="a's lease to expire")
    assert [(d.id, d.lease_owner) for d in taken] == [(row.id, "b")]
    assert await store.deliveries.record(held, "a", attempt(200), None) is None  # a lost its lease


async def test_record_is_accepted_from_the_lease_holder_only(store: Store) -> None:
    row = await delivery(store)
    [held] = await store.deliveries.claim_due("a", 10, 30.0)
    refused, retry_at = attempt(500), time.time() + 60.0
    assert await store.deliveries.record(held, "b", refused, retry_at) is None
    failed = await store.deliveries.record(held, "a", refused, retry_at)
    assert failed is not None
    assert (failed.state, failed.attempt_count, failed.attempts, failed.next_attempt_at) == (
        PENDING,
        1,
        [refused],
        retry_at,
    )
    assert (failed.lease_owner, failed.lease_expires_at, failed.delivered_at) == (None, None, None)
    assert await store.deliveries.record(held, "a", refused, retry_at) is None  # the record ended the lease
    run = await store.get_run(row.run_id)
    assert run is not None and run.webhook_result == {
        "delivery_id": row.id,
        "state": PENDING,
        "status_code": 500,
        "message": "receiver answered HTTP 500",
    }
    assert await store.deliveries.claim_due("a", 10, 30.0) == []  # not due before retry_at

    assert await store.deliveries.retry(row.run_id, row.id, 600.0) is not None
    [again] = await store.deliveries.claim_due("a", 10, 30.0)
    ok = attempt(204)
    sent = await store.deliveries.record(again, "a", ok, None)
    assert sent is not None
    assert (sent.state, sent.attempt_count, sent.attempts, sent.delivered_at) == (
        DELIVERED,
        1,
        [refused, ok],
        ok["at"],
    )
    run = await store.get_run(row.run_id)
    assert run is not None and run.webhook_result == {
        "delivery_id": row.id,
        "state": DELIVERED,
        "status_code": 204,
        "message": "delivered",
    }
    assert await store.deliveries.claim_due("a", 10, 30.0) == []


async def test_retry_makes_a_failed_delivery_due_again(store: Store) -> None:
    row = await delivery(store)
    [held] = await store.deliveries.claim_due("a", 10, 30.0)
    refused = attempt(503)
    failed = await store.deliveries.record(held, "a", refused, None)
    assert failed is not None and (failed.state, failed.attempt_count) == (FAILED, 1)
    assert await store.deliveries.claim_due("a", 10, 30.0) == []  # FAILED is not sent again by itself

    assert await store.deliveries.retry(row.run_id, "msg_nope", 600.0) is None
    assert await store.deliveries.retry("no-such-run", row.id, 600.0) is None
    before = time.time()
    again = await store.deliveries.retry(row.run_id, row.id, 600.0)
    after = time.time()
    assert again is not None
    assert (again.state, again.attempt_count, again.attempts, again.lease_owner) == (
        PENDING,
        0,
        [refused],
        None,
    )
    assert before <= again.next_attempt_at <= after and again.give_up_at == again.next_attempt_at + 600.0
    [claimed] = await store.deliveries.claim_due("b", 10, 30.0)
    assert (claimed.id, claimed.lease_owner) == (row.id, "b")


async def test_release_gives_up_an_owners_leases(store: Store) -> None:
    rows = {(await delivery(store)).id, (await delivery(store)).id}
    assert {d.id for d in await store.deliveries.claim_due("a", 10, 30.0)} == rows
    await store.deliveries.release("b")  # holds nothing: changes nothing
    assert await store.deliveries.claim_due("c", 10, 30.0) == []
    await store.deliveries.release("a")
    assert {(d.id, d.lease_owner) for d in await store.deliveries.claim_due("c", 10, 30.0)} == {
        (row, "c") for row in rows
    }


async def test_next_due_waits_for_a_live_lease(store: Store) -> None:
    assert await store.deliveries.next_due() is None
    row = await delivery(store)
    assert await store.deliveries.next_due() == row.next_attempt_at
    [held] = await store.deliveries.claim_due("a", 10, 30.0)
    assert await store.deliveries.next_due() == held.lease_expires_at  # not now: it is being sent
    retry_at = time.time() + 120.0
    assert await store.deliveries.record(held, "a", attempt(500), retry_at) is not None
    assert await store.deliveries.next_due() == retry_at
    again = await store.deliveries.retry(row.run_id, row.id, 600.0)
    assert again is not None and await store.deliveries.next_due() == again.next_attempt_at
    [held] = await store.deliveries.claim_due("a", 10, 30.0)
    assert await store.deliveries.record(held, "a", attempt(200), None) is not None
    assert await store.deliveries.next_due() is None  # nothing pending


# ---- closing ------------------------------------------------------------------------------


async def test_closing_commits_what_is_queued(durable_url: str) -> None:
    """Writes queued when the store closes are committed before it closes, not dropped."""
    async with open_store(durable_url, lambda _: None) as store:
        submissions = [asyncio.create_task(store.create_run(new_run())) for _ in range(300)]
        await asyncio.sleep(0)  # every submission is queued; none need be committed yet
    async with asyncio.timeout(30):  # an abandoned write would leave its caller waiting forever
        done = await asyncio.gather(*submissions, return_exceptions=True)
    assert [d for d in done if isinstance(d, BaseException)] == []
    async with open_store(durable_url, lambda _: None) as reopened:
        _, total = await reopened.list_runs(RunFilter(org_id=ORG), before_number=None, limit=1)
    assert total == 300


async def test_list_runs_counts_up_to_a_bound(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """The total is bounded work: past the bound it reads as the bound, however many runs match."""
    monkeypatch.setattr(reads, "MAX_COUNTED_RUNS", 3)
    for _ in range(5):
        await queued(store)
    runs, total = await store.list_runs(RunFilter(org_id=ORG), before_number=None, limit=10)
    assert (len(runs), total) == (5, 3)


async def test_a_deleted_runs_number_is_never_given_again(store: Store) -> None:
    first = await running(store, "w1")
    newest = await queued(store)
    assert await store.transition(newest.id, DONE, states=[QUEUED]) is not None
    assert await store.delete_run(newest.id) is True
    after = await queued(store)
    assert after.number > newest.number > first.number
