"""The gateway's operational side: /health, /ready, /openapi.json, an upstream that is down,
settings from flags and environment, and `python -m gateway` as a real process."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import jsonschema
import pytest
from openapi_spec_validator import validate

from gateway.settings import GatewaySettings, load
from tests import gateway_harness
from tests.gateway_harness import Gateway, GatewayLauncher

gateways = gateway_harness.gateways
database_url = gateway_harness.database_url
gw = gateway_harness.gw


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def test_health_and_ready(gw: Gateway) -> None:
    health = await gw.http.get("/health")
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    ready = await gw.http.get("/ready")
    assert ready.status_code == 200 and ready.json() == {"status": "ready", "upstream": "SERVING"}


async def test_upstream_down_is_503_and_not_ready(gateways: GatewayLauncher) -> None:
    down = await gateways(upstream=f"127.0.0.1:{free_port()}", ready_timeout_s=1.0)
    assert (await down.http.get("/health")).status_code == 200  # alive, just not ready
    ready = await down.http.get("/ready")
    assert ready.status_code == 503 and ready.json()["status"] == "unavailable"
    for response in (
        await down.http.get("/v1/agents"),
        await down.http.post("/v1/agents/echo/runs", json={"input": {"message": "hi"}}),
        await down.http.post("/v1/agents/echo/runs:stream", json={"run": {"input": {"message": "hi"}}}),
    ):
        assert response.status_code == 503, response.text
        error = response.json()["error"]
        assert error["status"] == "UNAVAILABLE" and "127.0.0.1" not in error["message"]


async def test_openapi_describes_every_route_and_validates(gw: Gateway) -> None:
    doc = (await gw.http.get("/openapi.json")).json()
    validate(doc)  # OpenAPI 3.1, by the spec's own schema
    assert doc["openapi"].startswith("3.1")
    documented = {(method.upper(), path) for path, ops in doc["paths"].items() for method in ops}
    served = set()
    for route in gw.running.app.router.routes():
        assert route.resource is not None
        served.add((route.method, route.resource.canonical))
    assert documented == served
    stream = doc["paths"]["/v1/agents/{agent_id}/runs:stream"]["post"]
    assert "text/event-stream" in stream["responses"]["200"]["content"]
    assert [p["name"] for p in stream["parameters"] if p["in"] == "path"] == ["agent_id"]
    list_runs = doc["paths"]["/v1/runs"]["get"]
    assert {"agent_id", "states", "page_size", "create_time_after"} <= {
        p["name"] for p in list_runs["parameters"]
    }
    assert "requestBody" not in list_runs
    run = doc["paths"]["/v1/agents/{agent_id}/runs"]["post"]
    assert run["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "agentrun.v1.RunRequest"
    )


async def test_responses_match_their_documented_schemas(gw: Gateway) -> None:
    doc = (await gw.http.get("/openapi.json")).json()

    def check(instance: Any, name: str) -> None:
        schema = {"$ref": f"#/components/schemas/{name}", "components": doc["components"]}
        jsonschema.Draft202012Validator(schema).validate(instance)

    run = await gw.http.post(
        "/v1/agents/tools/runs", json={"input": {"message": "what is 6 * 7"}, "wait": True}
    )
    check(run.json(), "agentrun.v1.RunResponse")
    check((await gw.http.get("/v1/runs")).json(), "agentrun.v1.ListRunsResponse")
    check((await gw.http.get("/v1/agents")).json(), "agentrun.v1.ListAgentsResponse")
    check((await gw.http.get("/v1/agents/nobody")).json(), "agentrun.gateway.Error")
    with pytest.raises(jsonschema.ValidationError):
        check({"run": {"number": 1.5}}, "agentrun.v1.RunResponse")


def test_settings_from_flags_and_environment() -> None:
    assert load([], {}) == GatewaySettings()
    assert GatewaySettings().listen == "127.0.0.1:8080" and GatewaySettings().upstream == "127.0.0.1:50051"
    env = {"AGENTRUN_GATEWAY_UPSTREAM": "db:1", "AGENTRUN_GATEWAY_MAX_BODY_BYTES": "10"}
    settings = load(["--listen", "0.0.0.0:9000", "--sse-heartbeat", "2.5", "--max-body-bytes", "20"], env)
    assert settings.upstream == "db:1" and settings.max_body_bytes == 20  # flags win over env
    assert (settings.host, settings.port, settings.sse_heartbeat_s) == ("0.0.0.0", 9000, 2.5)


@pytest.fixture
def server_process() -> Iterator[int]:
    args = [sys.executable, "-m", "cli", "serve", "--listen", "127.0.0.1:0"]
    args += ["--database-url", "sqlite:///:memory:", "--log-level", "WARNING"]
    process = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    try:
        yield _port(process, "agentrun: gRPC on")
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=20)


def _port(process: subprocess.Popen[str], banner: str) -> int:
    assert process.stdout is not None
    line = process.stdout.readline()
    match = re.fullmatch(rf"{banner} 127\.0\.0\.1:(\d+)", line.strip())
    assert match, f"no banner: {line!r}"
    return int(match.group(1))


def test_python_m_gateway_serves(server_process: int) -> None:
    args = [sys.executable, "-m", "gateway", "--listen", "127.0.0.1:0", "--log-level", "WARNING"]
    env_upstream = f"127.0.0.1:{server_process}"
    process = subprocess.Popen(
        args, stdout=subprocess.PIPE, text=True, env={**os.environ, "AGENTRUN_GATEWAY_UPSTREAM": env_upstream}
    )
    try:
        port = _port(process, "agentrun-gateway: HTTP on")
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            assert client.get("/ready").status_code == 200
            response = client.post(
                "/v1/agents/echo/runs", json={"input": {"message": "via process"}, "wait": True}
            )
            assert response.json()["run"]["output"] == "via process"
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
