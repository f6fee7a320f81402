"""The Python client (agentrun_client) against real servers: AsyncClient against a server in the test's
event loop (directly, or through a TCP proxy that drops connections on cue), Client against server
processes, which the tests SIGKILL and start again on the same port and database while a stream, a
follow or a submission is under way."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import grpc
import jwt
import pytest
from agentrun.v1 import run_pb2
from google.protobuf.json_format import MessageToDict

from agentrun_client import (
    AgentrunError,
    AlreadyExists,
    AsyncClient,
    Client,
    ContentDelta,
    ErrorEvent,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Paused,
    PermissionDenied,
    ResourceExhausted,
    RetryPolicy,
    RunEvent,
    Start,
    StatusChange,
    Stop,
    ToolEnd,
    ToolStart,
    Unauthenticated,
    Unavailable,
)
from server.auth import keys
from server.auth.limits import LimitSettings
from server.auth.settings import AuthSettings
from tests.conftest import Harness, Launcher
from tests.waiting import until

S = run_pb2.RunState
T = TypeVar("T")
PATIENT = RetryPolicy(max_attempts=200, initial_backoff=0.05, max_backoff=0.3)


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """The client is the same on every backend: one SQLite file is enough (overrides conftest's)."""
    return f"sqlite:///{tmp_path / 'agentrun.db'}"


@pytest.fixture
async def client(h: Harness) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(f"127.0.0.1:{h.server.port}", timeout=30) as c:
        yield c


def seqs(events: list[RunEvent]) -> list[int]:
    return [e.seq for e in events]


def text(events: list[RunEvent]) -> str:
    return "".join(e.text for e in events if isinstance(e, ContentDelta))


def tokens(n: int) -> str:
    return "".join(f"t{i} " for i in range(n))


def retries(caplog: pytest.LogCaptureFixture, what: str) -> int:
    return sum(1 for r in caplog.records if r.name == "agentrun_client" and what in r.getMessage())


async def collect(items: AsyncIterator[T]) -> list[T]:
    return [item async for item in items]


# ---- runs, streams, reads ---------------------------------------------------------------------


async def test_run_waits_or_returns_queued_and_reuses_its_idempotency_key(client: AsyncClient) -> None:
    run = await client.run("echo", "hello there")
    assert (run.state, run.output) == (S.RUN_STATE_COMPLETED, "hello there")
    assert run.idempotency_key.startswith("client-")
    again = await client.run("echo", "hello there", idempotency_key=run.idempotency_key)
    assert again.id == run.id
    with pytest.raises(AlreadyExists) as clash:
        await client.run("echo", "something else", idempotency_key=run.idempotency_key)
    assert clash.value.reason == "IDEMPOTENCY_KEY_REUSED" and clash.value.metadata["run_id"] == run.id

    queued = await client.run("slow", "tokens=3 delay_ms=20", wait=False, timeout=60, metadata={"k": "v"})
    assert queued.state == S.RUN_STATE_QUEUED and queued.timeout.seconds == 60
    await until(lambda: _state(client, queued.id, S.RUN_STATE_COMPLETED), what="background run done")
    done = await client.get(queued.id)
    assert done.output == tokens(3) and dict(done.metadata) == {"k": "v"}


async def _state(client: AsyncClient, run_id: str, state: int) -> bool:
    return (await client.get(run_id)).state == state


async def test_stream_yields_typed_events_in_order(client: AsyncClient) -> None:
    events = await collect(client.stream("tools", "what is 6*7?"))
    assert isinstance(events[0], Start) and isinstance(events[-1], Stop)
    assert seqs(events) == list(range(1, len(events) + 1))
    tool_start = next(e for e in events if isinstance(e, ToolStart))
    tool_end = next(e for e in events if isinstance(e, ToolEnd))
    assert tool_start.seq < tool_end.seq and tool_end.tool_call.name == "calculator"
    assert tool_end.tool_call.result == "42" and "42" in text(events)
    assert events[-1].final and not events[0].final

    echo = await collect(client.stream("echo", "one two three", session_id="s-stream"))
    assert text(echo) == "one two three"
    assert isinstance(echo[0], Start) and echo[0].session_id == "s-stream"


async def test_follow_after_the_fact_and_from_a_seq(client: AsyncClient) -> None:
    run = await client.run("slow", "tokens=6 delay_ms=0")
    stored = await collect(client.events(run.id))
    followed = await collect(client.follow(run.id))
    assert [e.proto for e in followed] == [e.proto for e in stored]
    assert seqs(followed) == list(range(1, run.last_seq + 1)) and isinstance(followed[-1], Stop)
    tail = await collect(client.follow(str(run.number), after_seq=3))  # by number, too
    assert seqs(tail) == list(range(4, run.last_seq + 1))
    assert await collect(client.follow(run.id, after_seq=run.last_seq)) == []


async def test_get_batch_get_and_list_every_page(client: AsyncClient) -> None:
    session = "s-list"
    made = [await client.run("echo", f"run {i}", wait=False, session_id=session) for i in range(7)]
    ids = [r.id for r in made]
    await until(lambda: _all_done(client, ids), timeout=20, what="all runs of the session completed")
    listed = [r async for r in client.list(session_id=session, page_size=3)]  # three pages
    assert [r.id for r in listed] == ids[::-1]  # newest first
    done = [r async for r in client.list("echo", ["completed"], session, page_size=2)]
    assert len(done) == 7
    assert [r async for r in client.list(states=[S.RUN_STATE_FAILED], session_id=session)] == []

    batch = await client.batch_get([ids[2], "no-such-run", ids[0]])
    assert [r.id for r in batch.runs] == [ids[2], ids[0]] and list(batch.missing_run_ids) == ["no-such-run"]
    missing = [f"missing-{i}" for i in range(130)]  # more than one BatchGetRuns takes
    big = await client.batch_get([*ids, *missing, ids[0]])
    assert [r.id for r in big.runs] == ids and list(big.missing_run_ids) == missing


async def _all_done(client: AsyncClient, ids: list[str]) -> bool:
    batch = await client.batch_get(ids)
    return all(r.state == S.RUN_STATE_COMPLETED for r in batch.runs)


async def test_approve_one_paused_run_and_reject_another(client: AsyncClient) -> None:
    paused = await client.run("approval", "send the report")
    assert paused.state == S.RUN_STATE_PAUSED and paused.pending_action.tool_name == "send_email"
    approved = await client.approve(paused.id)
    assert approved.state == S.RUN_STATE_COMPLETED
    assert approved.tool_calls[-1].name == "send_email" and not approved.tool_calls[-1].is_error
    paused_at = next(e.seq for e in await collect(client.events(paused.id)) if isinstance(e, Paused))
    resumed = await collect(client.follow(paused.id, after_seq=paused_at))
    assert isinstance(resumed[0], StatusChange) and resumed[0].reason == "RESUMED"
    assert isinstance(resumed[-1], Stop)
    with pytest.raises(FailedPrecondition):
        await client.reject(paused.id, tool_call_id=paused.pending_action.tool_call_id)

    streamed = await collect(client.stream("approval", "email the team"))
    assert isinstance(streamed[-1], Paused) and streamed[-1].pending_action.tool_name == "send_email"
    rejected = await client.reject(streamed[-1].run_id, reason="not now")
    assert rejected.state == S.RUN_STATE_COMPLETED and rejected.tool_calls[-1].is_error
    assert "not now" in rejected.output


async def test_cancel_ends_the_run_and_its_stream(client: AsyncClient) -> None:
    seen: list[RunEvent] = []

    async def consume() -> None:
        async for event in client.stream("slow", "tokens=1000 delay_ms=20"):
            seen.append(event)

    consumer = asyncio.create_task(consume())
    await until(lambda: len(seen) >= 3, what="the stream started")
    cancelled = await client.cancel(seen[0].run_id, reason="enough")
    assert cancelled.state == S.RUN_STATE_CANCELLED and cancelled.error.reason == "CANCELLED"
    await asyncio.wait_for(consumer, 10)
    assert isinstance(seen[-1], ErrorEvent) and seen[-1].reason == "CANCELLED"
    assert seqs(seen) == list(range(1, len(seen) + 1))
    assert (await client.cancel(seen[0].run_id)).state == S.RUN_STATE_CANCELLED  # unchanged


async def test_update_metadata_replaces_a_runs_metadata(client: AsyncClient) -> None:
    run = await client.run("echo", "hi", metadata={"team": "a"})
    updated = await client.update_metadata(run.id, {"team": "b", "tags": ["x", 1]})
    assert MessageToDict(updated.metadata) == {"team": "b", "tags": ["x", 1.0]}
    assert updated.state == S.RUN_STATE_COMPLETED and updated.output == "hi"
    assert MessageToDict((await client.get(str(run.number))).metadata) == {"team": "b", "tags": ["x", 1.0]}
    assert not (await client.update_metadata(str(run.number), {})).metadata
    with pytest.raises(NotFound):
        await client.update_metadata("no-such-run", {"team": "c"})


async def test_events_are_paged(client: AsyncClient) -> None:
    run = await client.run("slow", "tokens=12 delay_ms=0")
    assert run.last_seq > 10
    paged = await collect(client.events(run.id, page_size=4))
    assert seqs(paged) == list(range(1, run.last_seq + 1))
    assert seqs(await collect(client.events(run.id, after_seq=5, page_size=3)))[0] == 6


async def test_agents(client: AsyncClient) -> None:
    agents = await client.agents()
    assert {"echo", "tools", "approval", "slow"} <= {a.id for a in agents}
    assert (await client.agent("approval")).approval_tools == ["send_email"]


async def test_errors_carry_code_reason_metadata_and_violations(client: AsyncClient) -> None:
    with pytest.raises(NotFound) as missing:
        await client.get("no-such-run")
    err = missing.value
    assert (err.code, err.reason, err.metadata) == (
        grpc.StatusCode.NOT_FOUND,
        "RUN_NOT_FOUND",
        {"run_id": "no-such-run"},
    )
    assert isinstance(err, AgentrunError) and "RUN_NOT_FOUND" in str(err)
    with pytest.raises(NotFound) as agent:
        await client.agent("nobody")
    assert agent.value.reason == "AGENT_NOT_FOUND"
    with pytest.raises(NotFound):
        await collect(client.follow("no-such-run"))  # streams raise the same errors

    with pytest.raises(InvalidArgument) as bad:
        await client.run("echo", "", timeout=-1)
    assert bad.value.code == grpc.StatusCode.INVALID_ARGUMENT
    fields = [field for field, _ in bad.value.violations]
    assert "input.message" in fields and "timeout" in fields, bad.value.violations
    with pytest.raises(InvalidArgument) as stream_bad:
        await collect(client.stream("echo", ""))
    assert [f for f, _ in stream_bad.value.violations] == ["run.input.message"]
    with pytest.raises(InvalidArgument) as page:
        await collect(client.list(page_size=5000))
    assert [f for f, _ in page.value.violations] == ["page_size"]

    done = await client.run("echo", "finished")
    with pytest.raises(FailedPrecondition):
        await client.approve(done.id)
    with pytest.raises(ValueError, match="unknown decision"):
        await client.continue_(done.id, "maybe")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="colour"):
        await client.run("echo", "x", colour="blue")  # type: ignore[call-arg]


