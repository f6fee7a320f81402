"""The fault harness (tests/faults) in its short form: servers killed with SIGKILL and restarted on
SQLite and PostgreSQL (one and two replicas), PostgreSQL restarted and frozen, streams cut and
re-attached, under a stream of submissions; no violation of the stored history or of any stream.
A fixed seed, so a failure replays with `python -m tests.faults --quick --seed 1406`."""

from __future__ import annotations

from pathlib import Path

import pytest
from agentrun.v1 import run_pb2

from tests.faults.checker import run_rules, stream_rules
from tests.faults.harness import Config, run
from tests.faults.traffic import Observed

SEED = 1406


# About 30 s on 2 cores (the harness bounds its faults and settling); a hang fails here.
@pytest.mark.timeout(180)
async def test_no_violation_under_faults(tmp_path: Path) -> None:
    report = await run(Config.quick_run(SEED, work=tmp_path))
    summary = report.render()
    assert not report.errors, summary
    assert not report.violations, summary
    # the faults did happen, on every scenario
    for figures in report.scenarios:
        assert figures.acknowledged > 0 and figures.kills > 0 and figures.stream_cuts > 0, summary
        assert figures.quiet_probes == figures.replicas**2, summary
    postgres = [f for f in report.scenarios if f.scenario.startswith("pg")]
    assert postgres and all(f.db_restarts > 0 and f.db_pauses > 0 for f in postgres), summary


# The checker's rules on made-up histories: each broken rule is named, a sound history passes.

S = run_pb2


def _event(seq: int, kind: run_pb2.EventType, run_id: str = "r1") -> run_pb2.RunEvent:
    event = run_pb2.RunEvent(run_id=run_id, seq=seq, type=kind)
    if kind == S.EVENT_TYPE_STOP:
        event.stop.state = S.RUN_STATE_COMPLETED
    if kind == S.EVENT_TYPE_ERROR:
        event.error.reason = "WORKER_LOST"
    return event


def _history(*kinds: run_pb2.EventType) -> list[run_pb2.RunEvent]:
    return [_event(seq, kind) for seq, kind in enumerate(kinds, 1)]


START, DELTA = S.EVENT_TYPE_START, S.EVENT_TYPE_CONTENT_DELTA
STOP, ERROR = S.EVENT_TYPE_STOP, S.EVENT_TYPE_ERROR


def _run(state: run_pb2.RunState, last_seq: int, reason: str = "") -> run_pb2.Run:
    return run_pb2.Run(id="r1", state=state, last_seq=last_seq, error=run_pb2.RunError(reason=reason))


def _rules(run: run_pb2.Run, events: list[run_pb2.RunEvent]) -> set[str]:
    return {rule for rule, _ in run_rules(run, events)}


def test_a_sound_history_passes() -> None:
    assert _rules(_run(S.RUN_STATE_COMPLETED, 3), _history(START, DELTA, STOP)) == set()
    assert _rules(_run(S.RUN_STATE_FAILED, 2, "WORKER_LOST"), _history(START, ERROR)) == set()


def test_each_broken_rule_is_named() -> None:
    gap = [_event(1, START), _event(3, STOP)]
    assert _rules(_run(S.RUN_STATE_COMPLETED, 3), gap) == {"seq not gap-free from 1"}
    two_ends = _history(START, STOP, STOP)
    assert _rules(_run(S.RUN_STATE_COMPLETED, 3), two_ends) == {"not exactly one final event, last"}
    assert _rules(_run(S.RUN_STATE_COMPLETED, 2), _history(START, ERROR)) == {"state/event disagree"}
    assert _rules(_run(S.RUN_STATE_RUNNING, 2), _history(START, DELTA)) == {"not terminal"}
    assert _rules(_run(S.RUN_STATE_COMPLETED, 5), _history(START, STOP)) == {"last_seq disagrees"}


def test_a_stream_that_repeats_or_skips_is_caught() -> None:
    seen = Observed("r1")
    seen.attach()
    for seq, kind in ((1, START), (2, DELTA), (2, DELTA), (4, STOP)):
        seen.add(_event(seq, kind))
    rules = [rule for rule, _ in stream_rules(seen, _history(START, DELTA, DELTA, STOP))]
    assert rules.count("stream duplicate/missing event") == 2
    assert "streamed events differ from the stored ones" in rules
