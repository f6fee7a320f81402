"""Prometheus metrics: the server's own endpoint (--metrics-listen) and the gateway's /metrics both
show the figures moving as runs are submitted, streamed, finished and cancelled, with bounded
labels (agents, states, reasons, route templates; never a run id)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from agentrun.v1 import run_pb2
from agentrun.v1 import run_service_pb2 as pb
from prometheus_client.parser import text_string_to_metric_families

from common import logs
from gateway.app import running_gateway
from gateway.families import all_families
from gateway.settings import GatewaySettings
from tests.conftest import Harness, Launcher
from tests.waiting import until


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """Counting is backend-neutral (it happens where commits are published): one backend suffices."""
    return f"sqlite:///{tmp_path / 'agentrun.db'}"


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture
async def served(launch: Launcher) -> AsyncIterator[tuple[Harness, httpx.AsyncClient, httpx.AsyncClient]]:
    h = await launch(metrics_listen="127.0.0.1:0")
    assert h.server.metrics_port is not None
    config = GatewaySettings(listen="127.0.0.1:0", upstream=f"127.0.0.1:{h.server.port}")
    async with (
        running_gateway(config, all_families(), h.server.refresh_metrics) as gateway,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{h.server.metrics_port}") as own,
        httpx.AsyncClient(base_url=gateway.url) as http,
    ):
        yield h, own, http


async def scrape(client: httpx.AsyncClient) -> Samples:
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return parse(response.text)


async def test_both_endpoints_show_runs_streams_and_requests_moving(
    served: tuple[Harness, httpx.AsyncClient, httpx.AsyncClient],
) -> None:
    h, own, http = served
    before = await scrape(own)

    reply = await http.post("/v1/agents/echo/runs", json={"input": {"message": "hi"}, "wait": True})
    assert reply.json()["run"]["state"] == "RUN_STATE_COMPLETED"
    await h.run("echo", "two", wait=True)
    events = [
        e
        async for e in h.stub.StreamRun(
            pb.StreamRunRequest(
                run=pb.RunRequest(agent_id="echo", input=run_pb2.RunInput(message="streamed"))
            )
        )
    ]
    slow = await h.run("slow", "tokens=1000 delay_ms=50")
    await until(lambda: h.server.engine.executing(slow.id), what="the slow run to start")
    await h.stub.CancelRun(pb.CancelRunRequest(run_id=slow.id))

    for client in (own, http):  # the same process: both show the server's figures
        after = await scrape(client)
        assert (
            value(after, "agentrun_runs_submitted_total", agent="echo")
            - value(before, "agentrun_runs_submitted_total", agent="echo")
            == 3
        )
        finished = "agentrun_runs_finished_total"
        done = {"agent": "echo", "state": "COMPLETED", "reason": ""}
        assert value(after, finished, **done) - value(before, finished, **done) == 3
        cancelled = {"agent": "slow", "state": "CANCELLED", "reason": "CANCELLED"}
        assert value(after, finished, **cancelled) - value(before, finished, **cancelled) == 1
        appended = value(after, "agentrun_events_appended_total") - value(
            before, "agentrun_events_appended_total"
        )
        assert appended >= 3 * 3 + len(events) - 3
        assert value(after, "agentrun_run_duration_seconds_count", agent="echo") >= 3
        assert value(after, "agentrun_queue_depth") == 0
        assert value(after, "agentrun_open_streams", kind="stream") == 0
        assert value(after, "agentrun_db_statements_total") > value(before, "agentrun_db_statements_total")
        commits = "agentrun_writer_batch_ops_count"
        assert value(after, commits) > value(before, commits)
        assert value(after, "agentrun_writer_commit_seconds_sum") > value(
            before, "agentrun_writer_commit_seconds_sum"
        )
    assert (await http.get("/api/runs/999999")).status_code == 404  # family C's run
    gateway = await scrape(http)
    missing = {"family": "C", "route": "/api/runs/{run_id}", "method": "GET", "status": "404"}
    assert value(gateway, "agentrun_gateway_requests_total", **missing) >= 1
    route = {"family": "canonical", "route": "/v1/agents/{agent_id}/runs", "method": "POST", "status": "200"}
    assert value(gateway, "agentrun_gateway_requests_total", **route) >= 1
    assert not any("run_id" in dict(labels) or slow.id in str(labels) for _, labels in gateway)


async def test_queue_gauges_and_open_streams(launch: Launcher) -> None:
    """The queue gauges are read at scrape time; open streams count while a stream is open."""
    h = await launch(workers=0, metrics_listen="127.0.0.1:0")
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{h.server.metrics_port}") as own:
        queued = [await h.run("echo", str(i)) for i in range(3)]
        stream = asyncio.create_task(h.events(run_id=queued[0].id))
        await until(lambda: h.server.engine.hub._subscribers != {}, what="the stream")
        samples = await scrape(own)
        assert value(samples, "agentrun_queue_depth") == 3
        assert value(samples, "agentrun_queue_oldest_age_seconds") > 0
        assert value(samples, "agentrun_open_streams", kind="stream") >= 1
        for run in queued:
            await h.stub.CancelRun(pb.CancelRunRequest(run_id=run.id))
        await stream
        samples = await scrape(own)
        assert value(samples, "agentrun_queue_depth") == 0


def test_json_logs_carry_the_run(capsys: pytest.CaptureFixture[str]) -> None:
    logs.configure("INFO", "json")
    try:
        with logs.run_fields(run_id="r1", org_id="acme", agent_id="echo", attempt=2):
            logging.getLogger("server.engine.runner").warning("agent failed", extra={"reason": "AGENT_ERROR"})
        logging.getLogger("x").info("outside")
    finally:
        logs.configure("WARNING", "text")
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert lines[0] | {"time": ""} == {
        "time": "",
        "level": "WARNING",
        "logger": "server.engine.runner",
        "message": "agent failed",
        "run_id": "r1",
        "org_id": "acme",
        "agent_id": "echo",
        "attempt": 2,
        "reason": "AGENT_ERROR",
    }
    assert "run_id" not in lines[1]
    with pytest.raises(ValueError, match="not one of text, json"):
        logs.configure("INFO", "yaml")


async def test_a_runs_log_lines_name_it(h: Harness, caplog: pytest.LogCaptureFixture) -> None:
    """Lines logged while a run executes carry its fields, whatever handler reads them."""
    with caplog.at_level(logging.DEBUG, logger="server.engine.runner"):
        run = await h.run("echo", "logged", wait=True)
    (line,) = [r for r in caplog.records if getattr(r, "run_id", "") == run.id]
    assert (line.agent_id, line.attempt, line.org_id) == ("echo", 1, "")  # type: ignore[attr-defined]
    assert "COMPLETED" in line.getMessage()