async def test_resource_exhausted_says_when_to_retry(launch: Launcher) -> None:
    h = await launch(limits=LimitSettings(submit_rate=0.01, submit_burst=1))
    async with AsyncClient(f"127.0.0.1:{h.server.port}") as c:
        await c.run("echo", "first")
        with pytest.raises(ResourceExhausted) as limited:
            await c.run("echo", "second")
    assert limited.value.reason == "RATE_LIMITED"
    assert limited.value.retry_after is not None and limited.value.retry_after >= 1


# ---- authentication ---------------------------------------------------------------------------

SECRET = "client-test-hs256-secret-long-enough-for-sha256"


async def test_api_keys_and_tokens(launch: Launcher, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    made = {name: keys.create("acme", name, role) for name, role in [("alice", "user"), ("rita", "reader")]}
    entries = [line for _, text in made.values() for line in text.splitlines() if line.startswith("  ")]
    (tmp_path / "keys.yaml").write_text("keys:\n" + "\n".join(entries) + "\n")
    auth = AuthSettings(mode="on", keys_file=tmp_path / "keys.yaml", jwt_secret=SECRET)
    target = f"127.0.0.1:{(await launch(auth=auth)).server.port}"
    monkeypatch.delenv("AGENTRUN_API_KEY", raising=False)

    async with AsyncClient(target, api_key=made["alice"][0]) as alice:
        run = await alice.run("echo", "with a key", org_id="globex")
        assert (run.org_id, run.user_id, run.output) == ("acme", "alice", "with a key")
    monkeypatch.setenv("AGENTRUN_SERVER", target)
    monkeypatch.setenv("AGENTRUN_API_KEY", made["rita"][0])
    async with AsyncClient() as rita:  # target and key from the environment
        assert (await rita.get(run.id)).id == run.id
        with pytest.raises(PermissionDenied):
            await rita.run("echo", "readers may not")
    monkeypatch.delenv("AGENTRUN_API_KEY")
    token = jwt.encode({"org": "acme", "sub": "tom", "exp": int(time.time()) + 300}, SECRET, "HS256")
    async with AsyncClient(target, token=token) as tom:
        assert (await tom.get(run.id)).id == run.id
    async with AsyncClient(target) as nobody:
        with pytest.raises(Unauthenticated) as none:
            await nobody.get(run.id)
    assert none.value.reason == "UNAUTHENTICATED"
    async with AsyncClient(target, api_key="ar_not-a-key") as stranger:
        with pytest.raises(Unauthenticated) as wrong:
            await collect(stranger.follow(run.id))
    assert wrong.value.reason == "INVALID_CREDENTIALS"
    with pytest.raises(ValueError):
        AsyncClient(target, api_key="a", token="b")


# ---- dropped connections, through a proxy ---------------------------------------------------


class Proxy:
    """A TCP proxy in front of a server. `drop()` cuts every open connection; with `cut_first_reply`,
    the first connection is cut when the server starts to answer its first RPC (the first HTTP/2
    HEADERS frame on a stream): the request reached the server, no answer reached the client."""

    def __init__(self, upstream: int, cut_first_reply: bool = False) -> None:
        self.upstream = upstream
        self.armed = cut_first_reply
        self.connections = 0
        self.cuts = 0
        self._open: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def close(self) -> None:
        self.drop()
        if self._server is not None:
            self._server.close()

    def drop(self) -> None:
        self.cuts += bool(self._open)
        for writer in list(self._open):
            writer.transport.abort()
        self._open.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream)
        self._open |= {writer, up_writer}
        watch, self.armed = self.armed, False
        await asyncio.gather(self._pipe(reader, up_writer, False), self._pipe(up_reader, writer, watch))

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, watch: bool) -> None:
        pending = b""
        with contextlib.suppress(ConnectionError, OSError):
            while data := await src.read(65536):
                if not watch:
                    dst.write(data)
                    await dst.drain()
                    continue
                pending += data
                while len(pending) >= 9 and len(pending) >= 9 + int.from_bytes(pending[:3], "big"):
                    size = 9 + int.from_bytes(pending[:3], "big")
                    frame_type, stream_id = pending[3], int.from_bytes(pending[5:9], "big") & 0x7FFFFFFF
                    if frame_type == 1 and stream_id:  # HEADERS of a reply: cut here
                        self.drop()
                        return
                    dst.write(pending[:size])
                    pending = pending[size:]
                await dst.drain()
        dst.transport.abort()


