"""Runs over gRPC: sync, background, streams and re-attach, batch, list, events, agents."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from agentrun.v1 import run_pb2
from agentrun.v1 import run_service_pb2 as pb
from google.protobuf import json_format, struct_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from tests.conftest import Harness

COMPLETED = run_pb2.RUN_STATE_COMPLETED
T = run_pb2.EventType


def details(error: grpc.aio.AioRpcError) -> tuple[error_details_pb2.ErrorInfo, list[str]]:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]  # AioRpcError has the same surface
    assert status is not None
    info, fields = error_details_pb2.ErrorInfo(), []
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            detail.Unpack(info)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            fields = [v.field for v in bad.field_violations]
    return info, fields


def assert_well_formed(events: list[run_pb2.RunEvent]) -> None:
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert events[0].type == T.Value("EVENT_TYPE_START")
    ends = [e for e in events if e.type in (T.Value("EVENT_TYPE_STOP"), T.Value("EVENT_TYPE_ERROR"))]
    assert ends == [events[-1]]


@pytest.mark.parametrize("agent", ["echo", "ai-echo"])
async def test_sync_run_completes_with_output(h: Harness, agent: str) -> None:
    run = await h.run(agent, "hello agent world", wait=True)
    assert run.state == COMPLETED
    assert run.output == "hello agent world"
    assert run.reasoning_steps and run.number >= 1
    assert run.HasField("complete_time")
    log = await h.events(run_id=run.id)
    assert_well_formed(log)
    deltas = [e.text for e in log if e.type == T.Value("EVENT_TYPE_CONTENT_DELTA")]
    assert len(deltas) == 3 and "".join(deltas) == run.output


async def test_background_run_polls_to_completed(h: Harness) -> None:
    run = await h.run("slow", "tokens=5 delay_ms=20")
    assert run.state == run_pb2.RUN_STATE_QUEUED
    for _ in range(200):
        run = await h.get(run.id)
        if run.state == COMPLETED:
            break
        await asyncio.sleep(0.02)
    assert run.state == COMPLETED
    assert run.output == "t0 t1 t2 t3 t4 "
    assert (await h.get(str(run.number))).id == run.id  # by integer number too


@pytest.mark.parametrize("agent", ["tools", "ai-tools"])
async def test_stream_orders_events(h: Harness, agent: str) -> None:
    request = pb.RunRequest(agent_id=agent, input=run_pb2.RunInput(message="what is 6 * 7"))
    events = await h.events(run=request)
    assert_well_formed(events)
    types = [T.Name(e.type) for e in events]
    assert types[:4] == [
        "EVENT_TYPE_START",
        "EVENT_TYPE_REASONING_DELTA",
        "EVENT_TYPE_TOOL_START",
        "EVENT_TYPE_TOOL_END",
    ]
    assert events[3].tool_call.result == "42"
    run = await h.get(events[0].run_id)
    assert run.tool_calls[0].name == "calculator" and run.tool_calls[0].result == "42"
    assert run.output.endswith("42")


async def test_reattach_returns_exactly_the_rest(h: Harness) -> None:
    request = pb.RunRequest(agent_id="slow", input=run_pb2.RunInput(message="tokens=30 delay_ms=5"))
    seen: list[run_pb2.RunEvent] = []
    async for response in h.stub.StreamRun(pb.StreamRunRequest(run=request)):
        seen.append(response.event)
        if len(seen) == 7:
            break  # the client disconnects mid-run; the run goes on
    rest = await h.events(run_id=seen[0].run_id, after_seq=seen[-1].seq)
    assert_well_formed(seen + rest)
    # after the run finished, re-attach replays from the store
    again = await h.events(run_id=seen[0].run_id, after_seq=10)
    assert [e.seq for e in again] == [e.seq for e in rest if e.seq > 10]
    assert await h.events(run_id=seen[0].run_id, after_seq=rest[-1].seq) == []


async def test_batch_get_keeps_request_order_and_reports_missing(h: Harness) -> None:
    runs = [await h.run("echo", f"m{i}", wait=True) for i in range(3)]
    ids = [runs[2].id, "no-such-run", runs[0].id, str(runs[1].number), runs[2].id]
    response = await h.stub.BatchGetRuns(pb.BatchGetRunsRequest(run_ids=ids))
    assert [r.id for r in response.runs] == [runs[2].id, runs[0].id, runs[1].id]
    assert list(response.missing_run_ids) == ["no-such-run"]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await h.stub.BatchGetRuns(pb.BatchGetRunsRequest(run_ids=[f"id{i}" for i in range(101)]))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert details(err.value)[1] == ["run_ids"]


async def test_list_runs_pages_and_filters(h: Harness) -> None:
    for i in range(5):
        await h.run("echo", f"m{i}", wait=True, session_id="s1" if i % 2 else "s2")
    page1 = await h.stub.ListRuns(pb.ListRunsRequest(page_size=2))
    page2 = await h.stub.ListRuns(pb.ListRunsRequest(page_size=2, page_token=page1.next_page_token))
    numbers = [r.number for r in (*page1.runs, *page2.runs)]
    assert numbers == sorted(numbers, reverse=True) and len(set(numbers)) == 4
    assert page1.total_size == 5
    s1 = await h.stub.ListRuns(pb.ListRunsRequest(session_id="s1"))
    assert len(s1.runs) == 2 and s1.next_page_token == ""
    done = await h.stub.ListRuns(pb.ListRunsRequest(states=[run_pb2.RUN_STATE_FAILED]))
    assert len(done.runs) == 0
    third = await h.stub.ListRuns(pb.ListRunsRequest(page_size=2, skip=4))  # page 3 by number
    assert [r.number for r in third.runs] == [min(numbers) - 1] and third.total_size == 5


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (pb.ListRunsRequest(page_token="garbage!"), "page_token"),
        (pb.ListRunsRequest(states=[42]), "states"),  # type: ignore[list-item]
        (pb.ListRunsRequest(page_size=-1), "page_size"),
        (pb.ListRunsRequest(skip=-1), "skip"),
    ],
)
async def test_list_runs_rejects_bad_arguments(h: Harness, request_: pb.ListRunsRequest, field: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await h.stub.ListRuns(request_)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    info, fields = details(err.value)
    assert info.domain == "agentrun" and fields == [field]


async def test_bad_submissions_are_rejected_and_store_nothing(h: Harness) -> None:
    bad = pb.RunRequest(agent_id="echo", input=run_pb2.RunInput(message="  "))
    bad.timeout.seconds = -1
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await h.stub.Run(bad)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert sorted(details(err.value)[1]) == ["input.message", "timeout"]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await h.run("nobody", "hi")
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert details(err.value)[0].reason == "AGENT_NOT_FOUND"
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await h.get("missing")
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert (await h.stub.ListRuns(pb.ListRunsRequest())).total_size == 0


async def test_list_run_events_pages(h: Harness) -> None:
    run = await h.run("slow", "tokens=10 delay_ms=0", wait=True)
    first = await h.stub.ListRunEvents(pb.ListRunEventsRequest(run_id=run.id, page_size=5))
    second = await h.stub.ListRunEvents(
        pb.ListRunEventsRequest(run_id=run.id, page_size=50, page_token=first.next_page_token)
    )
    assert [e.seq for e in (*first.events, *second.events)] == list(range(1, run.last_seq + 1))
    assert second.next_page_token == ""


async def test_agents_are_listed(h: Harness) -> None:
    agents = await h.stub.ListAgents(pb.ListAgentsRequest())
    ids = [a.id for a in agents.agents]
    assert {"echo", "tools", "approval", "slow"} <= set(ids)
    approval = await h.stub.GetAgent(pb.GetAgentRequest(agent_id="approval"))
    assert list(approval.agent.approval_tools) == ["send_email"]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await h.stub.GetAgent(pb.GetAgentRequest(agent_id="nope"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def test_delete_only_finished_runs(h: Harness) -> None:
    running = await h.run("slow", "tokens=100 delay_ms=20")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await h.stub.DeleteRun(pb.DeleteRunRequest(run_id=running.id))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    done = await h.run("echo", "bye", wait=True)
    await h.stub.DeleteRun(pb.DeleteRunRequest(run_id=done.id))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await h.get(done.id)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert (await h.stub.ListRunEvents(pb.ListRunEventsRequest(run_id=running.id))).events


async def test_two_hundred_concurrent_slow_runs_complete(h: Harness) -> None:
    runs = await asyncio.gather(*(h.run("slow", "tokens=5 delay_ms=10", wait=True) for _ in range(200)))
    assert all(r.state == COMPLETED for r in runs)
    assert len({r.number for r in runs}) == 200


async def test_a_lagging_stream_catches_up_without_gaps(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    from server.engine import hub

    monkeypatch.setattr(hub, "QUEUE_BATCHES", 2)  # a tiny live queue: this reader will fall behind
    request = pb.RunRequest(agent_id="slow", input=run_pb2.RunInput(message="tokens=3000 delay_ms=0"))
    seen: list[run_pb2.RunEvent] = []
    async for response in h.stub.StreamRun(pb.StreamRunRequest(run=request)):
        seen.append(response.event)
        if len(seen) % 100 == 0:
            await asyncio.sleep(0.01)
    assert_well_formed(seen)
    assert len(seen) == 3002  # START, 3000 deltas, STOP


async def test_nested_metadata_is_stored_and_returned(h: Harness) -> None:
    metadata = struct_pb2.Struct()
    metadata.update({"family": "B", "config": {"model": "x", "tags": ["a", 1]}})
    run = await h.run("echo", "meta", wait=True, metadata=metadata)
    assert run.state == run_pb2.RUN_STATE_COMPLETED
    assert json_format.MessageToDict((await h.get(run.id)).metadata) == {
        "family": "B",
        "config": {"model": "x", "tags": ["a", 1.0]},
    }
