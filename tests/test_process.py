"""The server as a real process: health, reflection, SIGKILL recovery by a second process,
SIGTERM release, and a paused run surviving a restart."""

from __future__ import annotations

import http.server
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from agentrun.v1 import run_pb2, run_service_pb2_grpc
from agentrun.v1 import run_service_pb2 as pb
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

S = run_pb2.RunState


class Proc:
    def __init__(self, db: Path | str, *flags: str) -> None:
        url = db if isinstance(db, str) else f"sqlite:///{db}"
        args = [sys.executable, "-m", "cli", "serve", "--no-gateway", "--listen", "127.0.0.1:0"]
        args += ["--database-url", url, "--lease", "1", "--sweep-interval", "0.3"]
        args += ["--poll-interval", "0.2", "--log-level", "WARNING", *flags]
        self.p = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
        assert self.p.stdout is not None
        line = self.p.stdout.readline()
        match = re.search(r":(\d+)$", line.strip())
        assert match, f"server did not start: {line!r}"
        self.channel = grpc.insecure_channel(f"127.0.0.1:{match.group(1)}")
        self.stub = run_service_pb2_grpc.RunServiceStub(self.channel)

    def run(self, agent_id: str, message: str, **fields: object) -> run_pb2.Run:
        request = pb.RunRequest(agent_id=agent_id, input=run_pb2.RunInput(message=message), **fields)  # type: ignore[arg-type]
        return self.stub.Run(request, timeout=20).run

    def get(self, run_id: str) -> run_pb2.Run:
        return self.stub.GetRun(pb.GetRunRequest(run_id=run_id), timeout=20).run

    def wait_for(self, run_id: str, done: set[int], timeout: float) -> run_pb2.Run:
        deadline = time.monotonic() + timeout
        while (run := self.get(run_id)).state not in done and time.monotonic() < deadline:
            time.sleep(0.05)
        return run

    def stop(self, sig: int = signal.SIGTERM) -> int:
        self.channel.close()
        self.p.send_signal(sig)
        return self.p.wait(timeout=20)


@pytest.fixture(params=["sqlite", "postgres"])
def shared_db(request: pytest.FixtureRequest, tmp_path: Path) -> Path | str:
    """A database several server processes share: a SQLite file, or a PostgreSQL database."""
    if request.param == "postgres":
        url: str = request.getfixturevalue("postgres_url")
        return url
    return tmp_path / "shared.db"


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[list[Proc]]:
    started: list[Proc] = []
    yield started
    for proc in started:
        if proc.p.poll() is None:
            proc.stop(signal.SIGKILL)


def test_health_and_reflection(tmp_path: Path, procs: list[Proc]) -> None:
    proc = Proc(tmp_path / "a.db")
    procs.append(proc)
    health = health_pb2_grpc.HealthStub(proc.channel)
    for service in ("", "agentrun.v1.RunService"):
        reply = health.Check(health_pb2.HealthCheckRequest(service=service))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    reflect = reflection_pb2_grpc.ServerReflectionStub(proc.channel)
    replies = reflect.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    names = {s.name for reply in replies for s in reply.list_services_response.service}
    assert {"agentrun.v1.RunService", "grpc.health.v1.Health"} <= names
    assert proc.stop() == 0


def test_second_process_recovers_a_run_after_sigkill(shared_db: Path | str, procs: list[Proc]) -> None:
    db = shared_db
    first = Proc(db)
    procs.append(first)
    run = first.run("slow", "tokens=1000 delay_ms=20")
    assert first.wait_for(run.id, {S.Value("RUN_STATE_RUNNING")}, 5).state == S.Value("RUN_STATE_RUNNING")
    first.stop(signal.SIGKILL)
    second = Proc(db, "--max-attempts", "1")  # a lost run is not run again: WORKER_LOST
    procs.append(second)
    killed_at = time.monotonic()
    ended = {S.Value("RUN_STATE_FAILED"), S.Value("RUN_STATE_COMPLETED")}
    after = second.wait_for(run.id, ended, timeout=1 + 0.3 + 3)
    assert after.state == S.Value("RUN_STATE_FAILED") and after.error.reason == "WORKER_LOST"
    assert time.monotonic() - killed_at < 1 + 0.3 + 3
    events = second.stub.ListRunEvents(pb.ListRunEventsRequest(run_id=run.id, page_size=1000)).events
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert events[-1].error.reason == "WORKER_LOST"
    # the survivor still serves new runs
    assert second.run("echo", "still here", wait=True).state == S.Value("RUN_STATE_COMPLETED")


def test_a_run_lost_with_a_killed_process_runs_again_elsewhere(
    shared_db: Path | str, procs: list[Proc]
) -> None:
    """The `slow` agent calls no tool, so nothing it did can have acted: its lost run is queued again
    (attempt 2) and completes on the survivor."""
    first = Proc(shared_db)
    procs.append(first)
    run = first.run("slow", "tokens=40 delay_ms=25")
    assert first.wait_for(run.id, {S.Value("RUN_STATE_RUNNING")}, 5).state == S.Value("RUN_STATE_RUNNING")
    first.stop(signal.SIGKILL)
    second = Proc(shared_db)
    procs.append(second)
    done = second.wait_for(run.id, {S.Value("RUN_STATE_COMPLETED"), S.Value("RUN_STATE_FAILED")}, 15)
    assert (done.state, done.attempt) == (S.Value("RUN_STATE_COMPLETED"), 2)
    events = second.stub.ListRunEvents(pb.ListRunEventsRequest(run_id=run.id, page_size=1000)).events
    assert [e.status.reason for e in events if e.WhichOneof("payload") == "status"] == [
        "WORKER_LOST",
        "RETRIED",
    ]
    assert [e.seq for e in events] == list(range(1, len(events) + 1))