@pytest.fixture
async def proxy(h: Harness) -> AsyncIterator[Callable[..., Any]]:
    made: list[Proxy] = []

    async def make(cut_first_reply: bool = False) -> tuple[Proxy, str]:
        p = Proxy(h.server.port, cut_first_reply)
        made.append(p)
        return p, await p.start()

    yield make
    for p in made:
        await p.close()


async def test_stream_reattaches_after_a_dropped_connection(
    client: AsyncClient, proxy: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="agentrun_client")
    p, target = await proxy()
    seen: list[RunEvent] = []
    async with AsyncClient(target, retry=PATIENT) as c:
        async for event in c.stream("slow", "tokens=40 delay_ms=10"):
            seen.append(event)
            if len(seen) in (3, 12):  # twice, mid-stream
                p.drop()
    assert p.cuts == 2 and p.connections == 3 and retries(caplog, "re-attach") >= 2
    assert seqs(seen) == list(range(1, len(seen) + 1)) and isinstance(seen[-1], Stop)
    assert text(seen) == tokens(40)
    stored = await collect(client.events(seen[0].run_id))
    assert [e.proto for e in seen] == [e.proto for e in stored]


async def test_follow_reattaches_after_a_dropped_connection(
    client: AsyncClient, proxy: Callable[..., Any]
) -> None:
    p, target = await proxy()
    run = await client.run("slow", "tokens=30 delay_ms=10", wait=False)
    seen: list[RunEvent] = []
    async with AsyncClient(target, retry=PATIENT) as c:
        async for event in c.follow(run.id):
            seen.append(event)
            if len(seen) == 4:
                p.drop()
    assert p.cuts == 1 and seqs(seen) == list(range(1, len(seen) + 1))
    assert isinstance(seen[-1], Stop) and text(seen) == tokens(30)


