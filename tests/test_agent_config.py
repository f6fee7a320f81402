"""agents.yaml (providers, options, teams), submission checks of model overrides, JSON schemas and
media URLs, teams and per-session ordering, over a real server."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import grpc
import pytest
from agentrun.v1 import run_pb2
from agentrun.v1 import run_service_pb2 as pb
from google.protobuf import json_format, struct_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from sqlalchemy import create_engine, text

from server.agents.providers import BUILTIN_PROVIDERS, ModelCatalog, ModelRef
from server.agents.registry import AgentConfigError, AgentRegistry
from server.store.migrations import MIGRATIONS, migrate
from tests.conftest import Harness, Launcher


def write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "agents.yaml"
    path.write_text(body)
    return path


GOOD = """
providers:
  local: {wire: openai, base_url: "http://127.0.0.1:9/v1", models: [llama3]}
  openai: {base_url: "http://127.0.0.1:9/v1"}
agents:
  - id: helper
    model: local:llama3
    options: {temperature: 0.2, max_tokens: 50}
  - id: crew
    model: demo
    is_team: true
    members: [helper]
"""


def test_providers_options_and_teams_load(tmp_path: Path) -> None:
    registry = AgentRegistry.load(write(tmp_path, GOOD))
    helper, crew = registry.get("helper"), registry.get("crew")
    assert helper is not None and helper.info.model == "local:llama3"
    assert crew is not None and crew.info.is_team and crew.info.member_ids == ("helper",)
    assert registry.catalog.providers["openai"].wire == "openai"
    assert registry.catalog.providers["openai"].api_key_env == "OPENAI_API_KEY"  # kept from the built-in
    assert registry.check("helper", "llama3", "") == []
    assert registry.check("helper", "other", "") == [
        ("input.options.model", "model 'other' is not enabled for provider 'local'")
    ]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("agents: [{id: a, model: 'nope:x'}]", "agent 'a', field 'model': unknown provider 'nope'"),
        ("agents: [{id: a, model: 'gpt-4o'}]", "agent 'a', field 'model': model 'gpt-4o' needs a provider"),
        ("agents: [{id: t, is_team: true, members: [ghost]}]", "agent 't', field 'members': 'ghost' is not"),
        (
            "agents: [{id: m, tools: [send_email], approval_tools: [send_email]},"
            " {id: t, is_team: true, members: [m]}]",
            "agent 't', field 'members': 'm' has approval_tools",
        ),
        ("agents: [{id: a, members: [b]}]", "`members` is only for agents with is_team"),
        ("agents: [{id: a, options: {temperature: 7}}]", "agent 'a', field 'options.temperature'"),
        (
            "providers: {local: {base_url: 'ftp://x'}}\nagents: [{id: a}]",
            "provider 'local', field 'base_url'",
        ),
    ],
)
def test_bad_files_name_the_agent_and_field(tmp_path: Path, body: str, expected: str) -> None:
    path = write(tmp_path, body)
    with pytest.raises(AgentConfigError) as caught:
        AgentRegistry.load(path)
    assert str(path) in str(caught.value)
    assert expected in str(caught.value)


def violations(error: grpc.aio.AioRpcError) -> dict[str, str]:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            return {v.field: v.description for v in bad.field_violations}
    return {}


def schema(value: dict[str, object]) -> struct_pb2.Struct:
    return json_format.ParseDict(value, struct_pb2.Struct())


@pytest.mark.parametrize(
    ("run_input", "field", "says"),
    [
        (
            run_pb2.RunInput(options=run_pb2.RunOptions(provider="acme", model="x")),
            "options.provider",
            "acme",
        ),
        (run_pb2.RunInput(options=run_pb2.RunOptions(model="acme:x")), "options.model", "unknown provider"),
        (run_pb2.RunInput(options=run_pb2.RunOptions(provider="openai")), "options.model", "needs a model"),
        (
            run_pb2.RunInput(
                response_format=run_pb2.RESPONSE_FORMAT_JSON, json_schema=schema({"type": "nope"})
            ),
            "json_schema",
            "not a valid JSON Schema",
        ),
        (
            run_pb2.RunInput(
                response_format=run_pb2.RESPONSE_FORMAT_JSON, json_schema=schema({"type": "array"})
            ),
            "json_schema",
            "JSON object",
        ),
        *[
            (
                run_pb2.RunInput(media=[run_pb2.Media(type="image/png", data=url)]),
                "media[0].data",
                "non-public",
            )
            for url in (
                "http://127.0.0.1/a.png",
                "http://10.1.2.3/a.png",
                "http://169.254.169.254/latest/meta-data",
                "http://[::1]:8080/a.png",
                "http://[::ffff:192.168.0.1]/a.png",
            )
        ],
        (
            run_pb2.RunInput(media=[run_pb2.Media(type="image/png", data="http://localhost/a")]),
            "media[0].data",
            "local",
        ),
        (
            run_pb2.RunInput(media=[run_pb2.Media(type="image/png", data="not base64!")]),
            "media[0].data",
            "base64",
        ),
        (run_pb2.RunInput(media=[run_pb2.Media(type="png", data="aGk=")]), "media[0].type", "MIME"),
    ],
)
async def test_bad_inputs_are_invalid_argument_and_store_nothing(
    h: Harness, run_input: run_pb2.RunInput, field: str, says: str
) -> None:
    run_input.message = run_input.message or "hello"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await h.stub.Run(pb.RunRequest(agent_id="ai-echo", input=run_input))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    found = violations(caught.value)
    assert says in found[f"input.{field}"]
    assert (await h.stub.ListRuns(pb.ListRunsRequest())).total_size == 0


async def test_public_media_url_and_base64_are_accepted(h: Harness) -> None:
    media = [
        run_pb2.Media(type="image/png", data="http://93.184.215.14/a.png"),
        run_pb2.Media(type="image/png", data="aGk="),
    ]
    request = pb.RunRequest(agent_id="echo", input=run_pb2.RunInput(message="look", media=media), wait=True)
    run = (await h.stub.Run(request)).run
    assert run.state == run_pb2.RUN_STATE_COMPLETED
    assert [m.data for m in run.input.media] == [m.data for m in media]


async def test_a_provider_without_its_key_fails_the_run_clearly(
    launch: Launcher, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AGENTRUN_TEST_KEY", raising=False)
    body = (
        "providers: {openai: {api_key_env: AGENTRUN_TEST_KEY}}\n"
        "agents: [{id: gpt, model: 'openai:gpt-4o-mini'}]"
    )
    h = await launch(agents_file=write(tmp_path, body))
    run = await h.run("gpt", "hello", wait=True)
    assert run.state == run_pb2.RUN_STATE_FAILED
    assert run.error.reason == "PROVIDER_NOT_CONFIGURED"
    assert "AGENTRUN_TEST_KEY" in run.error.message


async def test_a_team_delegates_to_a_member_as_a_tool_call(h: Harness) -> None:
    events = await h.events(
        run=pb.RunRequest(agent_id="ai-team", input=run_pb2.RunInput(message="what is 2 + 3"))
    )
    starts = [e.tool_call for e in events if e.type == run_pb2.EVENT_TYPE_TOOL_START]
    ends = [e.tool_call for e in events if e.type == run_pb2.EVENT_TYPE_TOOL_END]
    assert [s.name for s in starts] == ["ai-tools"]
    assert json.loads(starts[0].arguments_json) == {"instruction": "what is 2 + 3"}
    assert "5" in ends[0].result and not ends[0].is_error
    run = await h.get(events[0].run_id)
    assert run.state == run_pb2.RUN_STATE_COMPLETED
    assert [c.name for c in run.tool_calls] == ["ai-tools"]
    assert run.usage.model_calls == 4  # the team's two model calls and its member's two


async def test_runs_of_one_session_run_one_at_a_time(h: Harness) -> None:
    slow = "tokens=6 delay_ms=40"
    first = await h.run("slow", slow, session_id="s-1")
    second = await h.run("slow", slow, session_id="s-1")
    other = await h.run("slow", slow, session_id="s-2")
    finished = []
    for run in (first, second, other):
        while (current := await h.get(run.id)).state != run_pb2.RUN_STATE_COMPLETED:
            await asyncio.sleep(0.02)
        finished.append(current)
    a, b, c = finished
    assert b.start_time.ToMicroseconds() >= a.complete_time.ToMicroseconds()
    assert c.start_time.ToMicroseconds() < a.complete_time.ToMicroseconds()  # other sessions do not wait


def test_migration_adds_the_messages_column_to_an_older_database(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'old.db'}")
    migrate(engine)
    with engine.begin() as conn:  # make it look like a database from before migration 2
        conn.execute(text("ALTER TABLE run DROP COLUMN messages"))
        conn.execute(text("DELETE FROM schema_version WHERE version = 2"))
    migrate(engine)
    with engine.connect() as conn:
        columns = {row[1] for row in conn.execute(text("PRAGMA table_info(run)"))}
        versions = list(conn.execute(text("SELECT version FROM schema_version ORDER BY version")).scalars())
    assert "messages" in columns
    assert versions == list(range(1, len(MIGRATIONS) + 1))


@pytest.mark.parametrize("provider", sorted(BUILTIN_PROVIDERS))
def test_every_builtin_provider_builds_its_model(provider: str, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = BUILTIN_PROVIDERS[provider]
    if spec.api_key_env:
        monkeypatch.setenv(spec.api_key_env, "test-key")
    catalog = ModelCatalog()
    model = catalog.model(catalog.parse(f"{provider}:some-model"))
    assert model.model_name == "some-model"
    assert catalog.model(ModelRef(provider, "some-model")) is model  # built once, reused
