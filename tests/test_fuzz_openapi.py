"""The HTTP gateway fuzzed with schemathesis from the /openapi.json it serves: every operation of
/v1 and of families A, B and C, in the examples, coverage and fuzzing phases (positive and negative
data), then stateful scenarios over the links schemathesis infers between operations. Every answer
must be no 5xx, of a documented status and content type, with documented headers, and match its
documented schema (each SSE event too); a method a path does not serve must be a 405 whose Allow
header lists exactly the documented methods; what a call creates or deletes must then be there or
gone. Afterwards every stored run must read back.

The server and gateway run as `python -m cli serve` in a subprocess (temp SQLite, the demo agents
with a quicker `slow`), one per xdist worker. Runs are reproducible: the stateless phases use
FUZZ_SEED (printed; AGENTRUN_FUZZ_SEED overrides it), the stateful phase is derandomized.
AGENTRUN_FUZZ_EXAMPLES and AGENTRUN_FUZZ_SCENARIOS scale the run up for a deeper look."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import hypothesis
import pytest
import schemathesis
import yaml

from gateway import ops
from gateway.app import create_app
from gateway.families import all_families
from gateway.settings import GatewaySettings
from server.agents.registry import DEFAULT_AGENTS_FILE

FUZZ_SEED = int(os.environ.get("AGENTRUN_FUZZ_SEED", "20261127"))
EXAMPLES = int(os.environ.get("AGENTRUN_FUZZ_EXAMPLES", "12"))  # fuzzing phase, per operation
SCENARIOS = int(os.environ.get("AGENTRUN_FUZZ_SCENARIOS", "50"))  # stateful phase
STEPS = 6  # calls per stateful scenario at most
# Asserted on every answer (and, for the last three, on stateful sequences: a deleted run is gone,
# a created one is there, a required header is required). Left out: positive_data_acceptance and
# negative_data_rejection, as the document cannot say everything the server judges (a page token
# it issued, a URL that resolves, a model of a configured provider, a run's state); and the auth
# checks, as this server runs without auth (tests/test_bad_input_http.py covers auth first).
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
    "unsupported_method",
    "allow_header_conformance",
    "use_after_free",
    "ensure_resource_availability",
    "missing_required_header",
)
# The coverage phase writes every string at its maxLength and one past it, and derives each case
# slowly from such schemas: the run-starting operations, whose messages may hold 1,000,000
# characters (and media 4,000,000), get the examples and fuzzing phases, positive and negative.
MEGABYTE_STRINGS = (
    "RunService_Run",
    "RunService_StreamRun",
    "RunService_StreamRun_1",
    "operativus_run",
    "operativus_streamRun",
    "operativus_runBackground",
)
BANNER = re.compile(r"agentrun-gateway: HTTP on ([0-9.]+:[0-9]+)")


def agents_file(directory: Path) -> Path:
    """The demo agents, with `slow` quick: fuzzed runs wait for their agents."""
    config: dict[str, Any] = yaml.safe_load(DEFAULT_AGENTS_FILE.read_text())
    for agent in config["agents"]:
        if agent["id"] == "slow":
            agent["params"] = {"tokens": 3, "delay_ms": 5}
    path = directory / "agents.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def gateway_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    directory = tmp_path_factory.mktemp("fuzz")
    log = directory / "serve.log"
    args = [sys.executable, "-u", "-m", "cli", "serve", "--listen", "127.0.0.1:0"]
    args += ["--gateway-listen", "127.0.0.1:0", "--database-url", f"sqlite:///{directory / 'fuzz.db'}"]
    args += ["--agents-file", str(agents_file(directory)), "--log-level", "WARNING"]
    args += ["--gateway-sse-heartbeat", "0.2", "--shutdown-grace", "1"]
    with log.open("w") as out:
        process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://{_banner(process, log)}"
        print(f"schemathesis seed: {FUZZ_SEED} (AGENTRUN_FUZZ_SEED={FUZZ_SEED} reproduces this run)")
        yield url
        unreadable = unreadable_runs(url)
    finally:
        process.terminate()
        process.wait(timeout=30)
    if unreadable:
        pytest.fail("stored runs that do not read back:\n" + "\n".join(unreadable[:20]))
    # aiohttp.server logs the request lines its parser refuses (ERROR, with a traceback): those are
    # the client's; the gateway's and the server's own errors are not.
    crashes = [
        line for line in log.read_text().splitlines() if re.search(r" ERROR (gateway|server|cli)", line)
    ]
    assert not crashes, "the server or gateway logged errors:\n" + log.read_text()[-8000:]


def _banner(process: subprocess.Popen[str], log: Path, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        match = BANNER.search(log.read_text())
        if match:
            return match.group(1)
        if process.poll() is not None:
            break
        time.sleep(0.05)
    pytest.fail(f"the server did not start:\n{log.read_text()}")


def unreadable_runs(url: str) -> list[str]:
    """Every stored run, paged through GET /v1/runs and read one by one: what does not answer 200."""
    problems: list[str] = []
    with httpx.Client(base_url=url, timeout=30.0) as http:
        token = ""
        while True:
            page = http.get("/v1/runs", params={"page_size": 1000, "page_token": token} if token else {})
            if page.status_code != 200:
                return [*problems, f"GET /v1/runs (page_token={token!r}): {page.status_code} {page.text}"]
            body = page.json()
            for run in body.get("runs", []):
                one = http.get(f"/v1/runs/{run['id']}")
                if one.status_code != 200:
                    problems.append(f"GET /v1/runs/{run['id']}: {one.status_code} {one.text[:500]}")
            token = body.get("nextPageToken", "")
            if not token:
                return problems


def config(**more: Any) -> schemathesis.Config:
    return schemathesis.Config.from_dict(
        {
            "seed": FUZZ_SEED,
            "request-timeout": 30,
            "max-stream-events": 50,
            "generation": {"max-examples": EXAMPLES, "mode": "all", "database": "none"},
            "phases": {
                "examples": {"enabled": True},
                "coverage": {"enabled": True},
                "fuzzing": {"enabled": True},
                "stateful": {"enabled": True, "max-steps": STEPS},
            },
            "checks": {"enabled": False, **{name: {"enabled": True} for name in CHECKS}},
            "operations": [
                {"include-operation-id": list(MEGABYTE_STRINGS), "phases": {"coverage": {"enabled": False}}}
            ],
            **more,
        }
    )


def gateway_document() -> dict[str, Any]:
    """The gateway's OpenAPI document as /openapi.json serves it, built without serving: pytest
    makes one test per operation at collection, before any server runs (and
    test_the_fuzzed_document_is_the_served_one holds the two equal)."""
    app = create_app(GatewaySettings(), all_families())
    document: dict[str, Any] = json.loads(json.dumps(ops.document(app)))
    return document


schema = schemathesis.openapi.from_dict(gateway_document(), config=config())


@schema.parametrize()
def test_every_operation_answers_as_documented(case: schemathesis.Case[Any], gateway_url: str) -> None:
    case.call_and_validate(base_url=gateway_url)


def test_the_fuzzed_document_is_the_served_one(gateway_url: str) -> None:
    assert httpx.get(f"{gateway_url}/openapi.json").json() == gateway_document()


def test_stateful_scenarios_answer_as_documented(gateway_url: str) -> None:
    served = schemathesis.openapi.from_url(
        f"{gateway_url}/openapi.json", config=config(**{"base-url": gateway_url})
    )
    served.as_state_machine().run(
        settings=hypothesis.settings(
            max_examples=SCENARIOS,
            stateful_step_count=STEPS,
            derandomize=True,
            database=None,
            deadline=None,
            phases=[hypothesis.Phase.generate],
            suppress_health_check=list(hypothesis.HealthCheck),
        )
    )