async def test_a_stream_cut_before_start_is_submitted_again_and_makes_one_run(
    client: AsyncClient, proxy: Callable[..., Any]
) -> None:
    p, target = await proxy(cut_first_reply=True)
    async with AsyncClient(target, retry=PATIENT) as c:
        events = await collect(c.stream("echo", "only once", session_id="s-cut"))
    assert p.cuts == 1 and p.connections == 2  # the first submission reached the server
    assert isinstance(events[0], Start) and isinstance(events[-1], Stop) and text(events) == "only once"
    assert seqs(events) == list(range(1, len(events) + 1))
    assert [r.id async for r in client.list(session_id="s-cut")] == [events[0].run_id]


async def test_a_run_whose_reply_was_lost_is_asked_again_and_makes_one_run(
    client: AsyncClient, proxy: Callable[..., Any]
) -> None:
    p, target = await proxy(cut_first_reply=True)
    async with AsyncClient(target, retry=PATIENT) as c:
        run = await c.run("echo", "exactly one", session_id="s-lost")
    assert p.cuts == 1 and run.state == S.RUN_STATE_COMPLETED
    assert [r.id async for r in client.list(session_id="s-lost")] == [run.id]
    async with AsyncClient(target, retry=RetryPolicy(max_attempts=0)) as impatient:
        p.armed = True  # the next connection is cut too, and this client does not retry
        with pytest.raises(Unavailable):
            await impatient.run("echo", "not retried")


