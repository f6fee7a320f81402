"""Completion webhooks against a real local HTTP receiver: the outbox, signing, retries, restarts, the
URL policy, and delivery exactly once per webhook-id under load."""

from __future__ import annotations

import asyncio
import json
import socket
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from agentrun.v1 import run_pb2, run_service_pb2_grpc
from agentrun.v1 import run_service_pb2 as pb
from aiohttp import web
from google.protobuf import duration_pb2
from standardwebhooks.webhooks import Webhook

from server.app import running
from server.urlpolicy import PolicyResolver, UrlPolicy
from server.webhooks.deliverer import WebhookSettings
from tests.conftest import Harness, Launcher, server_settings
from tests.waiting import until

SECRET = "whsec_" + "c2VjcmV0LWZvci10ZXN0cy0xMjM0NTY3ODkw"
FAST = WebhookSettings(secret=SECRET, allow="127.0.0.1", backoff_s=0.05, poll_interval_s=0.05, timeout_s=2)
D = run_pb2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Receiver:
    """A webhook receiver: answers with the scripted statuses in order, then 200."""

    port: int = field(default_factory=free_port)
    statuses: list[int] = field(default_factory=list)
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def _hook(self, request: web.Request) -> web.Response:
        self.received.append(({k.lower(): v for k, v in request.headers.items()}, await request.read()))
        return web.Response(status=self.statuses.pop(0) if self.statuses else 200)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._hook)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(body) for _, body in self.received]

    def ids(self) -> list[str]:
        return [headers["webhook-id"] for headers, _ in self.received]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    await r.start()
    yield r
    await r.stop()


@pytest.fixture
async def h(launch: Launcher) -> Harness:
    return await launch(webhooks=FAST)


async def deliveries(h: Harness, run_id: str) -> list[run_pb2.WebhookDelivery]:
    return list(
        (await h.stub.ListWebhookDeliveries(pb.ListWebhookDeliveriesRequest(run_id=run_id))).deliveries
    )


async def state_of(h: Harness, run_id: str, state: int) -> bool:
    """Whether the run's only delivery is in `state`."""
    return [d.state for d in await deliveries(h, run_id)] == [state]


async def test_each_terminal_state_is_delivered_signed(h: Harness, receiver: Receiver) -> None:
    completed = await h.run("echo", "hello", wait=True, webhook_url=receiver.url)
    failed = await h.run(
        "slow",
        "tokens=50 delay_ms=50",
        wait=True,
        webhook_url=receiver.url,
        timeout=duration_pb2.Duration(nanos=2 * 10**8),
    )
    queued = await h.run("slow", "tokens=50 delay_ms=50", webhook_url=receiver.url)
    cancelled = (await h.stub.CancelRun(pb.CancelRunRequest(run_id=queued.id))).run
    assert (completed.state, failed.state, cancelled.state) == (
        D.RUN_STATE_COMPLETED,
        D.RUN_STATE_FAILED,
        D.RUN_STATE_CANCELLED,
    )
    await until(lambda: len(receiver.received) == 3)

    verifier = Webhook(SECRET)
    states = {}
    for headers, body in receiver.received:
        assert headers["content-type"] == "application/json"
        payload = verifier.verify(body, headers)  # raises unless the signature matches
        states[payload["id"]] = payload["state"]
    assert states == {
        completed.id: "RUN_STATE_COMPLETED",
        failed.id: "RUN_STATE_FAILED",
        cancelled.id: "RUN_STATE_CANCELLED",
    }
    tampered_headers, body = receiver.received[0]
    with pytest.raises(Exception, match="signature"):
        verifier.verify(body.replace(b"hello", b"HELLO"), tampered_headers)
    run = await h.get(completed.id)
    assert run.webhook_delivery.state == D.WEBHOOK_DELIVERY_STATE_DELIVERED
    assert run.webhook_delivery.attempts[0].status_code == 200


