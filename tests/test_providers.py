"""Real agents end to end: the server's pydantic-ai agents talk over HTTP, through the real OpenAI and
Anthropic clients, to a local stand-in speaking each provider's wire format."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from agentrun.v1 import run_pb2, run_service_pb2_grpc
from agentrun.v1 import run_service_pb2 as pb
from google.protobuf import duration_pb2, json_format, struct_pb2

from server.app import running
from tests.conftest import Harness, Launcher, server_settings
from tests.standins.llm import LlmStandin, Turn, Usage

WIRES = ["openai", "anthropic"]
AGENT = {"openai": "gpt", "anthropic": "claude"}
COMPLETED, PAUSED, FAILED = run_pb2.RUN_STATE_COMPLETED, run_pb2.RUN_STATE_PAUSED, run_pb2.RUN_STATE_FAILED


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'agentrun.db'}"


@pytest.fixture
async def llm(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[LlmStandin]:
    async with LlmStandin() as standin:
        assert standin.api_key is not None
        monkeypatch.setenv("STANDIN_KEY", standin.api_key)
        yield standin


@pytest.fixture
def agents_file(tmp_path: Path, llm: LlmStandin) -> Path:
    common = {
        "instructions": "Be brief.",
        "tools": ["calculator", "send_email"],
        "approval_tools": ["send_email"],
        "options": {"temperature": 0.3},
    }
    config = {
        "providers": {
            "openai": {"base_url": llm.openai_base_url, "api_key_env": "STANDIN_KEY", "max_retries": 0},
            "anthropic": {"base_url": llm.anthropic_base_url, "api_key_env": "STANDIN_KEY", "max_retries": 0},
        },
        "agents": [
            {"id": "gpt", "model": "openai:gpt-4o", **common},
            {"id": "claude", "model": "anthropic:claude-sonnet-4-6", **common},
        ],
    }
    path = tmp_path / "agents.yaml"
    path.write_text(json.dumps(config))  # JSON is YAML
    return path


@pytest.fixture
async def h(launch: Launcher, agents_file: Path) -> Harness:
    return await launch(agents_file=agents_file)


def request(wire: str, message: str, **fields: object) -> pb.RunRequest:
    run_input = fields.pop("input", None) or run_pb2.RunInput(message=message)
    return pb.RunRequest(agent_id=AGENT[wire], input=run_input, **fields)  # type: ignore[arg-type]


def texts(events: list[run_pb2.RunEvent], kind: int) -> str:
    return "".join(e.text for e in events if e.type == kind)


@pytest.mark.parametrize("wire", WIRES)
async def test_streamed_text_and_thinking(h: Harness, llm: LlmStandin, wire: str) -> None:
    llm.add(Turn(thinking="The user greets me.", text="Hello from the model", usage=Usage(21, 7)))
    events = await h.events(run=request(wire, "hi there"))

    assert texts(events, run_pb2.EVENT_TYPE_REASONING_DELTA) == "The user greets me."
    assert texts(events, run_pb2.EVENT_TYPE_CONTENT_DELTA) == "Hello from the model"
    assert len([e for e in events if e.type == run_pb2.EVENT_TYPE_CONTENT_DELTA]) > 1  # really streamed
    run = await h.get(events[0].run_id)
    assert run.state == COMPLETED and run.output == "Hello from the model"
    assert list(run.reasoning_steps) == ["The user greets me."]
    assert (run.usage.input_tokens, run.usage.output_tokens, run.usage.model_calls) == (21, 7, 1)
    sent = llm.requests[0]
    assert sent.model == ("gpt-4o" if wire == "openai" else "claude-sonnet-4-6")
    assert sent.stream and sent.body["temperature"] == 0.3
    assert "Be brief." in json.dumps(sent.body)
    assert sent.api_key == llm.api_key


@pytest.mark.parametrize("wire", WIRES)
async def test_a_tool_call_round_trip(h: Harness, llm: LlmStandin, wire: str) -> None:
    llm.add(Turn(tool_calls=[("calculator", {"expression": "6 * 7"})]), Turn(text="It is 42."))
    events = await h.events(run=request(wire, "what is 6 times 7?"))

    start = next(e.tool_call for e in events if e.type == run_pb2.EVENT_TYPE_TOOL_START)
    end = next(e.tool_call for e in events if e.type == run_pb2.EVENT_TYPE_TOOL_END)
    assert (start.name, json.loads(start.arguments_json)) == ("calculator", {"expression": "6 * 7"})
    assert (end.id, end.result, end.is_error) == (start.id, "42", False)
    run = await h.get(events[0].run_id)
    assert run.output == "It is 42." and [c.result for c in run.tool_calls] == ["42"]
    assert set(llm.requests[0].tool_names) >= {"calculator", "send_email"}
    assert "42" in json.dumps(llm.requests[1].messages)


@pytest.mark.parametrize(("wire", "decision"), [("openai", "APPROVE"), ("anthropic", "REJECT")])
async def test_approval_survives_a_restart(
    llm: LlmStandin, agents_file: Path, database_url: str, wire: str, decision: str
) -> None:
    """The run pauses on one server, which then stops; another server resumes it from the database."""
    email = {"to": "ops@example.com", "subject": "release", "body": "done"}
    llm.add(Turn(tool_calls=[("send_email", email)]), Turn(text="Handled."))
    settings = server_settings(database_url, agents_file)
    async with running(settings) as server, grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = run_service_pb2_grpc.RunServiceStub(channel)
        paused = (await stub.Run(request(wire, "email ops that the release is done", wait=True))).run
    assert paused.state == PAUSED and paused.pending_action.tool_name == "send_email"
    assert json.loads(paused.pending_action.arguments_json) == email
    assert len(llm.requests) == 1

    async with running(settings) as server, grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = run_service_pb2_grpc.RunServiceStub(channel)
        continued = pb.ContinueRequest(
            run_id=paused.id,
            tool_call_id=paused.pending_action.tool_call_id,
            decision=f"DECISION_{decision}",
            wait=True,
        )
        done = (await stub.Continue(continued)).run
    assert done.state == COMPLETED and done.output == "Handled."
    returned = json.dumps(llm.requests[1].messages)
    if decision == "APPROVE":
        assert "queued for delivery" in returned
        assert [c.name for c in done.tool_calls] == ["send_email"]
    else:
        assert "refused" in returned and "queued for delivery" not in returned


@pytest.mark.parametrize("wire", WIRES)
async def test_json_schema_output_is_checked_and_returned(h: Harness, llm: LlmStandin, wire: str) -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
        "required": ["city", "population"],
    }
    # The first answer misses a required field: the model is told and answers again.
    llm.add(Turn(output={"city": "Paris"}), Turn(output={"city": "Paris", "population": 2100000}))
    run_input = run_pb2.RunInput(
        message="largest city of France?",
        response_format=run_pb2.RESPONSE_FORMAT_JSON,
        json_schema=json_format.ParseDict(schema, struct_pb2.Struct()),
    )
    run = (await h.stub.Run(request(wire, "", input=run_input, wait=True))).run

    assert run.state == COMPLETED, run.error.message
    assert json_format.MessageToDict(run.output_json) == {"city": "Paris", "population": 2100000}
    assert json.loads(run.output) == {"city": "Paris", "population": 2100000}
    assert "population" in json.dumps(llm.requests[1].messages)  # the retry said what was wrong
    assert "population" in json.dumps(llm.requests[0].body.get("tools"))  # the model saw the schema


@pytest.mark.parametrize("wire", WIRES)
async def test_a_provider_error_fails_the_run_with_its_message(
    h: Harness, llm: LlmStandin, wire: str
) -> None:
    llm.add(Turn(status=500))
    run = (await h.stub.Run(request(wire, "hello", wait=True))).run
    assert run.state == FAILED
    assert run.error.reason == "PROVIDER_ERROR"
    assert "HTTP 500" in run.error.message and "LlmStandin: scripted 500" in run.error.message


@pytest.mark.parametrize("wire", WIRES)
async def test_a_malformed_reply_fails_the_run(h: Harness, llm: LlmStandin, wire: str) -> None:
    llm.add(Turn(text="x", malformed=True))
    run = (await h.stub.Run(request(wire, "hello", wait=True))).run
    assert run.state == FAILED and run.error.reason == "PROVIDER_ERROR", run.error


async def test_a_hanging_provider_is_cut_off_by_the_run_timeout(h: Harness, llm: LlmStandin) -> None:
    llm.add(Turn(hang=True))
    started = time.monotonic()
    run = (
        await h.stub.Run(request("openai", "hello", wait=True, timeout=duration_pb2.Duration(seconds=1)))
    ).run
    assert run.state == FAILED and run.error.reason == "DEADLINE_EXCEEDED"
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("wire", WIRES)
async def test_a_session_continues_the_conversation(h: Harness, llm: LlmStandin, wire: str) -> None:
    llm.add("Nice to meet you, Ada.", "Your name is Ada.", "I do not know your name.")
    first = (await h.stub.Run(request(wire, "My name is Ada.", session_id="conv-1", wait=True))).run
    second = (await h.stub.Run(request(wire, "What is my name?", session_id="conv-1", wait=True))).run
    other = (await h.stub.Run(request(wire, "What is my name?", wait=True))).run

    assert (first.state, second.state, other.state) == (COMPLETED, COMPLETED, COMPLETED)
    assert second.session_id == "conv-1" and other.session_id not in ("", "conv-1")
    history = json.dumps(llm.requests[1].messages)
    assert "My name is Ada." in history and "Nice to meet you, Ada." in history
    assert "Ada" not in json.dumps(llm.requests[2].messages)


async def test_followups_come_from_the_model(h: Harness, llm: LlmStandin) -> None:
    llm.add("Paris.", "1. How big is Paris?\n2. What is its history?\n- What should I visit?")
    run_input = run_pb2.RunInput(message="capital of France?", generate_followups=True)
    events = await h.events(run=request("openai", "", input=run_input))
    stop = events[-1]
    assert stop.type == run_pb2.EVENT_TYPE_STOP
    expected = ["How big is Paris?", "What is its history?", "What should I visit?"]
    assert list(stop.stop.followups) == expected
    run = await h.get(stop.run_id)
    assert list(run.followups) == expected and run.output == "Paris." and run.usage.model_calls == 2


async def test_per_run_overrides_reach_the_provider(h: Harness, llm: LlmStandin) -> None:
    llm.add("one", "two")
    options = run_pb2.RunOptions(model="gpt-4o-mini", temperature=0.9, max_tokens=77, system_prompt="Rhyme.")
    await h.stub.Run(request("openai", "", input=run_pb2.RunInput(message="hi", options=options), wait=True))
    switch = run_pb2.RunOptions(model="anthropic:claude-haiku-4-5")
    await h.stub.Run(request("openai", "", input=run_pb2.RunInput(message="hi", options=switch), wait=True))

    first, second = llm.requests
    assert (first.wire, first.model, first.body["temperature"]) == ("openai", "gpt-4o-mini", 0.9)
    assert first.body["max_completion_tokens"] == 77 and "Rhyme." in json.dumps(first.body)
    assert (second.wire, second.model) == ("anthropic", "claude-haiku-4-5")


async def test_media_reaches_the_model(h: Harness, llm: LlmStandin) -> None:
    llm.add("A red pixel.")
    png = "iVBORw0KGgo="
    media = [run_pb2.Media(type="image/png", data=png)]
    run_input = run_pb2.RunInput(message="what is this?", media=media)
    run = (await h.stub.Run(request("openai", "", input=run_input, wait=True))).run
    assert run.state == COMPLETED
    assert f"data:image/png;base64,{png}" in json.dumps(llm.requests[0].messages)