# ---- server processes: the blocking client, SIGKILL and restart ------------------------------


class Served:
    """`agentrun serve` in a subprocess (gRPC only) on a SQLite file, on a given port or a free one."""

    def __init__(self, db: Path, *flags: str, port: int = 0) -> None:
        args = [sys.executable, "-m", "cli", "serve", "--no-gateway", "--listen", f"127.0.0.1:{port}"]
        args += ["--database-url", f"sqlite:///{db}", "--lease", "1", "--sweep-interval", "0.2"]
        args += ["--poll-interval", "0.1", "--log-level", "WARNING", *flags]
        self.p = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
        assert self.p.stdout is not None
        line = self.p.stdout.readline()
        match = re.search(r"agentrun: gRPC on 127\.0\.0\.1:(\d+)$", line.strip())
        assert match, f"server did not start: {line!r}"
        self.port = int(match.group(1))
        self.target = f"127.0.0.1:{self.port}"

    def kill(self) -> None:
        self.p.send_signal(signal.SIGKILL)
        self.p.wait(timeout=20)


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Served]]:
    started: list[Served] = []

    def start(*flags: str, port: int = 0, db: str = "shared.db") -> Served:
        started.append(Served(tmp_path / db, *flags, port=port))
        return started[-1]

    yield start
    for s in started:
        if s.p.poll() is None:
            s.p.terminate()
            try:
                s.p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                s.kill()


@pytest.fixture
def clients() -> Iterator[Callable[..., Client]]:
    made: list[Client] = []

    def make(target: str, **kwargs: Any) -> Client:
        made.append(Client(target, timeout=60, **kwargs))
        return made[-1]

    yield make
    for c in made:
        c.close()