async def test_family_formats(h: Harness, receiver: Receiver) -> None:
    job = await h.run(
        "echo", "a job", wait=True, webhook_url=receiver.url, webhook_format=D.WEBHOOK_FORMAT_JOB
    )
    task = await h.run(
        "tools",
        "what is 2 + 3",
        wait=True,
        webhook_url=receiver.url,
        webhook_format=D.WEBHOOK_FORMAT_AGENT_RESPONSE,
    )
    await until(lambda: len(receiver.received) == 2)
    by_kind = {("job_id" in b): b for b in receiver.bodies()}
    assert by_kind[True]["job_id"] == job.id and by_kind[True]["status"] == "succeeded"
    assert by_kind[True]["result"] == "a job" and by_kind[True]["error"] is None
    assert by_kind[True]["duration_seconds"] >= 0 and by_kind[True]["completed_at"].endswith("+00:00")
    response = by_kind[False]
    assert (response["task_id"], response["task_run_id"]) == (task.number, task.number)
    assert (response["is_done"], response["is_successful"], response["status"]) == (True, True, "success")
    assert response["history"][0]["actions"][0]["name"] == "calculator"
    assert response["history"][-1]["actions"][0]["is_done"] is True


async def test_retries_until_the_receiver_takes_it(h: Harness, receiver: Receiver) -> None:
    receiver.statuses = [500, 500, 500]
    run = await h.run("echo", "retry me", wait=True, webhook_url=receiver.url)
    await until(lambda: len(receiver.received) == 4)
    assert len(set(receiver.ids())) == 1  # one logical delivery
    await until(lambda: state_of(h, run.id, D.WEBHOOK_DELIVERY_STATE_DELIVERED), what="DELIVERED")
    assert len(receiver.received) == 4  # nothing after the 200 (a DELIVERED row is never claimed)
    [delivery] = await deliveries(h, run.id)
    assert [a.status_code for a in delivery.attempts] == [500, 500, 500, 200]
    assert delivery.attempts[0].error == "receiver answered HTTP 500" and delivery.id == receiver.ids()[0]


async def test_gives_up_after_the_limit_and_can_be_sent_again(launch: Launcher, receiver: Receiver) -> None:
    h = await launch(webhooks=WebhookSettings(**{**FAST.__dict__, "max_attempts": 2}))
    receiver.statuses = [503, 503]
    run = await h.run("echo", "fail me", wait=True, webhook_url=receiver.url)
    await until(lambda: state_of(h, run.id, D.WEBHOOK_DELIVERY_STATE_FAILED), what="FAILED")
    [delivery] = await deliveries(h, run.id)
    assert delivery.state == D.WEBHOOK_DELIVERY_STATE_FAILED and len(delivery.attempts) == 2
    assert len(receiver.received) == 2
    assert (await h.get(run.id)).webhook_delivery.state == D.WEBHOOK_DELIVERY_STATE_FAILED

    retry = pb.RetryWebhookDeliveryRequest(run_id=run.id, delivery_id=delivery.id)
    assert (await h.stub.RetryWebhookDelivery(retry)).delivery.state == D.WEBHOOK_DELIVERY_STATE_PENDING
    await until(lambda: state_of(h, run.id, D.WEBHOOK_DELIVERY_STATE_DELIVERED), what="DELIVERED")
    assert len(receiver.received) == 3
    [delivery] = await deliveries(h, run.id)
    assert delivery.state == D.WEBHOOK_DELIVERY_STATE_DELIVERED and len(delivery.attempts) == 3
    assert len(set(receiver.ids())) == 1
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await h.stub.RetryWebhookDelivery(
            pb.RetryWebhookDeliveryRequest(run_id=run.id, delivery_id="msg_nope")
        )
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND


