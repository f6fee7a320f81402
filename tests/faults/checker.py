"""The checker: reads the stored history back through the API (ListRuns, ListRunEvents) once the
faults have stopped, and lists every broken rule with its run id. The rules are pure functions of
what was read and what the streams recorded, so the verdict on a given history is deterministic."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from typing import Any

from agentrun.v1 import run_pb2
from agentrun.v1 import run_service_pb2 as pb

from tests.faults.report import Figures, Violation
from tests.faults.traffic import FINAL, Observed

S = run_pb2
TERMINAL = frozenset({S.RUN_STATE_COMPLETED, S.RUN_STATE_FAILED, S.RUN_STATE_CANCELLED})
AT_WORK = [S.RUN_STATE_QUEUED, S.RUN_STATE_RUNNING, S.RUN_STATE_PAUSED]
PAGE = 1000
READ_TIMEOUT_S = 30.0


async def settle(stub: Any, timeout: float) -> float:
    """Wait (at most `timeout` s) until no stored run is queued, running or paused: the runs of
    killed servers end once their lease expires and a sweep sees it. The time it took."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    while True:
        reply = await stub.ListRuns(pb.ListRunsRequest(states=AT_WORK, page_size=1), timeout=READ_TIMEOUT_S)
        if not reply.runs or loop.time() - started >= timeout:
            return loop.time() - started
        await asyncio.sleep(0.1)


async def stored_runs(stub: Any) -> list[run_pb2.Run]:
    runs: list[run_pb2.Run] = []
    token = ""
    while True:
        request = pb.ListRunsRequest(page_size=PAGE, page_token=token)
        reply = await stub.ListRuns(request, timeout=READ_TIMEOUT_S)
        runs.extend(reply.runs)
        token = reply.next_page_token
        if not token:
            return runs


async def stored_events(stub: Any, run_id: str) -> list[run_pb2.RunEvent]:
    events: list[run_pb2.RunEvent] = []
    token = ""
    while True:
        request = pb.ListRunEventsRequest(run_id=run_id, page_size=PAGE, page_token=token)
        reply = await stub.ListRunEvents(request, timeout=READ_TIMEOUT_S)
        events.extend(reply.events)
        token = reply.next_page_token
        if not token:
            return events


async def check(
    stub: Any, scenario: str, acknowledged: Iterable[str], observed: Iterable[Observed], figures: Figures
) -> list[Violation]:
    """Every rule over every stored run, every acknowledged run and every followed stream."""
    runs = {run.id: run for run in await stored_runs(stub)}
    histories = await _histories(stub, list(runs))
    figures.stored_runs = len(runs)
    figures.events_checked = sum(len(events) for events in histories.values())
    for run in runs.values():
        figures.outcomes[_outcome(run)] += 1
    lost = [run_id for run_id in acknowledged if run_id not in runs]
    found = [(run_id, "missing", "acknowledged but not stored") for run_id in lost]
    for run_id, run in runs.items():
        found += [(run_id, rule, detail) for rule, detail in run_rules(run, histories[run_id])]
    for seen in observed:
        stored = histories.get(seen.run_id)
        found += [(seen.run_id, rule, detail) for rule, detail in stream_rules(seen, stored)]
    return [Violation(scenario, run_id, rule, detail) for run_id, rule, detail in sorted(found)]


async def _histories(stub: Any, run_ids: list[str], at_once: int = 8) -> dict[str, list[run_pb2.RunEvent]]:
    gate = asyncio.Semaphore(at_once)

    async def one(run_id: str) -> list[run_pb2.RunEvent]:
        async with gate:
            return await stored_events(stub, run_id)

    return dict(zip(run_ids, await asyncio.gather(*(one(r) for r in run_ids)), strict=True))


def _outcome(run: run_pb2.Run) -> str:
    state = S.RunState.Name(run.state).removeprefix("RUN_STATE_")
    return f"{state}/{run.error.reason}" if run.error.reason else state


def _name(event_type: int) -> str:
    return S.EventType.Name(event_type).removeprefix("EVENT_TYPE_")