class Background(threading.Thread):
    """Runs `work` in a thread, keeping what it returns, or raised, and every event it reports."""

    def __init__(self, work: Callable[[Background], Any]) -> None:
        super().__init__(daemon=True)
        self.work = work
        self.events: list[RunEvent] = []
        self.result: Any = None
        self.error: BaseException | None = None
        self.start()

    def run(self) -> None:
        try:
            self.result = self.work(self)
        except BaseException as exc:
            self.error = exc

    def outcome(self, timeout: float = 60) -> Any:
        self.join(timeout)
        assert not self.is_alive(), "the call did not finish"
        if self.error is not None:
            raise self.error
        return self.result


def eventually(check: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.02)


def stream_into(client: Client, agent: str, message: str, **kwargs: Any) -> Callable[[Background], None]:
    def work(thread: Background) -> None:
        for event in client.stream(agent, message, **kwargs):
            thread.events.append(event)

    return work


def test_the_blocking_client_against_a_server_process(
    serve: Callable[..., Served], clients: Callable[..., Client]
) -> None:
    c = clients(serve().target)
    assert "echo" in {a.id for a in c.agents()} and c.agent("echo").id == "echo"
    run = c.run("echo", "hello", session_id="s-sync")
    assert (run.state, run.output) == (S.RUN_STATE_COMPLETED, "hello")
    events = list(c.stream("tools", "what is 2+3?", session_id="s-sync"))
    assert isinstance(events[0], Start) and isinstance(events[-1], Stop) and "5" in text(events)
    assert [e.proto for e in c.follow(events[0].run_id)] == [e.proto for e in events]
    assert [e.proto for e in c.events(events[0].run_id, page_size=2)] == [e.proto for e in events]
    assert [r.id for r in c.list(session_id="s-sync", page_size=1)] == [events[0].run_id, run.id]
    assert [r.id for r in c.batch_get([run.id]).runs] == [run.id]
    paused = c.run("approval", "mail it")
    assert c.approve(paused.id).state == S.RUN_STATE_COMPLETED
    other = c.run("approval", "mail it again")
    assert c.continue_(other.id, "reject", reason="no").tool_calls[-1].is_error
    slow = c.run("slow", "tokens=1000 delay_ms=20", wait=False)
    assert c.cancel(slow.id).state == S.RUN_STATE_CANCELLED
    with pytest.raises(NotFound) as missing:
        c.get("no-such-run")
    assert missing.value.reason == "RUN_NOT_FOUND"
    stream = c.stream("slow", "tokens=1000 delay_ms=20")
    first = next(stream)
    stream.close()  # leaving a stream does not cancel its run
    assert c.get(first.run_id).state in (S.RUN_STATE_QUEUED, S.RUN_STATE_RUNNING)
    c.cancel(first.run_id)
    c.close()
    with pytest.raises(RuntimeError, match="closed"):
        c.get(run.id)


def test_stream_survives_sigkill_and_restart_of_the_server(
    serve: Callable[..., Served], clients: Callable[..., Client], caplog: pytest.LogCaptureFixture
) -> None:
    """The server executing and streaming the run dies; one started on the same port and database
    (one attempt per run: not run again) fails the run WORKER_LOST once its lease expires; the
    client re-attached and saw every event once."""
    caplog.set_level(logging.INFO, logger="agentrun_client")
    first = serve()
    c = clients(first.target, retry=PATIENT)
    streaming = Background(stream_into(c, "slow", "tokens=500 delay_ms=20"))
    eventually(lambda: len(streaming.events) >= 5, "the stream to start")
    first.kill()
    eventually(lambda: retries(caplog, "re-attach") >= 1, "the client to try to re-attach")
    second = serve("--max-attempts", "1", port=first.port)
    streaming.outcome()
    events = streaming.events
    assert seqs(events) == list(range(1, len(events) + 1))
    assert isinstance(events[-1], ErrorEvent) and events[-1].reason == "WORKER_LOST"
    assert [e.proto for e in events] == [e.proto for e in clients(second.target).events(events[0].run_id)]


