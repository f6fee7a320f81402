"""Family B (PraisonAI async jobs) through the real gateway and server: submit with Location and
idempotency, poll, list, result, cancel, delete, the job stream's named events, /health, /stats,
FastAPI-shaped errors and the JOB webhook at a real receiver."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from typing import Any

import pytest
from httpx_sse import ServerSentEvent
from openapi_spec_validator import validate

from gateway.families import b
from tests import gateway_harness
from tests.conftest import Launcher
from tests.gateway_harness import Gateway, GatewayLauncher
from tests.test_webhooks import FAST, Receiver

gateways = gateway_harness.gateways
database_url = gateway_harness.database_url
RUNS = "/api/v1/runs"
TERMINAL = {"succeeded", "failed", "cancelled"}
STATUS_FIELDS = {
    *("job_id", "status", "progress", "progress_percentage", "progress_step", "created_at"),
    *("started_at", "completed_at", "agent_id", "run_id", "session_id", "error", "retry_after"),
}


@pytest.fixture
async def gw(gateways: GatewayLauncher) -> Gateway:
    return await gateways(families=[b.setup])


async def submit(gw: Gateway, headers: dict[str, str] | None = None, **body: Any) -> dict[str, Any]:
    response = await gw.http.post(RUNS, json=body, headers=headers)
    assert response.status_code == 202, response.text
    job: dict[str, Any] = response.json()
    return job


async def wait_for(
    gw: Gateway, job_id: str, statuses: set[str], percentage: float | None = None
) -> dict[str, Any]:
    async with asyncio.timeout(10):
        while True:
            job: dict[str, Any] = (await gw.http.get(f"{RUNS}/{job_id}")).json()
            if job["status"] in statuses and percentage in (None, job["progress_percentage"]):
                return job
            await asyncio.sleep(0.02)


async def frames_of(gw: Gateway, job_id: str, **kwargs: Any) -> list[ServerSentEvent]:
    return await gw.stream("GET", f"{RUNS}/{job_id}/stream", **kwargs)


def data(frame: ServerSentEvent) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(frame.data)
    return value


async def test_submit_poll_and_result(gw: Gateway) -> None:
    response = await gw.http.post(RUNS, json={"prompt": "hello job world"})
    assert response.status_code == 202
    job = response.json()
    assert set(job) == {"job_id", "status", "created_at", "poll_url", "stream_url"}
    assert job["status"] == "queued" and datetime.fromisoformat(job["created_at"]).tzinfo is not None
    assert job["poll_url"] == f"{gw.running.url}{RUNS}/{job['job_id']}"
    assert job["stream_url"] == job["poll_url"] + "/stream"
    assert response.headers["location"] == job["poll_url"] and response.headers["retry-after"] == "2"

    done = await wait_for(gw, job["job_id"], TERMINAL)
    assert set(done) == STATUS_FIELDS
    assert done["status"] == "succeeded" and done["retry_after"] is None and done["error"] is None
    assert done["progress"] == {
        "percentage": 100.0,
        "current_step": "Completed",
        "steps_completed": 0,
        "steps_total": None,
    }
    assert (done["progress_percentage"], done["progress_step"]) == (100.0, "Completed")
    assert done["agent_id"] == "echo" and done["run_id"] == job["job_id"] and done["completed_at"]

    result = (await gw.http.get(f"{RUNS}/{job['job_id']}/result")).json()
    assert result["result"] == "hello job world" and result["result_url"] is None
    assert result["status"] == "succeeded" and result["error"] is None
    assert isinstance(result["duration_seconds"], float) and result["metrics"]["tool_calls"] == 0
    assert result["created_at"] == done["created_at"] and result["completed_at"] == done["completed_at"]


async def test_urls_follow_forwarded_headers(gw: Gateway) -> None:
    headers = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "jobs.example.com"}
    job = await submit(gw, headers, prompt="hi")
    assert job["poll_url"] == f"https://jobs.example.com{RUNS}/{job['job_id']}"


async def test_idempotency_replays_or_conflicts(gw: Gateway) -> None:
    first = await submit(gw, {"Idempotency-Key": "k-1"}, prompt="same", timeout=60)
    again = await submit(gw, {"Idempotency-Key": "k-1"}, prompt="same", timeout=60)
    assert again["job_id"] == first["job_id"]
    by_body = await submit(gw, prompt="same", timeout=60, idempotency_key="k-1")
    assert by_body["job_id"] == first["job_id"]
    # the header wins over the body's key
    header_wins = await submit(gw, {"Idempotency-Key": "k-1"}, prompt="same", timeout=60, idempotency_key="x")
    assert header_wins["job_id"] == first["job_id"]

    for changed in ({"prompt": "other", "timeout": 60}, {"prompt": "same", "config": {"temperature": 1}}):
        response = await gw.http.post(RUNS, json=changed, headers={"Idempotency-Key": "k-1"})
        assert response.status_code == 409
        body = response.json()
        assert body["job_id"] == first["job_id"] and body["status"] in {"queued", "running", "succeeded"}
        assert body["message"] == "Job already exists with this idempotency key"


async def test_recipe_name_and_config_pick_the_agent(gw: Gateway) -> None:
    job = await submit(gw, prompt="what is 6*7", recipe_name="tools", framework="praisonai", config={})
    done = await wait_for(gw, job["job_id"], TERMINAL)
    assert done["agent_id"] == "tools" and done["progress"]["steps_completed"] == 1
    result = (await gw.http.get(f"{RUNS}/{job['job_id']}/result")).json()
    assert "42" in result["result"] and result["metrics"]["tool_calls"] == 1
    tuned = await submit(
        gw, prompt="hi", recipe_name="ai-echo", config={"temperature": 0.5, "max_tokens": 50}
    )
    assert (await wait_for(gw, tuned["job_id"], TERMINAL))["status"] == "succeeded"


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ({"prompt": "hi", "recipe_name": "nobody"}, "Recipe not found: nobody"),
        ({"prompt": "hi", "agent_file": "agents.yaml"}, "agent_file is not enabled on this server"),
        ({"prompt": "hi", "agent_yaml": "agents: []"}, "inline agent_yaml is not enabled on this server"),
        ({"prompt": "hi", "framework": "crewai"}, "Framework 'crewai' is not supported"),
        ({"prompt": "hi", "framework": "autogen"}, "Framework 'autogen' is not supported"),
    ],
)
async def test_submit_refusals_are_400(gw: Gateway, body: dict[str, Any], detail: str) -> None:
    response = await gw.http.post(RUNS, json=body)
    assert response.status_code == 400
    assert response.json()["detail"].startswith(detail)


@pytest.mark.parametrize(
    ("content", "kind", "loc", "value"),
    [
        ('{"prompt": ', "json_invalid", ["body", 11], {}),
        ("", "missing", ["body"], None),
        ("[1]", "model_attributes_type", ["body"], [1]),
        ('{"timeout": 5}', "missing", ["body", "prompt"], {"timeout": 5}),
        ('{"prompt": 7}', "string_type", ["body", "prompt"], 7),
        ('{"prompt": "hi", "timeout": "soon"}', "int_parsing", ["body", "timeout"], "soon"),
        ('{"prompt": "hi", "timeout": 1.5}', "int_from_float", ["body", "timeout"], 1.5),
        ('{"prompt": "hi", "config": [1]}', "dict_type", ["body", "config"], [1]),
        (
            '{"prompt": "hi", "config": {"temperature": "hot"}}',
            "float_type",
            ["body", "config", "temperature"],
            "hot",
        ),
        ('{"prompt": "  "}', "value_error", ["body", "prompt"], "  "),
        ('{"prompt": "hi", "timeout": -5}', "value_error", ["body", "timeout"], -5),
    ],
)
async def test_invalid_bodies_are_422(
    gw: Gateway, content: str, kind: str, loc: list[Any], value: Any
) -> None:
    response = await gw.http.post(RUNS, content=content, headers={"Content-Type": "application/json"})
    assert response.status_code == 422
    (error,) = response.json()["detail"]
    assert (error["type"], error["loc"], error["input"]) == (kind, loc, value)
    assert isinstance(error["msg"], str) and error["msg"]


async def test_a_refused_webhook_url_is_422(gw: Gateway) -> None:
    url = "http://127.0.0.1:9/hook"  # loopback: not allowed without an allow-list entry
    response = await gw.http.post(RUNS, json={"prompt": "hi", "webhook_url": url})
    assert response.status_code == 422
    (error,) = response.json()["detail"]
    assert error["type"] == "value_error" and error["loc"] == ["body", "webhook_url"]
    assert error["input"] == url and error["msg"].startswith("Value error, URL")
    assert error["ctx"]["error"].startswith("URL")


async def test_list_pages_filters_and_counts(gw: Gateway) -> None:
    ids = [(await submit(gw, prompt=f"job {i}", session_id="s-1"))["job_id"] for i in range(3)]
    other = (await submit(gw, prompt="elsewhere", session_id="s-2"))["job_id"]
    for job_id in [*ids, other]:
        await wait_for(gw, job_id, TERMINAL)

    first = (await gw.http.get(RUNS, params={"session_id": "s-1", "page_size": 2})).json()
    assert (first["total"], first["page"], first["page_size"]) == (3, 1, 2)
    assert [j["job_id"] for j in first["jobs"]] == [ids[2], ids[1]]  # newest first
    assert set(first["jobs"][0]) == STATUS_FIELDS
    second = (await gw.http.get(RUNS, params={"session_id": "s-1", "page_size": 2, "page": 2})).json()
    assert [j["job_id"] for j in second["jobs"]] == [ids[0]] and second["total"] == 3
    everything = (await gw.http.get(RUNS)).json()
    assert everything["total"] == 4 and (everything["page"], everything["page_size"]) == (1, 20)
    assert (await gw.http.get(RUNS, params={"status": "succeeded"})).json()["total"] == 4
    for queued in ("queued", "pending"):
        assert (await gw.http.get(RUNS, params={"status": queued})).json() == {
            "jobs": [],
            "total": 0,
            "page": 1,
            "page_size": 20,
        }


async def test_list_parameter_errors(gw: Gateway) -> None:
    bad = await gw.http.get(RUNS, params={"status": "done"})
    assert bad.status_code == 400
    valid = "['queued', 'running', 'succeeded', 'failed', 'cancelled']"
    assert bad.json() == {"detail": f"Invalid status: done. Valid values: {valid}"}
    for params, kind, name in [
        ({"page": "0"}, "greater_than_equal", "page"),
        ({"page_size": "101"}, "less_than_equal", "page_size"),
        ({"page": "one"}, "int_parsing", "page"),
    ]:
        response = await gw.http.get(RUNS, params=params)
        assert response.status_code == 422
        (error,) = response.json()["detail"]
        assert (error["type"], error["loc"], error["input"]) == (kind, ["query", name], params[name])


async def test_cancel_result_and_delete_rules(gw: Gateway) -> None:
    job_id = (await submit(gw, prompt="tokens=200 delay_ms=20", recipe_name="slow"))["job_id"]
    running = await wait_for(gw, job_id, {"running"}, percentage=30.0)
    assert running["retry_after"] == 5 and running["started_at"] is not None
    assert running["progress"]["current_step"] == "Running agent workflow"
    early = await gw.http.get(f"{RUNS}/{job_id}/result")
    assert early.status_code == 409 and early.json() == {
        "detail": "Job is not complete. Current status: running"
    }
    busy = await gw.http.delete(f"{RUNS}/{job_id}")
    assert busy.status_code == 409 and busy.json() == {
        "detail": "Cannot delete a running job. Cancel it first."
    }

    cancelled = await gw.http.post(f"{RUNS}/{job_id}/cancel")
    assert cancelled.status_code == 200
    body = cancelled.json()
    assert body["status"] == "cancelled" and body["cancelled_at"] == body["completed_at"] is not None
    assert body["retry_after"] is None and body["progress"]["percentage"] == 30.0
    again = await gw.http.post(f"{RUNS}/{job_id}/cancel")
    assert again.status_code == 409 and again.json() == {
        "detail": "Job is already complete. Status: cancelled"
    }
    result = (await gw.http.get(f"{RUNS}/{job_id}/result")).json()
    assert (result["status"], result["result"], result["error"]) == ("cancelled", None, "Job was cancelled")

    deleted = await gw.http.delete(f"{RUNS}/{job_id}")
    assert deleted.status_code == 204 and deleted.content == b""
    gone = await gw.http.get(f"{RUNS}/{job_id}")
    assert gone.status_code == 404 and gone.json() == {"detail": f"Job not found: {job_id}"}


@pytest.mark.parametrize(
    ("method", "suffix"),
    [("GET", ""), ("GET", "/result"), ("POST", "/cancel"), ("DELETE", ""), ("GET", "/stream")],
)
async def test_unknown_jobs_are_404(gw: Gateway, method: str, suffix: str) -> None:
    for job_id in ("run_missing", "x" * 80):
        response = await gw.http.request(method, f"{RUNS}/{job_id}{suffix}")
        assert response.status_code == 404
        assert response.json() == {"detail": f"Job not found: {job_id}"}


async def test_a_timed_out_job_fails_with_its_error(gw: Gateway) -> None:
    job_id = (await submit(gw, prompt="tokens=100 delay_ms=50", recipe_name="slow", timeout=1))["job_id"]
    failed = await wait_for(gw, job_id, TERMINAL)
    assert failed["status"] == "failed" and failed["error"]
    result = (await gw.http.get(f"{RUNS}/{job_id}/result")).json()
    assert result["result"] is None and result["error"] == failed["error"]


async def test_stream_replays_a_finished_job(gw: Gateway) -> None:
    job_id = (await submit(gw, prompt="one two"))["job_id"]
    await wait_for(gw, job_id, TERMINAL)
    frames = await frames_of(gw, job_id)
    names = [f.event for f in frames]
    assert names == ["status", "progress", "progress", "status", "progress", "result", "complete", "message"]
    assert frames[-1].data == "[DONE]"
    assert data(frames[0]) == {
        "event": "status",
        "data": {"status": "running", "job_id": job_id},
        "status": "running",
        "job_id": job_id,
    }
    assert data(frames[1]) == {
        "event": "progress",
        "data": {"percentage": 10.0, "current_step": "Initializing agent"},
        "percentage": 10.0,
        "step": "Initializing agent",
    }
    assert data(frames[2])["percentage"] == 30.0 and data(frames[3])["status"] == "succeeded"
    assert data(frames[4])["data"] == {"percentage": 100.0, "current_step": "Completed"}
    assert data(frames[5])["result"] == "one two" == data(frames[5])["data"]["result"]
    assert data(frames[6])["data"] == {"status": "succeeded", "job_id": job_id}
    # id = seq on the last frame of each event (START 1, REASONING 2, ..., STOP 5)
    assert [f.id for f in frames] == ["", "1", "2", "2", "2", "5", "5", "5"]


async def test_stream_resumes_after_last_event_id(gw: Gateway) -> None:
    job_id = (await submit(gw, prompt="alpha beta gamma"))["job_id"]
    await wait_for(gw, job_id, TERMINAL)
    rest = await frames_of(gw, job_id, headers={"Last-Event-ID": "2"})
    assert [f.event for f in rest] == ["status", "progress", "result", "complete", "message"]
    assert data(rest[2])["result"] == "alpha beta gamma"  # the whole answer, not just the rest
    tail = await frames_of(gw, job_id, headers={"Last-Event-ID": "6"})
    assert [f.event for f in tail] == ["complete", "message"] and tail[-1].data == "[DONE]"
    bad = await gw.http.get(f"{RUNS}/{job_id}/stream", headers={"Last-Event-ID": "soon"})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["header", "Last-Event-ID"]


async def test_stream_follows_a_live_job_with_heartbeats(gateways: GatewayLauncher) -> None:
    gw = await gateways(families=[b.setup], family_b_heartbeat_s=0.05)
    job_id = (await submit(gw, prompt="tokens=4 delay_ms=150", recipe_name="slow"))["job_id"]
    frames = await frames_of(gw, job_id)
    names = [f.event for f in frames]
    assert names[-3:] == ["result", "complete", "message"] and frames[-1].data == "[DONE]"
    statuses = [data(f)["status"] for f in frames if f.event == "status"]
    assert statuses[-2:] == ["running", "succeeded"] and statuses[0] in {"queued", "running"}
    percentages = [data(f)["percentage"] for f in frames if f.event == "progress"]
    assert percentages == sorted(percentages) and percentages[-1] == 100.0
    heartbeats = [data(f) for f in frames if f.event == "heartbeat"]
    assert heartbeats and all(datetime.fromisoformat(h["timestamp"]) for h in heartbeats)
    assert heartbeats[0]["data"] == {"timestamp": heartbeats[0]["timestamp"]}
    result = (await gw.http.get(f"{RUNS}/{job_id}/result")).json()["result"]
    assert data(frames[-3])["result"] == result == "t0 t1 t2 t3 "


async def test_stream_of_a_cancelled_job(gw: Gateway) -> None:
    job_id = (await submit(gw, prompt="tokens=200 delay_ms=20", recipe_name="slow"))["job_id"]
    await wait_for(gw, job_id, {"running"})
    streaming = asyncio.create_task(frames_of(gw, job_id))
    await asyncio.sleep(0.2)
    assert (await gw.http.post(f"{RUNS}/{job_id}/cancel")).status_code == 200
    frames = await asyncio.wait_for(streaming, 10)
    assert [f.event for f in frames[-4:]] == ["status", "cancelled", "complete", "message"]
    assert data(frames[-4])["status"] == "cancelled"
    assert data(frames[-3]) == {
        "event": "cancelled",
        "data": {"message": "Job was cancelled"},
        "message": "Job was cancelled",
    }
    assert data(frames[-2])["data"] == {"status": "cancelled", "job_id": job_id}


async def test_health_stats_and_unknown_routes(gw: Gateway) -> None:
    done = [(await submit(gw, prompt=f"n{i}"))["job_id"] for i in range(2)]
    slow = (await submit(gw, prompt="tokens=200 delay_ms=20", recipe_name="slow"))["job_id"]
    for job_id in done:
        await wait_for(gw, job_id, TERMINAL)
    await wait_for(gw, slow, {"running"})

    health = (await gw.http.get("/health")).json()
    assert health == {
        "status": "healthy",
        "store": "agentrun",
        "executor_stats": {"running_jobs": 1, "queued_jobs": 0},
    }
    await gw.http.post(f"{RUNS}/{slow}/cancel")
    stats = (await gw.http.get("/stats")).json()
    by_status = {"queued": 0, "running": 0, "succeeded": 2, "failed": 0, "cancelled": 1}
    assert stats["total_jobs"] == 3 and stats["by_status"] == by_status
    assert stats["executor"] == {"running_jobs": 0, "queued_jobs": 0}
    assert stats["store"] == {"backend": "agentrun", "total_jobs": 3, "by_status": by_status}

    missing = await gw.http.get("/api/v1/nothing")
    assert missing.status_code == 404 and missing.json() == {"detail": "Not Found"}
    wrong = await gw.http.put(RUNS)
    assert wrong.status_code == 405 and wrong.json() == {"detail": "Method Not Allowed"}

    doc = (await gw.http.get("/openapi.json")).json()
    validate(doc)
    assert set(doc["paths"][RUNS]) == {"get", "post"}
    assert doc["paths"][RUNS]["post"]["responses"]["202"]["headers"]["Location"]
    assert "b.JobStatusResponse" in doc["components"]["schemas"]


async def test_the_job_webhook_reaches_a_receiver(gateways: GatewayLauncher, launch: Launcher) -> None:
    receiver = Receiver()
    await receiver.start()
    try:
        gw = await gateways(await launch(webhooks=FAST), families=[b.setup])
        job_id = (await submit(gw, prompt="ping me", webhook_url=receiver.url))["job_id"]
        async with asyncio.timeout(10):
            while not receiver.received:
                await asyncio.sleep(0.02)
    finally:
        await receiver.stop()
    (body,) = receiver.bodies()
    assert body["job_id"] == job_id and body["status"] == "succeeded" and body["result"] == "ping me"
    assert body["error"] is None and body["completed_at"] and isinstance(body["duration_seconds"], float)
