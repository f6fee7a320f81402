"""Authentication, tenants and fair use over gRPC: two tenants with API keys (and JWTs), every RPC
tried across tenants, without credentials and with a reader key; per-org limits."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import jwt
import pytest
from agentrun.v1 import run_pb2
from agentrun.v1 import run_service_pb2 as pb
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from common.errors import ResourceExhausted
from server.app import running
from server.auth import keys
from server.auth.identity import Identity
from server.auth.limits import LimitSettings, RateLimiter
from server.auth.settings import AuthSettings
from server.settings import Settings
from tests.conftest import Harness, Launcher
from tests.test_runs import details
from tests.waiting import until

S = run_pb2.RunState
Code = grpc.StatusCode
Metadata = tuple[tuple[str, str], ...]
SECRET = "test-hs256-secret-that-is-long-enough-for-sha256"
ISSUER, AUDIENCE = "https://idp.example.test", "agentrun"
RUN_SERVICE = pb.DESCRIPTOR.services_by_name["RunService"]


@dataclass
class Tenants:
    """acme: a user, a reader and an admin (keys file); globex: a user (AGENTRUN_API_KEYS)."""

    a_user: str
    a_reader: str
    a_admin: str
    b_user: str
    settings: AuthSettings


def bearer(key: str) -> Metadata:
    return (("authorization", f"Bearer {key}"),)


def keys_file_entry(text: str) -> tuple[str, str]:
    """(key, keys-file lines) from `agentrun keys create` output."""
    lines = text.splitlines()
    return lines[1], "\n".join(line for line in lines if line.startswith("  "))


@pytest.fixture
def tenants(tmp_path: Path) -> Tenants:
    made = {name: keys.create("acme", name, role) for name, role in [("alice", "user"), ("rita", "reader")]}
    made["ada"] = keys.create("acme", "ada", "admin")
    path = tmp_path / "keys.yaml"
    path.write_text("keys:\n" + "\n".join(keys_file_entry(text)[1] for _, text in made.values()) + "\n")
    b_key = keys.new_key()
    settings = AuthSettings(
        mode="on",
        keys_file=path,
        api_keys=f"globex:bob:user:sha256:{keys.hash_key(b_key)}",
        jwt_secret=SECRET,
        jwt_issuer=ISSUER,
        jwt_audience=AUDIENCE,
    )
    return Tenants(made["alice"][0], made["rita"][0], made["ada"][0], b_key, settings)


@pytest.fixture
async def h(launch: Launcher, tenants: Tenants) -> Harness:
    return await launch(auth=tenants.settings)


def run_request(agent: str, message: str, **fields: Any) -> pb.RunRequest:
    return pb.RunRequest(agent_id=agent, input=run_pb2.RunInput(message=message), **fields)


async def submit(h: Harness, key: str, agent: str, message: str, **fields: Any) -> run_pb2.Run:
    return (await h.stub.Run(run_request(agent, message, **fields), metadata=bearer(key))).run


async def drain(stream: AsyncIterator[pb.StreamRunResponse], seen: list[Any] | None = None) -> list[Any]:
    events = seen if seen is not None else []
    async for response in stream:
        events.append(response.event)
    return events


async def fails(call: Awaitable[Any], code: Code) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    assert caught.value.code() == code, caught.value.details()
    return caught.value


def update_run(ref: str, metadata: dict[str, Any]) -> pb.UpdateRunRequest:
    request = pb.UpdateRunRequest(run=run_pb2.Run(id=ref))
    request.run.metadata.update(metadata)
    request.update_mask.paths.append("metadata")
    return request


def every_rpc(s: Any, ref: str) -> dict[str, Callable[[Metadata], Awaitable[Any]]]:
    """One call of every RPC of stub `s` (StreamRun both ways), those taking a run on run `ref`."""
    return {
        "Run": lambda md: s.Run(run_request("echo", "hi"), metadata=md),
        "StreamRun": lambda md: drain(
            s.StreamRun(pb.StreamRunRequest(run=run_request("echo", "hi")), metadata=md)
        ),
        "StreamRun/attach": lambda md: drain(s.StreamRun(pb.StreamRunRequest(run_id=ref), metadata=md)),
        "GetRun": lambda md: s.GetRun(pb.GetRunRequest(run_id=ref), metadata=md),
        "BatchGetRuns": lambda md: s.BatchGetRuns(pb.BatchGetRunsRequest(run_ids=[ref]), metadata=md),
        "ListRuns": lambda md: s.ListRuns(pb.ListRunsRequest(), metadata=md),
        "Continue": lambda md: s.Continue(
            pb.ContinueRequest(run_id=ref, decision=run_pb2.DECISION_APPROVE), metadata=md
        ),
        "CancelRun": lambda md: s.CancelRun(pb.CancelRunRequest(run_id=ref), metadata=md),
        "UpdateRun": lambda md: s.UpdateRun(update_run(ref, {"note": "changed"}), metadata=md),
        "DeleteRun": lambda md: s.DeleteRun(pb.DeleteRunRequest(run_id=ref), metadata=md),
        "ListRunEvents": lambda md: s.ListRunEvents(pb.ListRunEventsRequest(run_id=ref), metadata=md),
        "ListAgents": lambda md: s.ListAgents(pb.ListAgentsRequest(), metadata=md),
        "GetAgent": lambda md: s.GetAgent(pb.GetAgentRequest(agent_id="echo"), metadata=md),
        "ListWebhookDeliveries": lambda md: s.ListWebhookDeliveries(
            pb.ListWebhookDeliveriesRequest(run_id=ref), metadata=md
        ),
        "RetryWebhookDelivery": lambda md: s.RetryWebhookDelivery(
            pb.RetryWebhookDeliveryRequest(run_id=ref, delivery_id="msg_x"), metadata=md
        ),
    }


RUN_SCOPED = [
    "StreamRun/attach",
    "GetRun",
    "Continue",
    "CancelRun",
    "UpdateRun",
    "DeleteRun",
    "ListRunEvents",
    "ListWebhookDeliveries",
    "RetryWebhookDelivery",
]
WRITES = ["Run", "StreamRun", "Continue", "CancelRun", "UpdateRun", "DeleteRun", "RetryWebhookDelivery"]


def test_the_table_covers_every_rpc() -> None:
    covered = {name.split("/")[0] for name in every_rpc(None, "x")}
    assert covered == set(RUN_SERVICE.methods_by_name)


# ---- isolation ------------------------------------------------------------------------------


async def test_another_tenants_run_is_not_found_like_a_missing_one(h: Harness, tenants: Tenants) -> None:
    paused = await submit(h, tenants.a_user, "approval", "send the report", wait=True)
    done = await submit(h, tenants.a_user, "echo", "secret words", wait=True)
    assert (paused.state, done.state, paused.org_id) == (S.RUN_STATE_PAUSED, S.RUN_STATE_COMPLETED, "acme")
    b = bearer(tenants.b_user)

    async def outcome(name: str, ref: str) -> tuple[Any, str, str]:
        error = await fails(every_rpc(h.stub, ref)[name](b), Code.NOT_FOUND)
        return error.code(), details(error)[0].reason, (error.details() or "").replace(ref, "<ref>")

    for name in RUN_SCOPED:
        missing = await outcome(name, "00000000-0000-0000-0000-000000000000")
        assert missing[1] == "RUN_NOT_FOUND"
        for run in (paused, done):
            for ref in (run.id, str(run.number)):
                assert await outcome(name, ref) == missing, (name, ref)
    batch = await h.stub.BatchGetRuns(
        pb.BatchGetRunsRequest(run_ids=[paused.id, str(done.number)]), metadata=b
    )
    assert not batch.runs and list(batch.missing_run_ids) == [paused.id, str(done.number)]
    listed = await h.stub.ListRuns(pb.ListRunsRequest(session_id=paused.session_id), metadata=b)
    assert not listed.runs and listed.total_size == 0
    assert not (await h.stub.ListRuns(pb.ListRunsRequest(), metadata=b)).runs
    # Nothing the other tenant tried changed anything.
    a = bearer(tenants.a_user)
    assert (
        await h.stub.GetRun(pb.GetRunRequest(run_id=paused.id), metadata=a)
    ).run.state == S.RUN_STATE_PAUSED
    unchanged = (await h.stub.GetRun(pb.GetRunRequest(run_id=done.id), metadata=a)).run
    assert unchanged.output == "secret words" and not unchanged.metadata
    mine = await h.stub.BatchGetRuns(pb.BatchGetRunsRequest(run_ids=[paused.id, done.id]), metadata=a)
    assert [r.id for r in mine.runs] == [paused.id, done.id]


async def test_reattaching_to_another_tenants_stream_reveals_nothing(h: Harness, tenants: Tenants) -> None:
    run = await submit(h, tenants.a_user, "slow", "tokens=40 delay_ms=20")
    for ref in (run.id, str(run.number)):
        seen: list[Any] = []
        stream = h.stub.StreamRun(pb.StreamRunRequest(run_id=ref), metadata=bearer(tenants.b_user))
        error = await fails(drain(stream, seen), Code.NOT_FOUND)
        assert seen == [] and details(error)[0].reason == "RUN_NOT_FOUND"
    # Its own tenant streams it to the end.
    own = h.stub.StreamRun(pb.StreamRunRequest(run_id=run.id), metadata=bearer(tenants.a_user))
    events = await drain(own)
    assert events[0].type == run_pb2.EVENT_TYPE_START and events[-1].type == run_pb2.EVENT_TYPE_STOP


async def test_a_body_claiming_another_org_is_ignored(h: Harness, tenants: Tenants) -> None:
    run = await submit(h, tenants.a_user, "echo", "hi", wait=True, org_id="globex", user_id="mallory")
    assert (run.org_id, run.user_id) == ("acme", "alice")
    events = await drain(
        h.stub.StreamRun(
            pb.StreamRunRequest(run=run_request("echo", "hi", org_id="globex")),
            metadata=bearer(tenants.a_user),
        )
    )
    streamed = await h.stub.GetRun(pb.GetRunRequest(run_id=events[0].run_id), metadata=bearer(tenants.a_user))
    assert streamed.run.org_id == "acme"
    for ref in (run.id, events[0].run_id):
        await fails(
            h.stub.GetRun(pb.GetRunRequest(run_id=ref), metadata=bearer(tenants.b_user)), Code.NOT_FOUND
        )
    # An admin may attribute a run to another user, never to another org.
    on_behalf = await submit(h, tenants.a_admin, "echo", "hi", wait=True, org_id="globex", user_id="carol")
    assert (on_behalf.org_id, on_behalf.user_id) == ("acme", "carol")
    # A user's listing filters cannot reach outside its org either.
    assert not (
        await h.stub.ListRuns(pb.ListRunsRequest(user_id="alice"), metadata=bearer(tenants.b_user))
    ).runs


async def test_idempotency_keys_and_sessions_belong_to_one_org(h: Harness, tenants: Tenants) -> None:
    a_run = await submit(
        h, tenants.a_user, "ai-echo", "first", wait=True, idempotency_key="k1", session_id="s1"
    )
    b_run = await submit(h, tenants.b_user, "echo", "other", wait=True, idempotency_key="k1", session_id="s1")
    assert a_run.id != b_run.id and b_run.output == "other"
    # A session id another org also uses shows none of that org's history to the agent.
    store = h.server.engine.store
    assert [p.input["message"] for p in await store.session_history("s1", "acme", 10**9)] == ["first"]
    assert [p.input["message"] for p in await store.session_history("s1", "globex", 10**9)] == ["other"]
    # ... and acme's paused run in that session does not hold globex's runs back.
    paused = await submit(h, tenants.a_user, "approval", "send it", wait=True, session_id="s2")
    assert paused.state == S.RUN_STATE_PAUSED
    b = bearer(tenants.b_user)
    async with asyncio.timeout(10):
        after = await submit(h, tenants.b_user, "echo", "not blocked", wait=True, session_id="s2")
        queued = await submit(h, tenants.b_user, "echo", "nor via the queue", session_id="s2")
        while queued.state != S.RUN_STATE_COMPLETED:
            await asyncio.sleep(0.02)
            queued = (await h.stub.GetRun(pb.GetRunRequest(run_id=queued.id), metadata=b)).run
    assert after.state == S.RUN_STATE_COMPLETED


# ---- authentication and roles ----------------------------------------------------------------


async def test_every_rpc_needs_valid_credentials(h: Harness, tenants: Tenants) -> None:
    run = await submit(h, tenants.a_user, "echo", "hi", wait=True)
    calls = every_rpc(h.stub, run.id)
    wrong = [bearer("ar_not-a-key"), (("x-api-key", "ar_not-a-key"),), (("authorization", "Basic YTpi"),)]
    for name, call in calls.items():
        error = await fails(call(()), Code.UNAUTHENTICATED)
        assert details(error)[0].reason == "UNAUTHENTICATED", name
        for md in wrong:
            error = await fails(call(md), Code.UNAUTHENTICATED)
            assert details(error)[0].reason == "INVALID_CREDENTIALS", (name, md)
    # x-api-key works as well as a bearer key.
    got = await h.stub.GetRun(pb.GetRunRequest(run_id=run.id), metadata=(("x-api-key", tenants.a_user),))
    assert got.run.id == run.id


async def test_health_and_reflection_need_no_credentials(h: Harness) -> None:
    health = health_pb2_grpc.HealthStub(h.channel)
    for service in ("", RUN_SERVICE.full_name):
        reply = await health.Check(health_pb2.HealthCheckRequest(service=service))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    reflect = reflection_pb2_grpc.ServerReflectionStub(h.channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    replies = [r async for r in reflect.ServerReflectionInfo(iter([request]))]
    assert RUN_SERVICE.full_name in {s.name for s in replies[0].list_services_response.service}
    await fails(h.stub.ListAgents(pb.ListAgentsRequest()), Code.UNAUTHENTICATED)


async def test_a_reader_reads_but_cannot_change_anything(h: Harness, tenants: Tenants) -> None:
    paused = await submit(h, tenants.a_user, "approval", "send the report", wait=True)
    calls = every_rpc(h.stub, paused.id)
    reader = bearer(tenants.a_reader)
    for name in WRITES:
        error = await fails(calls[name](reader), Code.PERMISSION_DENIED)
        assert details(error)[0].metadata["role"] == "reader", name
    for name in set(calls) - set(WRITES) - {"StreamRun/attach"}:
        await calls[name](reader)
    assert (
        await h.stub.GetRun(pb.GetRunRequest(run_id=paused.id), metadata=reader)
    ).run.state == S.RUN_STATE_PAUSED
    listed = await h.stub.ListRuns(pb.ListRunsRequest(), metadata=reader)
    assert [r.id for r in listed.runs] == [paused.id]  # the reader's own Run attempts stored nothing
    # Re-attaching is a read: the paused run's stream ends with PAUSED.
    events = await calls["StreamRun/attach"](reader)
    assert events[-1].type == run_pb2.EVENT_TYPE_PAUSED
    # The same calls with a user key go through.
    assert not (await h.stub.GetRun(pb.GetRunRequest(run_id=paused.id), metadata=reader)).run.metadata
    noted = await calls["UpdateRun"](bearer(tenants.a_user))
    assert (noted.run.state, noted.run.metadata["note"]) == (S.RUN_STATE_PAUSED, "changed")
    decided = await calls["Continue"](bearer(tenants.a_user))
    assert decided.run.state in (S.RUN_STATE_QUEUED, S.RUN_STATE_RUNNING, S.RUN_STATE_COMPLETED)


def token(**claims: Any) -> str:
    now = int(time.time())
    body: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "ida",
        "org": "initech",
        "role": "user",
        "exp": now + 300,
    }
    body |= claims
    secret = body.pop("secret", SECRET)
    return jwt.encode({k: v for k, v in body.items() if v is not None}, secret, algorithm="HS256")


async def test_jwt_bearer_tokens(h: Harness) -> None:
    run = await submit(h, token(), "echo", "from a token", wait=True, org_id="acme")
    assert (run.org_id, run.user_id, run.output) == ("initech", "ida", "from a token")
    got = await h.stub.GetRun(pb.GetRunRequest(run_id=run.id), metadata=bearer(token(sub="ivan")))
    assert got.run.id == run.id  # same org, another user: the tenant is the org
    await fails(
        h.stub.GetRun(pb.GetRunRequest(run_id=run.id), metadata=bearer(token(org="acme"))), Code.NOT_FOUND
    )
    reader = bearer(token(role="reader"))
    await fails(h.stub.CancelRun(pb.CancelRunRequest(run_id=run.id), metadata=reader), Code.PERMISSION_DENIED)
    bad = {
        "expired": token(exp=int(time.time()) - 120),
        "wrong audience": token(aud="someone-else"),
        "wrong issuer": token(iss="https://evil.example"),
        "wrong secret": token(secret="another-secret-another-secret-another"),
        "no exp": token(exp=None),
        "no org": token(org=None),
        "unknown role": token(role="root"),
        "alg none": jwt.encode(
            {"iss": ISSUER, "aud": AUDIENCE, "org": "initech", "sub": "x", "exp": int(time.time()) + 60},
            "",
            algorithm="none",
        ),
    }
    for why, value in bad.items():
        error = await fails(
            h.stub.ListAgents(pb.ListAgentsRequest(), metadata=bearer(value)), Code.UNAUTHENTICATED
        )
        assert details(error)[0].reason == "INVALID_CREDENTIALS", why
    error = await fails(
        h.stub.ListAgents(pb.ListAgentsRequest(), metadata=bearer(bad["expired"])), Code.UNAUTHENTICATED
    )
    assert "expired" in (error.details() or "")


# ---- fair use -----------------------------------------------------------------------------


async def states_of(h: Harness, key: str) -> list[int]:
    return [r.state for r in (await h.stub.ListRuns(pb.ListRunsRequest(), metadata=bearer(key))).runs]


async def test_an_org_at_its_running_cap_does_not_delay_other_orgs(
    launch: Launcher, tenants: Tenants
) -> None:
    # Two workers: with one busy, a claim has room for one run, and acme's waiting runs are older.
    h = await launch(auth=tenants.settings, limits=LimitSettings(max_running=1), workers=2)
    most_running = 0

    async def watch() -> None:
        nonlocal most_running
        while True:
            most_running = max(most_running, (await states_of(h, tenants.a_user)).count(S.RUN_STATE_RUNNING))
            await asyncio.sleep(0.02)

    async def acme_states(states: list[Any]) -> None:
        async def reached() -> bool:
            return sorted(await states_of(h, tenants.a_user)) == states

        await until(reached, what=f"acme's runs in states {states}")

    watcher = asyncio.create_task(watch())
    try:
        await _globex_goes_ahead(h, tenants, acme_states)
    finally:
        watcher.cancel()
    assert most_running == 1


async def _globex_goes_ahead(h: Harness, tenants: Tenants, acme_states: Any) -> None:
    slow = "tokens=20 delay_ms=50"  # about a second
    # acme's first run would take 10 s; it is cancelled once globex has been served.
    a_runs = [asyncio.create_task(submit(h, tenants.a_user, "slow", "tokens=200 delay_ms=50", wait=True))]
    await acme_states([S.RUN_STATE_RUNNING])
    listed = await h.stub.ListRuns(pb.ListRunsRequest(), metadata=bearer(tenants.a_user))
    [first_id] = [r.id for r in listed.runs]
    # One that would start at once but for the cap, and one through the queue.
    a_runs.append(asyncio.create_task(submit(h, tenants.a_user, "slow", slow, wait=True)))
    a_runs.append(asyncio.create_task(submit(h, tenants.a_user, "slow", slow)))
    await acme_states([S.RUN_STATE_QUEUED] * 2 + [S.RUN_STATE_RUNNING])
    b_sync = await submit(h, tenants.b_user, "echo", "no waiting", wait=True)
    b_background = await submit(h, tenants.b_user, "echo", "none here either")

    async def b_done() -> bool:
        got = await h.stub.GetRun(pb.GetRunRequest(run_id=b_background.id), metadata=bearer(tenants.b_user))
        return got.run.state == S.RUN_STATE_COMPLETED

    await until(b_done, what="globex's background run")
    assert not a_runs[0].done()
    a_states = await states_of(h, tenants.a_user)
    assert b_sync.state == S.RUN_STATE_COMPLETED
    assert a_states.count(S.RUN_STATE_QUEUED) == 2, a_states  # globex went ahead of acme's waiting runs
    # acme's waiting runs did not keep globex's run from starting at once (no trip through the queue).
    assert b_sync.start_time == b_sync.create_time
    await h.stub.CancelRun(pb.CancelRunRequest(run_id=first_id), metadata=bearer(tenants.a_user))
    first, second = await asyncio.gather(*a_runs[:2])
    assert (first.state, second.state) == (S.RUN_STATE_CANCELLED, S.RUN_STATE_COMPLETED)
    await acme_states(sorted([S.RUN_STATE_CANCELLED, S.RUN_STATE_COMPLETED, S.RUN_STATE_COMPLETED]))


def retry_after(error: grpc.aio.AioRpcError) -> tuple[str, str]:
    """(ErrorInfo metadata retry_after, trailing metadata retry-after)."""
    pairs: Any = error.trailing_metadata() or ()  # aio Metadata: (key, value) pairs
    trailing = dict(pairs)
    return details(error)[0].metadata["retry_after"], str(trailing.get("retry-after"))


async def test_a_full_queue_refuses_more_runs_of_that_org(launch: Launcher, tenants: Tenants) -> None:
    h = await launch(auth=tenants.settings, limits=LimitSettings(max_running=1, max_queued=2))
    first = await submit(h, tenants.a_user, "slow", "tokens=200 delay_ms=20")
    for _ in range(100):
        if (await states_of(h, tenants.a_user)) == [S.RUN_STATE_RUNNING]:
            break
        await asyncio.sleep(0.02)
    queued = [await submit(h, tenants.a_user, "echo", f"q{i}", idempotency_key=f"q{i}") for i in range(2)]
    assert [r.state for r in queued] == [S.RUN_STATE_QUEUED] * 2
    error = await fails(submit(h, tenants.a_user, "echo", "one too many"), Code.RESOURCE_EXHAUSTED)
    assert details(error)[0].reason == "QUEUE_FULL" and retry_after(error) == ("1", "1")
    stream = h.stub.StreamRun(
        pb.StreamRunRequest(run=run_request("echo", "x")), metadata=bearer(tenants.a_user)
    )
    await fails(drain(stream), Code.RESOURCE_EXHAUSTED)
    # A replay of a stored submission is still answered; another org is not affected.
    again = await submit(h, tenants.a_user, "echo", "q0", idempotency_key="q0")
    assert again.id == queued[0].id
    assert (await submit(h, tenants.b_user, "echo", "fine", wait=True)).state == S.RUN_STATE_COMPLETED
    assert len(await states_of(h, tenants.a_user)) == 3  # the refused submissions stored nothing
    await h.stub.CancelRun(pb.CancelRunRequest(run_id=first.id), metadata=bearer(tenants.a_user))


async def test_over_rate_submissions_are_resource_exhausted(launch: Launcher, tenants: Tenants) -> None:
    # A token back every 20 s: however slow this machine is, none comes back during the test.
    h = await launch(auth=tenants.settings, limits=LimitSettings(submit_rate=0.05, submit_burst=2))
    for i in range(2):
        await submit(h, tenants.a_user, "echo", f"ok {i}")
    error = await fails(submit(h, tenants.a_user, "echo", "too fast"), Code.RESOURCE_EXHAUSTED)
    # 20 s for a whole token, less whatever of one came back since the first submission (the exact
    # figure is test_token_bucket_refills_at_the_rate's, on a clock of its own).
    header, detail = retry_after(error)
    assert details(error)[0].reason == "RATE_LIMITED" and header == detail and 1 <= int(header) <= 20
    stream = h.stub.StreamRun(
        pb.StreamRunRequest(run=run_request("echo", "x")), metadata=bearer(tenants.a_user)
    )
    await fails(drain(stream), Code.RESOURCE_EXHAUSTED)
    # Reads are not submissions, and the other org has its own bucket.
    await h.stub.ListRuns(pb.ListRunsRequest(), metadata=bearer(tenants.a_user))
    assert (await submit(h, tenants.b_user, "echo", "mine", wait=True)).state == S.RUN_STATE_COMPLETED


def test_token_bucket_refills_at_the_rate() -> None:
    now = [100.0]
    limiter = RateLimiter(LimitSettings(submit_rate=4, submit_burst=2), clock=lambda: now[0])
    limiter.admit("a")
    limiter.admit("a")
    with pytest.raises(ResourceExhausted) as caught:
        limiter.admit("a")
    assert caught.value.retry_after_s == 1 and caught.value.trailers() == (("retry-after", "1"),)
    limiter.admit("b")  # per org
    now[0] += 0.25  # one token back at 4 per second
    limiter.admit("a")
    with pytest.raises(ResourceExhausted):
        limiter.admit("a")
    slow = RateLimiter(LimitSettings(submit_rate=0.25), clock=lambda: now[0])
    slow.admit("a")
    with pytest.raises(ResourceExhausted) as caught:
        slow.admit("a")
    assert caught.value.metadata["retry_after"] == "4"
    RateLimiter(LimitSettings()).admit("a")  # 0: unlimited


# ---- keys, JWT keys and startup rules --------------------------------------------------------


async def test_a_created_key_works_once_added_to_the_keys_file(launch: Launcher, tmp_path: Path) -> None:
    command = [
        sys.executable,
        "-m",
        "cli",
        "keys",
        "create",
        "--org",
        "acme",
        "--user",
        "zoe",
        "--role",
        "user",
    ]
    done = await asyncio.to_thread(subprocess.run, command, capture_output=True, text=True, check=True)
    out = done.stdout
    key, entry = keys_file_entry(out)
    assert key.startswith("ar_") and key not in entry and "sha256:" in entry
    path = tmp_path / "keys.yaml"
    path.write_text("keys:\n" + entry + "\n")
    h = await launch(auth=AuthSettings(mode="on", keys_file=path))
    run = await submit(h, key, "echo", "hello", wait=True)
    assert (run.org_id, run.user_id, run.output) == ("acme", "zoe", "hello")
    await fails(submit(h, key[:-1] + "x", "echo", "hello"), Code.UNAUTHENTICATED)


def test_keys_configuration_is_checked() -> None:
    key = keys.new_key()
    ring = keys.KeyRing.load(None, f"acme:al:admin:{key}, globex:bo:reader:sha256:{keys.hash_key('k2')}")
    assert ring.lookup(key) == Identity("acme", "al", "admin")
    assert ring.lookup("k2") == Identity("globex", "bo", "reader") and ring.lookup("k3") is None
    for bad in [
        "acme:al:root:x",
        "acme:al:user",
        "ac me:al:user:x",
        "acme:al:user:sha256:nothex",
        "a:b:user:k,c:d:user:k",
    ]:
        with pytest.raises(keys.AuthConfigError):
            keys.KeyRing.load(None, bad)
    with pytest.raises(keys.AuthConfigError):
        keys.create("acme", "al", "superuser")


def test_a_keys_file_holds_hashes_only(tmp_path: Path) -> None:
    path = tmp_path / "keys.yaml"
    path.write_text("keys:\n  - {key: ar_plain, org: acme, user: al, role: user}\n")
    with pytest.raises(keys.AuthConfigError, match="hashes only"):
        keys.KeyRing.load(path, "")
    path.write_text("keys: nope\n")
    with pytest.raises(keys.AuthConfigError):
        keys.KeyRing.load(path, "")


def test_rs256_tokens_are_checked_with_the_public_key(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    from server.auth.tokens import InvalidToken, JwtVerifier

    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (tmp_path / "idp.pem").write_bytes(pem)
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "u1", "tenant": "t1", "exp": int(time.time()) + 60}
    for source in (pem.decode(), str(tmp_path / "idp.pem")):
        settings = AuthSettings(
            jwt_public_key=source,
            jwt_issuer=ISSUER,
            jwt_audience=AUDIENCE,
            jwt_org_claim="tenant",
            jwt_default_role="reader",
        )
        verifier = JwtVerifier(settings)
        identity = verifier.verify(jwt.encode(claims, private, algorithm="RS256"))
        assert (identity.org_id, identity.user_id, identity.role) == ("t1", "u1", "reader")
        # A token signed with the public key as an HS256 secret (algorithm confusion) is refused.
        with pytest.raises(InvalidToken):
            verifier.verify(jwt.encode(claims, SECRET, algorithm="HS256"))


def test_auth_is_off_only_on_loopback() -> None:
    from server.auth.settings import resolve

    keyed = AuthSettings(mode="auto", api_keys=f"acme:al:user:{keys.new_key()}")
    assert resolve(AuthSettings(mode="auto"), "127.0.0.1:50051").mode == "off"
    assert resolve(AuthSettings(mode="auto"), "localhost:0").mode == "off"
    assert resolve(AuthSettings(mode="off"), "[::1]:50051").mode == "off"
    assert resolve(keyed, "0.0.0.0:50051").mode == "on"
    assert resolve(AuthSettings(mode="auto", jwt_secret=SECRET), "10.0.0.5:50051").mode == "on"
    for auth, listen in [
        (AuthSettings(mode="auto"), "0.0.0.0:50051"),
        (AuthSettings(mode="auto"), "[::]:50051"),
        (AuthSettings(mode="off"), "agentrun.internal:50051"),
        (AuthSettings(mode="on"), "127.0.0.1:50051"),  # on, but nobody could authenticate
        (AuthSettings(mode="maybe"), "127.0.0.1:50051"),
    ]:
        with pytest.raises(keys.AuthConfigError):
            resolve(auth, listen)


async def test_a_reachable_server_without_keys_refuses_to_start() -> None:
    with pytest.raises(keys.AuthConfigError, match="refusing to serve"):
        async with running(Settings(listen="0.0.0.0:0", database_url="sqlite:///:memory:")):
            pass


def test_the_command_line_refuses_a_reachable_address_without_keys() -> None:
    for flags in ([], ["--auth", "off"]):
        command = [sys.executable, "-m", "cli", "serve", "--no-gateway", "--listen", "0.0.0.0:0", *flags]
        done = subprocess.run(command, capture_output=True, text=True, timeout=60)
        assert done.returncode == 1 and "refusing to serve 0.0.0.0:0 without authentication" in done.stderr