def test_stream_and_waiting_run_survive_a_restart_of_the_front_server(
    serve: Callable[..., Served], clients: Callable[..., Client]
) -> None:
    """Two processes on one SQLite file: the worker executes, the front (no workers) takes the calls
    and is killed and started again mid-run; the runs complete and the client sees each event once."""
    worker = serve()
    front = serve("--workers", "0")
    c = clients(front.target, retry=PATIENT)
    streaming = Background(stream_into(c, "slow", "tokens=60 delay_ms=40"))
    waiting = Background(lambda _: c.run("slow", "tokens=60 delay_ms=40", session_id="s-wait"))
    w = clients(worker.target)
    eventually(lambda: len(streaming.events) >= 4, "the stream to start")
    eventually(lambda: [r.state for r in w.list(session_id="s-wait")] == [S.RUN_STATE_RUNNING], "run")
    front.kill()
    serve("--workers", "0", port=front.port)
    streaming.outcome()
    events = streaming.events
    assert seqs(events) == list(range(1, len(events) + 1)) and isinstance(events[-1], Stop)
    assert text(events) == tokens(60)
    assert [e.proto for e in events] == [e.proto for e in w.events(events[0].run_id)]
    run = waiting.outcome()
    assert run.state == S.RUN_STATE_COMPLETED and run.output == tokens(60)
    assert [r.id for r in w.list(session_id="s-wait")] == [run.id]  # the retried submit made no second run


def test_submissions_made_while_no_server_listens_go_through_once_it_does(
    serve: Callable[..., Served], clients: Callable[..., Client], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="agentrun_client")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    c = clients(f"127.0.0.1:{port}", retry=PATIENT)
    running = Background(lambda _: c.run("echo", "at last", session_id="s-down"))
    streaming = Background(stream_into(c, "echo", "streamed at last", session_id="s-down-stream"))
    eventually(lambda: retries(caplog, "Run failed") >= 1, "the submission to be retried")
    eventually(lambda: retries(caplog, "StreamRun submit failed") >= 1, "the stream to be retried")
    serve(port=port)
    run = running.outcome()
    assert (run.state, run.output) == (S.RUN_STATE_COMPLETED, "at last")
    streaming.outcome()
    assert text(streaming.events) == "streamed at last" and isinstance(streaming.events[-1], Stop)
    assert [r.id for r in c.list(session_id="s-down")] == [run.id]
    assert [r.id for r in c.list(session_id="s-down-stream")] == [streaming.events[0].run_id]


def test_retries_are_bounded(clients: Callable[..., Client]) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    c = clients(f"127.0.0.1:{port}", retry=RetryPolicy(max_attempts=2, initial_backoff=0.01))
    with pytest.raises(AgentrunError) as down:
        c.get("anything")
    assert down.value.code == grpc.StatusCode.UNAVAILABLE
    with pytest.raises(AgentrunError) as stream_down:
        list(c.follow("anything"))
    assert stream_down.value.code == grpc.StatusCode.UNAVAILABLE


def test_stream_survives_a_graceful_restart_that_hands_the_run_on(
    serve: Callable[..., Served], clients: Callable[..., Client], caplog: pytest.LogCaptureFixture
) -> None:
    """SIGTERM: the server releases the unfinished run to the queue and goes away; the one started
    after it runs the run again from the start; the stream follows it through to STOP."""
    caplog.set_level(logging.INFO, logger="agentrun_client")
    first = serve("--shutdown-grace", "0.2")
    c = clients(first.target, retry=PATIENT)
    streaming = Background(stream_into(c, "slow", "tokens=100 delay_ms=20"))
    eventually(lambda: len(streaming.events) >= 5, "the stream to start")
    first.p.send_signal(signal.SIGTERM)
    assert first.p.wait(timeout=20) == 0
    serve(port=first.port)
    streaming.outcome()
    events = streaming.events
    assert retries(caplog, "re-attach") >= 1
    assert seqs(events) == list(range(1, len(events) + 1)) and isinstance(events[-1], Stop)
    reasons = [e.reason for e in events if isinstance(e, StatusChange)]
    assert reasons == ["RELEASED", "RETRIED"] and text(events).endswith(tokens(100))
