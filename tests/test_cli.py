"""The client commands of `agentrun` as a user runs them: each a subprocess against a real server
process, checked by its output (ProtoJSON with --json where the human form is loose) and its exit
code: 0 COMPLETED, 1 FAILED or CANCELLED, 2 usage, 3 PAUSED, 4 a server error or no server."""

from __future__ import annotations

import json
import os
import pty
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from agentrun.v1 import run_pb2

from agentrun_client import Client

ROOT = Path(__file__).resolve().parent.parent
AGENTRUN = [sys.executable, "-m", "cli"]
ENV = {k: v for k, v in os.environ.items() if not k.startswith("AGENTRUN_") and k != "COLUMNS"}
ENV["PYTHONIOENCODING"] = "utf-8"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A server process on a free port over a fresh SQLite file; its HOST:PORT."""
    db = tmp_path_factory.mktemp("cli") / "a.db"
    args = [*AGENTRUN, "serve", "--no-gateway", "--listen", "127.0.0.1:0", "--log-level", "WARNING"]
    proc = subprocess.Popen(
        [*args, "--database-url", f"sqlite:///{db}"], stdout=subprocess.PIPE, text=True, cwd=ROOT, env=ENV
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    match = re.fullmatch(r"agentrun: gRPC on (127\.0\.0\.1:\d+)", line.strip())
    assert match, f"server did not start: {line!r}"
    yield match.group(1)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0


@pytest.fixture(scope="module")
def client(server: str) -> Iterator[Client]:
    """For setting the scene (runs to look at) without the command under test."""
    with Client(server) as c:
        yield c


def agentrun(server: str, *args: str, stdin: Any = subprocess.DEVNULL) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*AGENTRUN, *args, "--server", server],
        stdin=stdin,
        capture_output=True,
        text=True,
        timeout=90,
        cwd=ROOT,
        env=ENV,
    )


def json_lines(done: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in done.stdout.splitlines()]


def one_line(done: subprocess.CompletedProcess[str], code: int) -> str:
    """The single `agentrun: ...` line a failed command prints on stderr."""
    assert done.returncode == code, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("agentrun: "), done.stderr
    return lines[0]


def paused_run(client: Client) -> str:
    run = client.run("approval", "send the report")
    assert run.state == run_pb2.RUN_STATE_PAUSED and run.pending_action.tool_name == "send_email"
    return run.id


# ---- run -----------------------------------------------------------------------------------------


def test_run_waits_and_prints_the_run(server: str) -> None:
    done = agentrun(server, "run", "tools", "what is 6*7?")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert re.fullmatch(r"run [0-9a-f-]{36} #\d+ tools COMPLETED", lines[0]), lines
    assert '  → calculator {"expression": "6*7"}' in lines and "  ← 42" in lines
    assert lines[-1] == "The calculator tool says: 42"


def test_run_json(server: str) -> None:
    done = agentrun(server, "run", "echo", "hello there", "--json", "--session", "s-json")
    assert done.returncode == 0, done.stderr
    run = json.loads(done.stdout)
    assert run["state"] == "RUN_STATE_COMPLETED" and run["output"] == "hello there"
    assert run["agentId"] == "echo" and run["sessionId"] == "s-json"


def test_run_in_the_background_then_follow_it_to_the_end(server: str) -> None:
    done = agentrun(server, "run", "slow", "tokens=5 delay_ms=20", "--background")
    assert done.returncode == 0, done.stderr
    run_id, state = done.stdout.split()
    assert state == "QUEUED"
    followed = agentrun(server, "follow", run_id, "--json")
    assert followed.returncode == 0, followed.stderr
    events = json_lines(followed)
    assert [e["seq"] for e in events] == [str(n) for n in range(1, len(events) + 1)]
    assert events[0]["type"] == "EVENT_TYPE_START" and events[-1]["type"] == "EVENT_TYPE_STOP"


def test_a_failed_run_exits_1(server: str) -> None:
    done = agentrun(server, "run", "slow", "tokens=200 delay_ms=50", "--timeout", "0.3", "--json")
    assert done.returncode == 1, done.stderr
    run = json.loads(done.stdout)
    assert run["state"] == "RUN_STATE_FAILED" and run["error"]["reason"] == "DEADLINE_EXCEEDED"


# ---- stream and follow ---------------------------------------------------------------------------


def test_stream_shows_reasoning_tool_calls_and_content(server: str) -> None:
    done = agentrun(server, "stream", "tools", "what is 6*7?")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert re.fullmatch(r"▶ run [0-9a-f-]{36}", lines[0]), lines
    assert lines[1:5] == [
        "I will use the calculator tool.",
        '→ calculator {"expression": "6*7"}',
        "← 42",
        "The calculator tool says: 42",  # the content deltas on one line
    ]
    assert re.fullmatch(r"✓ COMPLETED  #\d+ [0-9a-f-]{36}", lines[5]) and len(lines) == 6


def test_follow_replays_a_finished_run(server: str) -> None:
    streamed = agentrun(server, "stream", "tools", "what is 6*7?", "--json")
    assert streamed.returncode == 0, streamed.stderr
    events = json_lines(streamed)
    types = [e["type"].removeprefix("EVENT_TYPE_") for e in events]
    assert types[:4] == ["START", "REASONING_DELTA", "TOOL_START", "TOOL_END"] and types[-1] == "STOP"
    assert events[3]["toolCall"]["result"] == "42"
    run_id = events[0]["runId"]

    replay = agentrun(server, "follow", run_id)
    assert replay.returncode == 0, replay.stderr
    assert replay.stdout.splitlines()[1:5] == [
        "I will use the calculator tool.",
        '→ calculator {"expression": "6*7"}',
        "← 42",
        "The calculator tool says: 42",
    ]
    after = agentrun(server, "follow", run_id, "--after", "3", "--json")
    assert after.returncode == 0 and json_lines(after) == events[3:]


def test_stream_with_yes_approves_and_completes(server: str) -> None:
    done = agentrun(server, "stream", "approval", "send the report", "--yes")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "⏸ paused: send_email" in out and "approved send_email (--yes)" in out
    assert "← email to team@example.com" in out and "The email was sent." in out
    assert "✓ COMPLETED" in out


def test_stream_with_no_rejects(server: str) -> None:
    done = agentrun(server, "stream", "approval", "send the report", "--no", "--json")
    assert done.returncode == 0, done.stderr
    events = json_lines(done)
    types = [e["type"].removeprefix("EVENT_TYPE_") for e in events]
    assert "PAUSED" in types and types[-1] == "STOP"
    ends = [e["toolCall"] for e in events if e["type"] == "EVENT_TYPE_TOOL_END"]
    assert ends[-1]["isError"] and "refused" in ends[-1]["result"]
    answer = "".join(e["text"] for e in events if e["type"] == "EVENT_TYPE_CONTENT_DELTA")
    assert "not sent" in answer


def test_without_a_terminal_or_an_answer_the_stream_ends_paused(server: str) -> None:
    done = agentrun(server, "stream", "approval", "send the report")
    assert done.returncode == 3, done.stderr
    lines = done.stdout.splitlines()
    assert "[y/N]" not in done.stdout
    assert re.fullmatch(r"⏸ PAUSED  #\d+ [0-9a-f-]{36}", lines[-2]), lines
    assert lines[-1].strip().startswith("agentrun approve ")


@pytest.mark.parametrize(("answer", "result"), [("y", "The email was sent."), ("", "not sent")])
def test_a_terminal_is_asked(server: str, answer: str, result: str) -> None:
    controller, terminal = pty.openpty()
    try:
        os.write(controller, f"{answer}\n".encode())  # typed ahead: the terminal keeps it for input()
        done = agentrun(server, "stream", "approval", "send the report", stdin=terminal)
    finally:
        os.close(terminal)
        os.close(controller)
    assert done.returncode == 0, done.stderr
    assert 'approve send_email {"to": "team@example.com"' in done.stdout and "? [y/N]" in done.stdout
    assert result in done.stdout and "✓ COMPLETED" in done.stdout


# ---- one run -------------------------------------------------------------------------------------


def test_approve_a_paused_run(server: str, client: Client) -> None:
    run_id = paused_run(client)
    done = agentrun(server, "approve", run_id, "--reason", "fine")
    assert done.returncode == 0, done.stderr
    assert "COMPLETED" in done.stdout.splitlines()[0] and "The email was sent." in done.stdout
    again = one_line(agentrun(server, "reject", run_id), 4)
    assert again.startswith("agentrun: FAILED_PRECONDITION")


def test_reject_a_paused_run(server: str, client: Client) -> None:
    run_id = paused_run(client)
    done = agentrun(server, "reject", run_id, "--reason", "not now", "--json")
    assert done.returncode == 0, done.stderr
    run = json.loads(done.stdout)
    assert run["state"] == "RUN_STATE_COMPLETED" and "refused" in run["output"]
    assert run["toolCalls"][-1]["isError"] and run["decisions"][-1]["decision"] == "DECISION_REJECT"


def test_cancel_then_list_by_state(server: str, client: Client) -> None:
    run_id = paused_run(client)
    done = agentrun(server, "cancel", run_id, "--reason", "changed my mind", "--json")
    assert done.returncode == 0, done.stderr
    run = json.loads(done.stdout)
    assert run["state"] == "RUN_STATE_CANCELLED" and run["error"]["message"] == "changed my mind"
    assert agentrun(server, "get", run_id).returncode == 1

    listed = agentrun(server, "list", "--state", "cancelled", "--agent", "approval", "--json")
    assert listed.returncode == 0, listed.stderr
    runs = json_lines(listed)
    assert run_id in [r["id"] for r in runs] and {r["state"] for r in runs} == {"RUN_STATE_CANCELLED"}
    table = agentrun(server, "list", "--state", "CANCELLED", "--state", "completed", "--limit", "3")
    assert table.returncode == 0, table.stderr
    header, *rows = table.stdout.splitlines()
    assert header.split() == ["#", "ID", "AGENT", "STATE", "CREATED", "OUTPUT"] and 1 <= len(rows) <= 3
    assert all(row.split()[3] in ("CANCELLED", "COMPLETED") for row in rows)


def test_get_several_reports_the_missing(server: str, client: Client) -> None:
    first, second = client.run("echo", "one"), client.run("echo", "two")
    done = agentrun(server, "get", first.id, "no-such-run", str(second.number), "--json")
    assert one_line(done, 4) == "agentrun: NOT_FOUND RUN_NOT_FOUND: run 'no-such-run' not found"
    assert [r["output"] for r in json_lines(done)] == ["one", "two"]


def test_events_one_line_each(server: str, client: Client) -> None:
    run = client.run("tools", "what is 6*7?")
    done = agentrun(server, "events", run.id)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == run.last_seq
    kinds = [line.split()[2] for line in lines]
    assert kinds[:4] == ["START", "REASONING_DELTA", "TOOL_START", "TOOL_END"] and kinds[-1] == "STOP"
    assert '→ calculator {"expression": "6*7"}' in lines[2] and "← 42" in lines[3]


def test_agents(server: str) -> None:
    table = agentrun(server, "agents")
    assert table.returncode == 0, table.stderr
    rows = {line.split()[0]: line for line in table.stdout.splitlines()[1:]}
    assert "python:echo" in rows["echo"] and "send_email*" in rows["approval"]
    listed = json_lines(agentrun(server, "agents", "--json"))
    ids = [a["id"] for a in listed]
    assert ids[:4] == ["echo", "tools", "approval", "slow"] and rows.keys() == set(ids)


# ---- failures ------------------------------------------------------------------------------------


def test_not_found_is_one_line_exit_4(server: str) -> None:
    done = agentrun(server, "get", "no-such-run")
    assert one_line(done, 4) == "agentrun: NOT_FOUND RUN_NOT_FOUND: run 'no-such-run' not found"
    assert done.stdout == ""


def test_no_server_is_one_line_exit_4() -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{probe.getsockname()[1]}"
    line = one_line(agentrun(address, "agents"), 4)
    assert line == f"agentrun: cannot reach the agentrun server at {address} (is `agentrun serve` running?)"


def test_usage_errors_exit_2(server: str) -> None:
    line = one_line(agentrun(server, "run", "echo", "hi", "--timeout", "0"), 2)
    assert "--timeout" in line
    done = agentrun(server, "list", "--state", "bogus")
    assert done.returncode == 2 and "invalid choice: 'bogus'" in done.stderr
    done = agentrun(server, "stream", "approval", "hi", "--yes", "--no")
    assert done.returncode == 2 and "not allowed with argument" in done.stderr
