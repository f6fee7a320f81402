"""The in-process channel (common/local_channel.py) answers every call as the server does over
gRPC: the same codes, messages and google.rpc.Status details, auth and roles included; deadlines,
cancels and a reader that stops reading behave as on the network."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from agentrun.v1 import run_pb2, run_service_pb2_grpc
from agentrun.v1 import run_service_pb2 as pb
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import REGISTRY

from common import local_channel
from common.local_channel import LocalChannel
from gateway import sse
from server.auth import keys
from server.auth.settings import AuthSettings
from tests.conftest import Harness, Launcher
from tests.waiting import until

USER, READER = keys.new_key(), keys.new_key()
STATUS_DETAILS = "grpc-status-details-bin"
Outcome = tuple[Any, ...]
Call = Callable[[grpc.aio.Channel, tuple[tuple[str, str], ...]], Awaitable[Any]]


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'agentrun.db'}"


@pytest.fixture
async def h(launch: Launcher) -> Harness:
    entries = [
        f"acme:al:user:sha256:{keys.hash_key(USER)}",
        f"acme:rita:reader:sha256:{keys.hash_key(READER)}",
    ]
    return await launch(auth=AuthSettings(mode="on", api_keys=",".join(entries)))


def auth(key: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {key}"),)


def run(message: str, agent: str = "echo", **fields: Any) -> pb.RunRequest:
    return pb.RunRequest(agent_id=agent, input=run_pb2.RunInput(message=message), **fields)


def status_details(exc: grpc.aio.AioRpcError) -> object:
    pairs: Any = exc.trailing_metadata() or ()
    return next((value for key, value in pairs if key == STATUS_DETAILS), None)


async def outcome(call: Awaitable[Any]) -> Outcome:
    """What a client can tell of a call's end: its code, message and Status details, or the answer's
    parts that do not vary between two runs."""
    try:
        answer = await call
    except grpc.aio.AioRpcError as exc:
        return exc.code(), exc.details(), status_details(exc)
    if isinstance(answer, pb.RunResponse):
        return run_pb2.RunState.Name(answer.run.state), answer.run.output
    return (type(answer).__name__,)


async def stream_outcome(call: grpc.aio.UnaryStreamCall[Any, Any]) -> Outcome:
    try:
        types = [run_pb2.EventType.Name(r.event.type) async for r in call]
    except grpc.aio.AioRpcError as exc:
        return exc.code(), exc.details(), status_details(exc)
    return tuple(types)


def calls() -> dict[str, Call]:
    def stub(channel: grpc.aio.Channel) -> run_service_pb2_grpc.RunServiceStub:
        return run_service_pb2_grpc.RunServiceStub(channel)

    def raw(channel: grpc.aio.Channel, method: str, data: bytes, md: Any) -> Awaitable[Any]:
        return channel.unary_unary(method, None, None)(data, metadata=md)  # bytes in, bytes out

    return {
        "run": lambda c, md: outcome(stub(c).Run(run("hi", wait=True), metadata=md)),
        "no credentials": lambda c, md: outcome(stub(c).Run(run("hi", wait=True))),
        "a bad key": lambda c, md: outcome(stub(c).Run(run("hi"), metadata=auth("ar_nope"))),
        "a reader submits": lambda c, md: outcome(stub(c).Run(run("hi"), metadata=auth(READER))),
        "unknown agent": lambda c, md: outcome(stub(c).Run(run("hi", agent="nope"), metadata=md)),
        "bad field": lambda c, md: outcome(stub(c).Run(run("hi", agent="no spaces"), metadata=md)),
        "unknown run": lambda c, md: outcome(stub(c).GetRun(pb.GetRunRequest(run_id="42"), metadata=md)),
        "bad page token": lambda c, md: outcome(
            stub(c).ListRuns(pb.ListRunsRequest(page_token="!!"), metadata=md)
        ),
        "deadline": lambda c, md: outcome(
            stub(c).Run(run("tokens=1 delay_ms=60000", agent="slow", wait=True), metadata=md, timeout=0.3)
        ),
        "too large": lambda c, md: outcome(stub(c).Run(run("x" * (5 << 20)), metadata=md)),
        "malformed bytes": lambda c, md: outcome(raw(c, "/agentrun.v1.RunService/Run", b"\xff\xff", md)),
        "unknown method": lambda c, md: outcome(raw(c, "/agentrun.v1.RunService/Nope", b"", md)),
        "health": lambda c, md: outcome(
            health_pb2_grpc.HealthStub(c).Check(
                health_pb2.HealthCheckRequest(service="agentrun.v1.RunService")
            )
        ),
        "stream": lambda c, md: stream_outcome(
            stub(c).StreamRun(pb.StreamRunRequest(run=run("a b")), metadata=md)
        ),
        "stream of no run": lambda c, md: stream_outcome(
            stub(c).StreamRun(pb.StreamRunRequest(run_id="42"), metadata=md)
        ),
        "stream, no credentials": lambda c, md: stream_outcome(
            stub(c).StreamRun(pb.StreamRunRequest(run=run("a b")))
        ),
    }


async def test_every_outcome_is_the_one_grpc_gives(h: Harness) -> None:
    assert h.server.local is not None
    local = LocalChannel(h.server.local)
    for name, call in calls().items():
        over_grpc = await call(h.channel, auth(USER))
        in_process = await call(local, auth(USER))
        assert in_process == over_grpc, name
    # Not all answers are alike: the table above covers successes and several kinds of failure.
    codes = {(await call(local, auth(USER)))[0] for call in calls().values()}
    assert {
        "RUN_STATE_COMPLETED",
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
    } <= codes


async def test_a_cancelled_stream_ends_its_handler_and_a_waiting_read(h: Harness) -> None:
    assert h.server.local is not None
    stub = run_service_pb2_grpc.RunServiceStub(LocalChannel(h.server.local))
    call = stub.StreamRun(
        pb.StreamRunRequest(run=run("tokens=1 delay_ms=60000", agent="slow")), metadata=auth(USER)
    )
    assert (await call.read()).event.type == run_pb2.EVENT_TYPE_START

    def followers() -> float:
        return REGISTRY.get_sample_value("agentrun_open_streams", {"kind": "stream"}) or 0.0

    assert followers() == 1
    waiting = asyncio.ensure_future(call.read())
    await until(lambda: call._readable is not None, 5, "the read to wait for the next answer")
    assert call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting  # as grpc.aio: a read of a call one cancelled
    await until(lambda: followers() == 0, 5, "the server's follower to go")
    assert call.done() and await call.code() == grpc.StatusCode.CANCELLED


async def test_a_reader_that_stops_reading_holds_the_handler_back(h: Harness) -> None:
    assert h.server.local is not None
    stub = run_service_pb2_grpc.RunServiceStub(LocalChannel(h.server.local))
    message = run("tokens=400 delay_ms=0", agent="slow")
    call = stub.StreamRun(pb.StreamRunRequest(run=message), metadata=auth(USER))
    assert isinstance(call, local_channel.LocalStreamCall)
    first = await call.read()
    await until(lambda: len(call._buffer) == local_channel.STREAM_BUFFER, 10, "a full buffer")

    async def ended() -> bool:
        return (
            await h.stub.GetRun(pb.GetRunRequest(run_id=first.event.run_id), metadata=auth(USER))
        ).run.HasField("complete_time")

    await until(ended, 10, "the run to end while its stream waits")
    assert len(call._buffer) == local_channel.STREAM_BUFFER  # not one answer more
    seqs = [first.event.seq]
    while (ready := call.read_nowait()) is not None:
        seqs.append(ready.event.seq)
    seqs += [r.event.seq async for r in call]
    assert seqs == list(range(1, len(seqs) + 1)) and len(seqs) == 402  # START, 400 deltas, STOP


async def test_the_sse_reader_takes_the_answers_ready_together(h: Harness) -> None:
    assert h.server.local is not None
    stub = run_service_pb2_grpc.RunServiceStub(LocalChannel(h.server.local))
    call = stub.StreamRun(
        pb.StreamRunRequest(run=run("tokens=400 delay_ms=0", agent="slow")), metadata=auth(USER)
    )
    assert isinstance(call, local_channel.LocalStreamCall)
    reader = sse._Reader(call)
    first = await reader.next(5.0)
    await until(lambda: len(call._buffer) == local_channel.STREAM_BUFFER, 10, "a full buffer")
    batch = reader.with_ready(first)  # what the SSE writer sends in one write
    assert [r.event.seq for r in batch] == list(range(1, sse.MAX_BATCH + 1))
    reader.close()
    call.cancel()
