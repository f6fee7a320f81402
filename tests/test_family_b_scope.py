"""Family B (PraisonAI async jobs) as API_FAMILIES.md scopes it: which agent a job runs (agent_file
under the configured root, inline agent_yaml only where allowed, config's model overrides), list and
/stats that show family B's jobs only, the documented 5 s heartbeat and the timeout error text."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from httpx_sse import aconnect_sse

from gateway.families import a, b
from tests import gateway_harness
from tests.conftest import Launcher
from tests.gateway_harness import Gateway, GatewayLauncher
from tests.test_family_b import RUNS, TERMINAL, data, submit, wait_for
from tests.test_webhooks import FAST, Receiver
from tests.waiting import until

gateways = gateway_harness.gateways
database_url = gateway_harness.database_url

AGENTRUN_FILE = """
agents:
  - id: researcher
    model: demo
    instructions: Answer like a librarian.
    options: {temperature: 0.3}
  - id: other
"""
PRAISON_FILE = """
framework: praisonai
roles:
  writer:
    role: Technical writer
    goal: Explain things plainly
    backstory: Writes manuals.
    llm: demo
"""


@pytest.fixture
def root(tmp_path: Path) -> Path:
    folder = tmp_path / "agents"
    folder.mkdir()
    (folder / "team.yaml").write_text(AGENTRUN_FILE)
    (folder / "praison.yaml").write_text(PRAISON_FILE)
    (folder / "slow.yaml").write_text("agents:\n  - id: slow\n")
    (tmp_path / "outside.yaml").write_text(AGENTRUN_FILE)
    return folder


async def run_of(gw: Gateway, job_id: str) -> dict[str, Any]:
    await wait_for(gw, job_id, TERMINAL)
    return await gw.get(job_id)


async def test_agent_file_under_the_root_runs_its_first_agent(gateways: GatewayLauncher, root: Path) -> None:
    gw = await gateways(families=[b.setup], family_b_agent_root=str(root))
    job = await submit(gw, prompt="hello file", agent_file="team.yaml", config={"max_tokens": 50})
    run = await run_of(gw, job["job_id"])
    # Not a configured agent: the default agent runs it, with the file's model and instructions.
    assert run["agentId"] == "echo" and run["state"] == "RUN_STATE_COMPLETED"
    options = run["input"]["options"]
    assert options == {
        "model": "demo",
        "systemPrompt": "Answer like a librarian.",
        "temperature": 0.3,
        "maxTokens": 50,  # config's overrides on top of the file's
    }
    assert run["metadata"]["agent_file"] == "team.yaml"

    named = await submit(gw, prompt="tokens=1 delay_ms=1", agent_file=str(root / "slow.yaml"))
    assert (await run_of(gw, named["job_id"]))["agentId"] == "slow"  # a configured agent by its id

    praison = await submit(gw, prompt="hello", agent_file="praison.yaml", config={"model": "demo"})
    options = (await run_of(gw, praison["job_id"]))["input"]["options"]
    assert options["systemPrompt"].startswith("Role: Technical writer\nGoal: Explain things plainly")


@pytest.mark.parametrize(
    ("name", "detail"),
    [
        ("../outside.yaml", "agent_file must be under the agent root"),
        ("/etc/hostname", "agent_file must be under the agent root"),
        ("missing.yaml", "agent_file not found or not readable"),
    ],
)
async def test_agent_file_elsewhere_is_400(
    gateways: GatewayLauncher, root: Path, name: str, detail: str
) -> None:
    gw = await gateways(families=[b.setup], family_b_agent_root=str(root))
    response = await gw.http.post(RUNS, json={"prompt": "hi", "agent_file": name})
    assert response.status_code == 400 and response.json()["detail"].startswith(detail)


async def test_inline_agent_yaml_only_where_allowed(gateways: GatewayLauncher) -> None:
    body: dict[str, Any] = {"prompt": "tokens=1 delay_ms=1", "agent_yaml": "agents:\n  - id: slow\n"}
    off = await gateways(families=[b.setup])
    refused = await off.http.post(RUNS, json=body)
    assert refused.status_code == 400
    assert refused.json() == {
        "detail": "inline agent_yaml is not enabled on this server; use agent_file or recipe_name"
    }
    on = await gateways(families=[b.setup], family_b_inline_agents=True)
    job = await submit(on, **body)
    assert (await run_of(on, job["job_id"]))["agentId"] == "slow"
    broken = await on.http.post(RUNS, json={"prompt": "hi", "agent_yaml": "agents: [unclosed"})
    assert broken.status_code == 400 and broken.json()["detail"].startswith("agent_yaml is not valid YAML")


async def test_list_and_stats_show_family_b_jobs_only(gateways: GatewayLauncher) -> None:
    gw = await gateways(families=[a.setup, b.setup])
    paused = await gw.http.post("/api/agents/approval/runs", json={"message": "send the report"})
    assert paused.json()["status"] == "PAUSED"  # family A's run, waiting for approval
    await gw.run("echo", "canonical REST")
    job = await submit(gw, prompt="mine")
    await wait_for(gw, job["job_id"], TERMINAL)

    listed = (await gw.http.get(RUNS)).json()
    assert [j["job_id"] for j in listed["jobs"]] == [job["job_id"]] and listed["total"] == 1
    assert (await gw.http.get(RUNS, params={"status": "running"})).json()["jobs"] == []
    stats = (await gw.http.get("/stats")).json()
    assert stats["total_jobs"] == 1 and stats["by_status"]["succeeded"] == 1
    assert stats["by_status"]["running"] == 0 and stats["executor"]["running_jobs"] == 0
    health = (await gw.http.get("/health")).json()
    assert health["executor_stats"] == {"running_jobs": 0, "queued_jobs": 0}


async def test_job_stream_heartbeat_after_five_seconds_by_default(gateways: GatewayLauncher) -> None:
    gw = await gateways(families=[b.setup])  # sse_heartbeat_s stays 15 s: B has its own 5 s
    job_id = (await submit(gw, prompt="tokens=2 delay_ms=9000", recipe_name="slow"))["job_id"]
    loop = asyncio.get_running_loop()
    seen: list[tuple[float, str]] = []

    async def read() -> None:
        async with aconnect_sse(gw.http, "GET", f"{RUNS}/{job_id}/stream") as source:
            async for frame in source.aiter_sse():
                seen.append((loop.time(), frame.event))
                if frame.event == "heartbeat":
                    return

    reader = asyncio.create_task(read())
    try:
        await until(lambda: reader.done(), timeout=8.0, what="a heartbeat within 8 s")
    finally:
        reader.cancel()
        await gw.http.post(f"{RUNS}/{job_id}/cancel")
    (beat_at, _), (before, _) = seen[-1], seen[-2]
    assert 4.5 <= beat_at - before <= 7.0, seen


async def test_a_timed_out_job_says_so(gw_b: Gateway) -> None:
    job_id = (await submit(gw_b, prompt="tokens=50 delay_ms=100", recipe_name="slow", timeout=1))["job_id"]
    frames = await gw_b.stream("GET", f"{RUNS}/{job_id}/stream")
    done = await wait_for(gw_b, job_id, TERMINAL)
    assert done["status"] == "failed" and done["error"] == "Job timed out after 1s"
    errors = [data(f) for f in frames if f.event == "error"]
    assert errors and errors[-1]["error"] == "Job timed out after 1s"
    result = (await gw_b.http.get(f"{RUNS}/{job_id}/result")).json()
    assert result["error"] == "Job timed out after 1s"
    assert json.loads(frames[-2].data)["data"] == {"status": "failed", "job_id": job_id}


@pytest.fixture
async def gw_b(gateways: GatewayLauncher) -> Gateway:
    return await gateways(families=[b.setup])


async def test_a_delivered_webhook_records_no_error(gateways: GatewayLauncher, launch: Launcher) -> None:
    receiver = Receiver()
    await receiver.start()
    try:
        gw = await gateways(await launch(webhooks=FAST), families=[b.setup])
        job_id = (await submit(gw, prompt="ping me", webhook_url=receiver.url))["job_id"]

        async def delivered() -> bool:
            run = await gw.get(job_id)
            return run.get("webhookDelivery", {}).get("state") == "WEBHOOK_DELIVERY_STATE_DELIVERED"

        await until(delivered, what="the webhook to be delivered")
    finally:
        await receiver.stop()
    [attempt] = (await gw.get(job_id))["webhookDelivery"]["attempts"]
    assert attempt["statusCode"] == 200 and attempt.get("error", "") == ""
