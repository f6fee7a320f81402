"""Authentication through the gateway: it forwards the caller's credentials and the server decides;
each family answers in its own documented shape (401, 403, 404 for another tenant, 429 +
Retry-After). /health is never gated."""

from __future__ import annotations

import httpx
import pytest

from gateway.families import all_families
from server.auth.limits import LimitSettings
from tests import gateway_harness
from tests.conftest import Launcher
from tests.gateway_harness import Gateway, GatewayLauncher
from tests.test_auth import Tenants, tenants  # noqa: F401 - the fixture

gateways = gateway_harness.gateways
gateway_transport = gateway_harness.both_transports  # in process and over loopback gRPC
database_url = gateway_harness.database_url
MESSAGE = {"message": "hello"}


def key(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


@pytest.fixture
async def gw(launch: Launcher, gateways: GatewayLauncher, tenants: Tenants) -> Gateway:  # noqa: F811
    h = await launch(auth=tenants.settings, limits=LimitSettings(submit_rate=0.2, submit_burst=3))
    return await gateways(h, families=all_families())


async def test_family_a_needs_a_token_and_hides_other_tenants(gw: Gateway, tenants: Tenants) -> None:  # noqa: F811
    http: httpx.AsyncClient = gw.http
    missing = await http.post("/api/agents/echo/runs", json=MESSAGE)
    assert missing.status_code == 401 and missing.headers["content-type"].startswith(
        "application/problem+json"
    )
    assert missing.headers["WWW-Authenticate"] == "Bearer"
    ok = await http.post("/api/agents/echo/runs", json=MESSAGE, headers=key(tenants.a_user))
    assert ok.status_code == 200 and ok.json()["status"] == "COMPLETED"
    run_id = ok.json()["runId"]
    other = await http.get(f"/api/agents/echo/runs/{run_id}/status", headers=key(tenants.b_user))
    assert other.status_code == 404  # never 403: existence is not revealed
    reader = await http.post("/api/agents/echo/runs", json=MESSAGE, headers=key(tenants.a_reader))
    assert reader.status_code == 403
    assert (
        await http.get(f"/api/agents/echo/runs/{run_id}/status", headers=key(tenants.a_reader))
    ).status_code == 200


async def test_family_b_unauthorized_body_and_api_key_header(gw: Gateway, tenants: Tenants) -> None:  # noqa: F811
    missing = await gw.http.get("/api/v1/runs")
    assert (missing.status_code, missing.json()) == (401, {"error": "Unauthorized"})
    listed = await gw.http.get("/api/v1/runs", headers={"X-API-Key": tenants.a_user})
    assert listed.status_code == 200
    assert (await gw.http.get("/health")).status_code == 200  # never gated


async def test_over_rate_submissions_are_429_with_retry_after(gw: Gateway, tenants: Tenants) -> None:  # noqa: F811
    body = {"input": {"message": "x"}}
    statuses = [
        (await gw.http.post("/v1/agents/echo/runs", json=body, headers=key(tenants.b_user))).status_code
        for _ in range(3)
    ]
    assert statuses == [200, 200, 200]
    limited = await gw.http.post("/v1/agents/echo/runs", json=body, headers=key(tenants.b_user))
    assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1
    job = await gw.http.post("/api/v1/runs", json={"prompt": "x"}, headers=key(tenants.b_user))
    assert job.status_code == 429 and "Retry-After" in job.headers