async def test_a_receiver_down_across_a_restart_still_gets_it(durable_url: str) -> None:
    receiver = Receiver()  # not listening yet: connections are refused
    settings = server_settings(durable_url, webhooks=WebhookSettings(**{**FAST.__dict__, "backoff_s": 0.2}))
    async with running(settings) as server, grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = run_service_pb2_grpc.RunServiceStub(channel)
        request = pb.RunRequest(
            agent_id="echo", input=D.RunInput(message="later"), wait=True, webhook_url=receiver.url
        )
        run = (await stub.Run(request)).run
        listing = pb.ListWebhookDeliveriesRequest(run_id=run.id)

        async def attempted() -> bool:
            return bool((await stub.ListWebhookDeliveries(listing)).deliveries[0].attempts)

        await until(attempted, what="the first attempt to be recorded")
        [delivery] = (await stub.ListWebhookDeliveries(listing)).deliveries
        assert delivery.state == D.WEBHOOK_DELIVERY_STATE_PENDING
        assert delivery.attempts[0].status_code == 0  # refused, recorded
    await receiver.start()
    try:
        async with running(settings):
            await until(lambda: len(receiver.received) == 1)
        assert receiver.bodies()[0]["id"] == run.id
    finally:
        await receiver.stop()


async def test_non_public_urls_are_refused_at_submission(launch: Launcher, receiver: Receiver) -> None:
    strict = await launch(webhooks=WebhookSettings(secret=SECRET))
    for url in (receiver.url, "http://localhost:9/x", "http://10.0.0.1/x", "ftp://example.com/x"):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await strict.run("echo", "hi", webhook_url=url)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "webhook_url" in (caught.value.details() or "")
    assert (await strict.stub.ListRuns(pb.ListRunsRequest())).total_size == 0


async def test_the_policy_is_applied_again_at_send_time(durable_url: str) -> None:
    """Accepted by a server that allow-lists the receiver, sent by one that does not: refused."""
    receiver = Receiver()  # not listening: the first server's attempt fails and is retried later
    lenient = server_settings(durable_url, webhooks=WebhookSettings(**{**FAST.__dict__, "backoff_s": 0.1}))
    async with running(lenient) as server, grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = run_service_pb2_grpc.RunServiceStub(channel)
        request = pb.RunRequest(
            agent_id="echo", input=D.RunInput(message="x"), wait=True, webhook_url=receiver.url
        )
        run = (await stub.Run(request)).run
        listing = pb.ListWebhookDeliveriesRequest(run_id=run.id)

        async def attempted() -> bool:
            return bool((await stub.ListWebhookDeliveries(listing)).deliveries[0].attempts)

        await until(attempted, what="the lenient server's attempt to be recorded")
    await receiver.start()
    try:
        strict = server_settings(durable_url, webhooks=WebhookSettings(backoff_s=0.05, poll_interval_s=0.05))
        async with (
            running(strict) as server,
            grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel,
        ):
            stub = run_service_pb2_grpc.RunServiceStub(channel)

            async def refused() -> bool:
                [d] = (await stub.ListWebhookDeliveries(listing)).deliveries
                return any(a.error.startswith("refused: URL points to a non-public") for a in d.attempts)

            await until(refused, what="the strict server to refuse the URL")
        assert receiver.received == []
    finally:
        await receiver.stop()


async def test_the_connect_time_check_refuses_names_of_private_addresses() -> None:
    resolver = PolicyResolver(UrlPolicy())
    with pytest.raises(OSError, match="non-public"):
        await resolver.resolve("localhost", 80)
    assert await PolicyResolver(UrlPolicy(("localhost",))).resolve("localhost", 80)
    await resolver.close()


async def test_a_hundred_runs_are_each_delivered_once(h: Harness, receiver: Receiver) -> None:
    runs = await asyncio.gather(*(h.run("echo", f"load {i}", webhook_url=receiver.url) for i in range(100)))
    await until(lambda: len(receiver.received) >= 100, timeout=30)
    await asyncio.sleep(0.3)
    counts = Counter(receiver.ids())
    assert len(counts) == 100 and set(counts.values()) == {1}
    assert {b["id"] for b in receiver.bodies()} == {r.id for r in runs}