def run_rules(run: run_pb2.Run, events: Sequence[run_pb2.RunEvent]) -> list[tuple[str, str]]:
    """The stored history of one run: terminal, seq gap-free from 1 and matching last_seq, START
    first, exactly one STOP/ERROR and it is last, and the final event agrees with the run's state."""
    found: list[tuple[str, str]] = []
    seqs = [e.seq for e in events]
    if run.state not in TERMINAL:
        state = f"{_outcome(run)} after the lease and a sweep (last seq {run.last_seq})"
        found.append(("not terminal", state))
    if seqs != list(range(1, len(seqs) + 1)):
        found.append(("seq not gap-free from 1", _describe_gaps(seqs)))
    if run.last_seq != (seqs[-1] if seqs else 0):
        last = seqs[-1] if seqs else "none"
        found.append(("last_seq disagrees", f"run.last_seq {run.last_seq}, last stored seq {last}"))
    if not events or events[0].type != S.EVENT_TYPE_START:
        found.append(("START not first", f"first event {_name(events[0].type) if events else 'none'}"))
    finals = [e.seq for e in events if e.type in FINAL]
    if run.state in TERMINAL and (len(finals) != 1 or finals[0] != seqs[-1]):
        found.append(("not exactly one final event, last", f"STOP/ERROR at seqs {finals} of {len(seqs)}"))
    elif run.state not in TERMINAL and finals:
        found.append(("final event on a live run", f"STOP/ERROR at seqs {finals}, state {_outcome(run)}"))
    if run.state in TERMINAL and events:
        found += [("state/event disagree", detail) for detail in _disagreement(run, events[-1])]
    return found


def _disagreement(run: run_pb2.Run, last: run_pb2.RunEvent) -> list[str]:
    """The final event must say what the run's state says."""
    state = _outcome(run)
    if last.type == S.EVENT_TYPE_STOP:
        if run.state != S.RUN_STATE_COMPLETED and run.state != S.RUN_STATE_CANCELLED:
            return [f"state {state}, last event STOP"]
        if last.stop.state != run.state:
            return [f"state {state}, STOP says {S.RunState.Name(last.stop.state)}"]
    elif last.type == S.EVENT_TYPE_ERROR:
        if run.state == S.RUN_STATE_COMPLETED:
            return [f"state {state}, last event ERROR {last.error.reason}"]
        if last.error.reason != run.error.reason:
            return [f"state {state}, ERROR says {last.error.reason!r}"]
    else:
        return [f"state {state}, last event {_name(last.type)}"]
    return []


def _describe_gaps(seqs: Sequence[int]) -> str:
    expected = 1
    for seq in seqs:
        if seq != expected:
            kind = "duplicate" if seq < expected else "missing"
            return f"{kind} at seq {expected} (stored {seq}); {len(seqs)} events, seqs {_short(seqs)}"
        expected += 1
    return f"seqs {_short(seqs)}"


def _short(seqs: Sequence[int]) -> str:
    return str(list(seqs)) if len(seqs) <= 12 else f"{list(seqs[:6])}...{list(seqs[-6:])}"


def stream_rules(seen: Observed, stored: Sequence[run_pb2.RunEvent] | None) -> list[tuple[str, str]]:
    """What a followed run's streams delivered: no duplicate and no missing event over all its
    re-attachments, up to the final event, and exactly the stored events."""
    found = [("stream duplicate/missing event", problem) for problem in seen.problems]
    if seen.gave_up:
        found.append(("stream did not reach the end", seen.gave_up))
    if stored is None:
        return found  # an acknowledged run: reported as missing
    if seen.final:
        stored_log = [(e.seq, e.type) for e in stored]
        streamed = list(zip(seen.seqs, seen.types, strict=True))
        if streamed != stored_log:
            where = _first_difference(streamed, stored_log)
            counts = f"streamed {len(streamed)} in {seen.attaches} attachments, stored {len(stored_log)}"
            found.append(("streamed events differ from the stored ones", f"{counts}: {where}"))
    return found


def _first_difference(a: Sequence[tuple[int, int]], b: Sequence[tuple[int, int]]) -> str:
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            streamed, stored = f"seq {x[0]} {_name(x[1])}", f"seq {y[0]} {_name(y[1])}"
            return f"first difference at {i}: streamed {streamed}, stored {stored}"
    return f"one is a prefix of the other, from {min(len(a), len(b))}"
