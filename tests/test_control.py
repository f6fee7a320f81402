"""Cancel, continue (approve/reject), timeouts and idempotency over gRPC."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from agentrun.v1 import run_pb2
from agentrun.v1 import run_service_pb2 as pb

from tests.conftest import Harness, Launcher
from tests.test_runs import assert_well_formed, details

S = run_pb2.RunState
T = run_pb2.EventType


async def wait_state(h: Harness, run_id: str, state: int, timeout: float = 10.0) -> run_pb2.Run:
    async with asyncio.timeout(timeout):
        while (run := await h.get(run_id)).state != state:
            await asyncio.sleep(0.02)
    return run


async def cancel(h: Harness, run_id: str) -> run_pb2.Run:
    return (await h.stub.CancelRun(pb.CancelRunRequest(run_id=run_id))).run


async def decide(h: Harness, run: run_pb2.Run, decision: int, **fields: object) -> run_pb2.Run:
    request = pb.ContinueRequest(run_id=run.id, decision=decision, **fields)  # type: ignore[arg-type]
    return (await h.stub.Continue(request)).run


async def events(h: Harness, run_id: str) -> list[run_pb2.RunEvent]:
    return list((await h.stub.ListRunEvents(pb.ListRunEventsRequest(run_id=run_id))).events)


# ---- cancel ---------------------------------------------------------------------------------


async def test_cancel_queued_run(launch: Launcher) -> None:
    h = await launch(workers=1)
    busy = await h.run("slow", "tokens=200 delay_ms=20")
    queued = await h.run("echo", "never runs")
    await wait_state(h, busy.id, S.Value("RUN_STATE_RUNNING"))
    assert (await h.get(queued.id)).state == S.Value("RUN_STATE_QUEUED")
    run = await cancel(h, queued.id)
    assert run.state == S.Value("RUN_STATE_CANCELLED") and run.error.reason == "CANCELLED"
    log = await events(h, queued.id)
    assert_well_formed(log)
    assert [T.Name(e.type) for e in log] == ["EVENT_TYPE_START", "EVENT_TYPE_ERROR"]
    await cancel(h, busy.id)


async def test_cancel_running_run_stops_the_agent(h: Harness) -> None:
    run = await h.run("slow", "tokens=500 delay_ms=10")
    await wait_state(h, run.id, S.Value("RUN_STATE_RUNNING"))
    await asyncio.sleep(0.1)
    cancelled = await cancel(h, run.id)
    assert cancelled.state == S.Value("RUN_STATE_CANCELLED")
    log = await events(h, run.id)
    assert_well_formed(log)
    await asyncio.sleep(0.2)  # a still-running agent would append more events
    assert len(await events(h, run.id)) == len(log) < 500


async def test_cancel_paused_run(h: Harness) -> None:
    paused = await h.run("approval", "send the report", wait=True)
    assert paused.state == S.Value("RUN_STATE_PAUSED")
    run = await cancel(h, paused.id)
    assert run.state == S.Value("RUN_STATE_CANCELLED") and not run.HasField("pending_action")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await decide(h, paused, run_pb2.DECISION_APPROVE)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_cancel_finished_run_is_a_no_op(h: Harness) -> None:
    done = await h.run("echo", "hi", wait=True)
    again = await cancel(h, done.id)
    assert again.state == S.Value("RUN_STATE_COMPLETED") and again.update_time == done.update_time


async def test_two_concurrent_cancels_agree(h: Harness) -> None:
    run = await h.run("slow", "tokens=500 delay_ms=10")
    await wait_state(h, run.id, S.Value("RUN_STATE_RUNNING"))
    first, second = await asyncio.gather(cancel(h, run.id), cancel(h, run.id))
    assert first.state == second.state == S.Value("RUN_STATE_CANCELLED")
    log = await events(h, run.id)
    assert_well_formed(log)


async def test_cancel_ends_an_open_stream(h: Harness) -> None:
    request = pb.RunRequest(agent_id="slow", input=run_pb2.RunInput(message="tokens=500 delay_ms=10"))
    seen: list[run_pb2.RunEvent] = []

    async def consume() -> None:
        async for response in h.stub.StreamRun(pb.StreamRunRequest(run=request)):
            seen.append(response.event)

    consumer = asyncio.create_task(consume())
    async with asyncio.timeout(5):
        while len(seen) < 3:
            await asyncio.sleep(0.01)
    await cancel(h, seen[0].run_id)
    await asyncio.wait_for(consumer, 5)
    assert_well_formed(seen)
    assert seen[-1].error.reason == "CANCELLED"


# ---- continue -------------------------------------------------------------------------------


@pytest.mark.parametrize("agent", ["approval", "ai-approval"])
async def test_approve_runs_the_tool(h: Harness, agent: str) -> None:
    paused = await h.run(agent, "quarterly numbers", wait=True)
    assert paused.pending_action.tool_name == "send_email"
    done = await decide(h, paused, run_pb2.DECISION_APPROVE, wait=True)
    assert done.state == S.Value("RUN_STATE_COMPLETED")
    assert "sent" in done.output or "queued for delivery" in done.output
    assert done.tool_calls[-1].name == "send_email" and not done.tool_calls[-1].is_error
    assert [d.decision for d in done.decisions] == [run_pb2.DECISION_APPROVE]
    log = await events(h, done.id)
    assert_well_formed(log)
    types = [T.Name(e.type) for e in log]
    assert types.count("EVENT_TYPE_PAUSED") == 1 and "EVENT_TYPE_STATUS" in types


@pytest.mark.parametrize("agent", ["approval", "ai-approval"])
async def test_reject_tells_the_agent(h: Harness, agent: str) -> None:
    paused = await h.run(agent, "quarterly numbers", wait=True)
    done = await decide(h, paused, run_pb2.DECISION_REJECT, wait=True, reason="not now")
    assert done.state == S.Value("RUN_STATE_COMPLETED")
    assert "refused" in done.output and "not now" in done.output
    assert done.tool_calls[-1].is_error


async def test_same_continue_twice_applies_once(h: Harness) -> None:
    paused = await h.run("approval", "x", wait=True)
    call_id = paused.pending_action.tool_call_id
    first = await decide(h, paused, run_pb2.DECISION_APPROVE, wait=True, tool_call_id=call_id)
    second = await decide(h, paused, run_pb2.DECISION_APPROVE, wait=True, tool_call_id=call_id)
    assert first.state == second.state == S.Value("RUN_STATE_COMPLETED")
    assert len(second.decisions) == 1 and first.last_seq == second.last_seq
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await decide(h, paused, run_pb2.DECISION_REJECT, tool_call_id=call_id)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_continue_naming_a_stale_call_is_refused(h: Harness) -> None:
    paused = await h.run("approval", "x", wait=True)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await decide(h, paused, run_pb2.DECISION_APPROVE, tool_call_id="not-the-pending-one")
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert details(err.value)[0].reason == "STALE_TOOL_CALL"
    assert (await h.get(paused.id)).state == S.Value("RUN_STATE_PAUSED")


async def test_continue_on_a_running_run_is_refused(h: Harness) -> None:
    run = await h.run("slow", "tokens=200 delay_ms=10")
    await wait_state(h, run.id, S.Value("RUN_STATE_RUNNING"))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await decide(h, run, run_pb2.DECISION_APPROVE)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert details(err.value)[0].reason == "RUN_NOT_PAUSED"
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await decide(h, run, run_pb2.DECISION_UNSPECIFIED)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    await cancel(h, run.id)


async def test_stream_of_a_paused_run_ends_and_resumes(h: Harness) -> None:
    request = pb.RunRequest(agent_id="approval", input=run_pb2.RunInput(message="x"))
    first = await h.events(run=request)
    assert first[-1].type == T.Value("EVENT_TYPE_PAUSED")
    run = await h.get(first[0].run_id)
    await decide(h, run, run_pb2.DECISION_APPROVE)
    rest = await h.events(run_id=run.id, after_seq=first[-1].seq)
    assert_well_formed(first + rest)
    assert rest[0].status.reason == "RESUMED"


# ---- timeouts -------------------------------------------------------------------------------


async def test_timeout_fails_a_running_run(h: Harness) -> None:
    request = pb.RunRequest(
        agent_id="slow", input=run_pb2.RunInput(message="tokens=100 delay_ms=20"), wait=True
    )
    request.timeout.FromMilliseconds(300)
    run = (await h.stub.Run(request)).run
    assert run.state == S.Value("RUN_STATE_FAILED") and run.error.reason == "DEADLINE_EXCEEDED"
    assert_well_formed(await events(h, run.id))


async def test_timeout_counts_queue_time(launch: Launcher) -> None:
    h = await launch(workers=1)
    busy = await h.run("slow", "tokens=100 delay_ms=20")
    request = pb.RunRequest(agent_id="echo", input=run_pb2.RunInput(message="late"), wait=True)
    request.timeout.FromMilliseconds(300)
    run = (await h.stub.Run(request)).run
    assert run.state == S.Value("RUN_STATE_FAILED") and run.error.reason == "DEADLINE_EXCEEDED"
    assert not run.HasField("start_time")
    await cancel(h, busy.id)


async def test_timeout_fails_a_paused_run(h: Harness) -> None:
    request = pb.RunRequest(agent_id="approval", input=run_pb2.RunInput(message="x"), wait=True)
    request.timeout.FromMilliseconds(400)
    paused = (await h.stub.Run(request)).run
    assert paused.state == S.Value("RUN_STATE_PAUSED")
    run = await wait_state(h, paused.id, S.Value("RUN_STATE_FAILED"), timeout=5)
    assert run.error.reason == "DEADLINE_EXCEEDED"


# ---- idempotency ----------------------------------------------------------------------------


async def test_same_key_same_request_is_the_same_run(h: Harness) -> None:
    first = await h.run("echo", "once", idempotency_key="k1")
    second = await h.run("echo", "once", idempotency_key="k1", wait=True)
    assert first.id == second.id and second.state == S.Value("RUN_STATE_COMPLETED")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await h.run("echo", "something else", idempotency_key="k1")
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert details(err.value)[0].metadata["run_id"] == first.id
    assert (await h.stub.ListRuns(pb.ListRunsRequest())).total_size == 1


async def test_concurrent_submits_with_one_key_make_one_run(h: Harness) -> None:
    runs = await asyncio.gather(*(h.run("echo", "same", idempotency_key="k20") for _ in range(20)))
    assert len({r.id for r in runs}) == 1
    assert (await h.stub.ListRuns(pb.ListRunsRequest())).total_size == 1
