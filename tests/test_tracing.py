"""Traces: one trace per run, from the gateway's request span through the gRPC call's span to the
run's span and its tool and model calls, continued across the queue (the run's row carries the
trace) and into its webhooks (`traceparent`). Spans go to the SDK's in-memory exporter."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import httpx
import pytest
from aiohttp import web
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from common.local_channel import LocalChannel
from gateway.app import running_gateway
from gateway.families import all_families
from gateway.settings import GatewaySettings
from server.agents.pydantic_agent import trace_model_calls
from server.webhooks.deliverer import WebhookSettings
from tests.conftest import Harness, Launcher
from tests.waiting import until

CALLER = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
CALLER_TRACE = int("0af7651916cd43dd8448eb211c80319c", 16)
_EXPORTER = InMemorySpanExporter()


@pytest.fixture(scope="module")
def provider() -> Iterator[None]:
    """The process's tracer provider can be set once: the first test module to ask sets it."""
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        sdk = TracerProvider()
        sdk.add_span_processor(SimpleSpanProcessor(_EXPORTER))
        trace.set_tracer_provider(sdk)
        trace_model_calls()
    yield


@pytest.fixture
def spans(provider: None) -> Iterator[InMemorySpanExporter]:
    _EXPORTER.clear()
    yield _EXPORTER
    _EXPORTER.clear()


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'agentrun.db'}"


@pytest.fixture(params=["inprocess", "grpc"])
async def http(
    launch: Launcher, request: pytest.FixtureRequest
) -> AsyncIterator[tuple[Harness, httpx.AsyncClient]]:
    """A gateway in front of a server: in process (`agentrun serve`) or over loopback gRPC."""
    webhooks = WebhookSettings(allow="127.0.0.1", backoff_s=0.05)
    h = await launch(webhooks=webhooks)
    config = GatewaySettings(listen="127.0.0.1:0", upstream=f"127.0.0.1:{h.server.port}")
    local = h.server.local if request.param == "inprocess" else None
    channel = LocalChannel(local) if local is not None else None
    async with (
        running_gateway(config, all_families(), None, channel) as gateway,
        httpx.AsyncClient(base_url=gateway.url) as client,
    ):
        yield h, client


def of_trace(spans: InMemorySpanExporter, trace_id: int) -> list[ReadableSpan]:
    return [s for s in spans.get_finished_spans() if s.context is not None and s.context.trace_id == trace_id]


def parent_name(span: ReadableSpan, family: list[ReadableSpan]) -> str:
    by_id = {s.context.span_id: s.name for s in family if s.context is not None}
    return by_id.get(span.parent.span_id, "?") if span.parent is not None else ""


async def test_a_run_is_one_trace_from_the_request_to_its_tool_calls(
    spans: InMemorySpanExporter, http: tuple[Harness, httpx.AsyncClient]
) -> None:
    _, client = http
    body = {"input": {"message": "what is 6*7?"}, "wait": True}
    reply = await client.post("/v1/agents/tools/runs", json=body, headers={"traceparent": CALLER})
    assert reply.json()["run"]["state"] == "RUN_STATE_COMPLETED"
    await until(lambda: any(s.name == "run tools" for s in spans.get_finished_spans()), what="the run span")

    family = of_trace(spans, CALLER_TRACE)
    tree = {s.name: parent_name(s, family) for s in family}
    assert tree["POST /v1/agents/{agent_id}/runs"] == "?"  # the caller's span, not exported here
    assert tree["agentrun.v1.RunService/Run"] == "POST /v1/agents/{agent_id}/runs"
    assert tree["run tools"] == "agentrun.v1.RunService/Run"
    assert tree["tool calculator"] == "run tools"


async def test_a_queued_run_and_its_webhook_continue_the_trace(
    spans: InMemorySpanExporter, http: tuple[Harness, httpx.AsyncClient]
) -> None:
    """A background run is claimed from the queue (no shared task): its row carries the trace. A
    pydantic-ai agent's model calls are children of the run's span; its webhook carries the trace."""
    _, client = http
    received: list[str] = []

    async def hook(request: web.Request) -> web.Response:
        received.append(request.headers.get("traceparent", ""))
        return web.Response()

    async with _receiver(hook) as url:
        body = {"input": {"message": "hello"}, "webhook_url": url}
        reply = await client.post("/v1/agents/ai-echo/runs", json=body, headers={"traceparent": CALLER})
        assert reply.status_code == 200, reply.text
        await until(lambda: received != [], what="the webhook")
    assert int(received[0].split("-")[1], 16) == CALLER_TRACE
    await until(lambda: any(s.name == "run ai-echo" for s in of_trace(spans, CALLER_TRACE)), what="run span")
    family = of_trace(spans, CALLER_TRACE)
    run = next(s for s in family if s.name == "run ai-echo")
    assert parent_name(run, family) == "agentrun.v1.RunService/Run"
    assert run.context is not None
    children = [s for s in family if s.parent is not None and s.parent.span_id == run.context.span_id]
    assert children, "pydantic-ai's spans (agent run, model request) are the run's children"


@contextlib.asynccontextmanager
async def _receiver(handler: Callable[[web.Request], Awaitable[web.Response]]) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_post("/hook", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/hook"
    finally:
        await runner.cleanup()