def test_sigterm_releases_unfinished_runs_to_another_process(
    shared_db: Path | str, procs: list[Proc]
) -> None:
    db = shared_db
    first = Proc(db, "--shutdown-grace", "0.3")
    procs.append(first)
    short = first.run("slow", "tokens=3 delay_ms=20")
    long = first.run("slow", "tokens=60 delay_ms=25")
    assert first.wait_for(long.id, {S.Value("RUN_STATE_RUNNING")}, 5).state == S.Value("RUN_STATE_RUNNING")
    time.sleep(0.1)
    assert first.stop(signal.SIGTERM) == 0
    second = Proc(db)
    procs.append(second)
    assert second.get(short.id).state == S.Value("RUN_STATE_COMPLETED")
    done = second.wait_for(long.id, {S.Value("RUN_STATE_COMPLETED")}, 10)
    assert done.state == S.Value("RUN_STATE_COMPLETED") and done.attempt == 2
    events = second.stub.ListRunEvents(pb.ListRunEventsRequest(run_id=long.id, page_size=1000)).events
    reasons = [e.status.reason for e in events if e.WhichOneof("payload") == "status"]
    assert reasons == ["RELEASED", "RETRIED"]
    assert [e.seq for e in events] == list(range(1, len(events) + 1))


@pytest.mark.parametrize("agent", ["approval", "ai-approval"])
def test_paused_run_continues_after_restart(shared_db: Path | str, procs: list[Proc], agent: str) -> None:
    db = shared_db
    first = Proc(db)
    procs.append(first)
    paused = first.run(agent, "restart me", wait=True)
    assert paused.state == S.Value("RUN_STATE_PAUSED")
    assert first.stop() == 0
    second = Proc(db)
    procs.append(second)
    request = pb.ContinueRequest(run_id=paused.id, decision=run_pb2.DECISION_APPROVE, wait=True)
    done = second.stub.Continue(request).run
    assert done.state == S.Value("RUN_STATE_COMPLETED")
    assert done.tool_calls[-1].name == "send_email" and not done.tool_calls[-1].is_error


def test_bad_agents_file_fails_at_startup(tmp_path: Path) -> None:
    bad = tmp_path / "agents.yaml"
    bad.write_text("agents:\n  - id: broken\n    runtime: python\n    impl: echo\n    tools: [teleport]\n")
    result = subprocess.run(
        [sys.executable, "-m", "cli", "serve", "--agents-file", str(bad), "--listen", "127.0.0.1:0"],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "AGENTRUN_DATABASE_URL": "sqlite:///:memory:"},
    )
    assert result.returncode != 0
    assert str(bad) in result.stderr and "'broken'" in result.stderr and "teleport" in result.stderr


@pytest.mark.parametrize("flags", [[], ["--event-loop", "uvloop"], ["--gateway-loopback"]])
def test_serve_starts_the_gateway_too(tmp_path: Path, flags: list[str]) -> None:
    """The README's quick start: one command, gRPC and HTTP (the gateway in process by default, or
    over loopback gRPC; on asyncio's loop or uvloop)."""
    args = [sys.executable, "-m", "cli", "serve", "--listen", "127.0.0.1:0"]
    args += ["--gateway-listen", "127.0.0.1:0", "--database-url", f"sqlite:///{tmp_path / 'q.db'}"]
    args += ["--log-level", "WARNING", *flags]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline(), proc.stdout.readline()]
        match = re.search(r"HTTP on 127\.0\.0\.1:(\d+)", lines[1])
        assert "gRPC on 127.0.0.1:" in lines[0] and match, lines
        url = f"http://127.0.0.1:{match.group(1)}/api/agents/echo/runs"
        body = json.dumps({"message": "one command"}).encode()
        request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=20) as reply:
            answer = json.loads(reply.read())
        assert answer["status"] == "COMPLETED" and answer["content"] == "one command"
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0


def test_a_callers_trace_reaches_the_webhook_with_no_tracer_installed(tmp_path: Path) -> None:
    """With no tracer provider (the process's own default; pytest's process has one once
    test_tracing ran) the server builds no spans, but a `traceparent` a caller sends still goes on
    into the run and out with its webhook."""
    received: list[str] = []
    arrived = threading.Event()

    class Hook(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            received.append(self.headers.get("traceparent", ""))
            self.send_response(200)
            self.end_headers()
            arrived.set()

        def log_message(self, *_: object) -> None:
            pass

    receiver = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    proc = Proc(tmp_path / "t.db", "--webhook-allow", "127.0.0.1")
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    try:
        url = f"http://127.0.0.1:{receiver.server_address[1]}/hook"
        request = pb.RunRequest(
            agent_id="echo", input=run_pb2.RunInput(message="traced"), wait=True, webhook_url=url
        )
        metadata = (("traceparent", f"00-{trace_id}-00f067aa0ba902b7-01"),)
        assert proc.stub.Run(request, metadata=metadata, timeout=20).run.state == S.RUN_STATE_COMPLETED
        assert arrived.wait(20), "no webhook arrived"
    finally:
        assert proc.stop() == 0
        receiver.shutdown()
    assert received[0].split("-")[1] == trace_id
