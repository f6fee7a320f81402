"""The LLM stand-in, driven by pydantic-ai's real OpenAI and Anthropic models over HTTP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Literal

import pytest
from anthropic import AsyncAnthropic
from openai import AsyncOpenAI
from pydantic import BaseModel
from pydantic_ai import Agent, AgentRunResultEvent, NativeOutput, StructuredDict
from pydantic_ai.exceptions import ModelAPIError, ModelHTTPError
from pydantic_ai.messages import (
    ModelResponse,
    PartDeltaEvent,
    PartStartEvent,
    TextPart,
    TextPartDelta,
    ThinkingPart,
    ThinkingPartDelta,
)
from pydantic_ai.models import Model
from pydantic_ai.models.anthropic import AnthropicModel
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.anthropic import AnthropicProvider
from pydantic_ai.providers.openai import OpenAIProvider
from pydantic_ai.settings import ModelSettings

from tests.standins.llm import LlmStandin, Recorded, Turn, Usage

WireName = Literal["openai", "anthropic"]
WIRES: list[WireName] = ["openai", "anthropic"]
PATHS = {"openai": "/v1/chat/completions", "anthropic": "/v1/messages"}
CITY = StructuredDict(
    {
        "type": "object",
        "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
        "required": ["city", "population"],
    },
    name="City",
)


def model_for(llm: LlmStandin, wire: WireName) -> Model:
    return llm.openai_model() if wire == "openai" else llm.anthropic_model()


# With these settings `agent.run` sends a non-streaming request. Without max_tokens, pydantic-ai asks
# Anthropic for the model's maximum output (128000), which the SDK refuses to send unstreamed, so it streams.
NON_STREAMING = ModelSettings(max_tokens=1024)


def tool_results(request: Recorded) -> dict[str, str]:
    """Tool results sent back to the model, by tool call id, in either wire format."""
    results: dict[str, str] = {}
    for message in request.messages:
        if message.get("role") == "tool":
            results[message["tool_call_id"]] = message["content"]
        content = message.get("content")
        for block in content if isinstance(content, list) else []:
            if block.get("type") == "tool_result":
                inner = block["content"]
                text = inner if isinstance(inner, str) else "".join(b["text"] for b in inner)
                results[block["tool_use_id"]] = text
    return results


@pytest.mark.parametrize("wire", WIRES)
async def test_streamed_text_arrives_word_by_word(wire: WireName) -> None:
    async with LlmStandin([Turn(text="The quick brown fox")]) as llm:
        agent = Agent(model_for(llm, wire), instructions="Be brief.")
        starts: list[str] = []
        deltas: list[str] = []
        output: object = None
        async with agent.run_stream_events("Tell me about foxes") as events:
            async for event in events:
                if isinstance(event, PartStartEvent) and isinstance(event.part, TextPart):
                    starts.append(event.part.content)
                elif isinstance(event, PartDeltaEvent) and isinstance(event.delta, TextPartDelta):
                    deltas.append(event.delta.content_delta)
                elif isinstance(event, AgentRunResultEvent):
                    output = event.result.output
    assert starts == ["The "]
    assert deltas == ["quick ", "brown ", "fox"]
    assert output == "The quick brown fox"
    [request] = llm.requests
    assert request.path == PATHS[wire]
    assert request.stream is True
    assert request.api_key == "sk-standin-test"
    assert request.model == ("gpt-4o" if wire == "openai" else "claude-sonnet-4-6")
    assert "Tell me about foxes" in str(request.messages[-1]["content"])
    if wire == "openai":
        assert request.headers["authorization"] == "Bearer sk-standin-test"
        assert request.body["stream_options"] == {"include_usage": True}
        assert request.messages[0] == {"role": "system", "content": "Be brief."}
    else:
        assert request.headers["authorization"] == "Bearer sk-standin-test"  # anthropic 2.x: not x-api-key
        assert request.body["system"][-1] == {"type": "text", "text": "Be brief."}


@pytest.mark.parametrize("wire", WIRES)
async def test_tool_call_round_trip(wire: WireName) -> None:
    calls: list[tuple[int, int]] = []
    script = [
        Turn(tool_calls=[("add", {"a": 2, "b": 3}), ("add", {"a": 1, "b": 1}, "my-id")]),
        Turn(text="5, 2"),
    ]
    async with LlmStandin(script) as llm:
        agent = Agent(model_for(llm, wire))

        @agent.tool_plain
        def add(a: int, b: int) -> int:
            """Add two numbers."""
            calls.append((a, b))
            return a + b

        result = await agent.run("What is 2 + 3?")
    assert sorted(calls) == [(1, 1), (2, 3)]
    assert result.output == "5, 2"
    first, second = llm.requests
    assert first.tool_names == ["add"]
    call_id = "call_standin_1_0" if wire == "openai" else "toolu_standin_1_0"
    assert tool_results(second) == {call_id: "5", "my-id": "2"}
    assistant = next(m for m in second.messages if m["role"] == "assistant")
    if wire == "openai":
        sent = [(c["id"], json.loads(c["function"]["arguments"])) for c in assistant["tool_calls"]]
    else:
        sent = [(c["id"], c["input"]) for c in assistant["content"]]
    assert sent == [(call_id, {"a": 2, "b": 3}), ("my-id", {"a": 1, "b": 1})]


@pytest.mark.parametrize("wire", WIRES)
@pytest.mark.parametrize("stream", [True, False])
async def test_structured_output_uses_the_offered_output_tool(wire: WireName, stream: bool) -> None:
    city = {"city": "Paris", "population": 2_100_000}
    async with LlmStandin([Turn(output=city)]) as llm:
        agent = Agent(model_for(llm, wire), output_type=CITY)
        if stream:
            async with agent.run_stream_events("Biggest French city?") as events:
                output = [e.result.output async for e in events if isinstance(e, AgentRunResultEvent)]
            assert output == [city]
        else:
            result = await agent.run("Biggest French city?", model_settings=NON_STREAMING)
            assert result.output == city
    [request] = llm.requests
    assert request.stream is stream
    [tool] = request.tool_names
    assert tool.startswith("final_result")


class Forecast(BaseModel):
    day: str
    rain_mm: float


async def test_native_output_is_json_text_with_response_format() -> None:
    async with LlmStandin([Turn(output={"day": "Mon", "rain_mm": 1.5})]) as llm:
        agent = Agent(llm.openai_model(), output_type=NativeOutput(Forecast))
        result = await agent.run("Weather?", model_settings={"temperature": 0.2, "max_tokens": 77})
    assert result.output == Forecast(day="Mon", rain_mm=1.5)
    [request] = llm.requests
    assert request.tool_names == []
    assert request.body["response_format"]["type"] == "json_schema"
    assert request.body["temperature"] == 0.2
    assert request.body["max_completion_tokens"] == 77


@pytest.mark.parametrize("wire", WIRES)
async def test_pydantic_model_output_non_streaming(wire: WireName) -> None:
    async with LlmStandin([Turn(output={"day": "Tue", "rain_mm": 0})]) as llm:
        agent = Agent(model_for(llm, wire), output_type=Forecast)
        result = await agent.run("Weather?", model_settings=NON_STREAMING)
    assert result.output == Forecast(day="Tue", rain_mm=0)
    assert llm.requests[0].stream is False
    assert llm.requests[0].body["max_tokens" if wire == "anthropic" else "max_completion_tokens"] == 1024


@pytest.mark.parametrize("wire", WIRES)
async def test_provider_500_raises_model_http_error(wire: WireName) -> None:
    body = {"error": {"message": "upstream exploded", "type": "server_error"}}
    async with LlmStandin([Turn(status=500), Turn(status=503, error_body=body)]) as llm:
        agent = Agent(model_for(llm, wire))
        with pytest.raises(ModelHTTPError) as first:
            await agent.run("hi")
        with pytest.raises(ModelHTTPError) as second:
            await agent.run("hi")
    assert first.value.status_code == 500
    assert "LlmStandin: scripted 500" in str(first.value.body)
    assert second.value.status_code == 503
    assert "upstream exploded" in str(second.value.body)
    assert len(llm.requests) == 2  # max_retries=0: no retries


@pytest.mark.parametrize("wire", WIRES)
async def test_exhausted_script_fails_loudly(wire: WireName) -> None:
    async with LlmStandin(["only one"]) as llm:
        agent = Agent(model_for(llm, wire))
        assert (await agent.run("one")).output == "only one"
        with pytest.raises(ModelHTTPError) as error:
            await agent.run("two")
    assert error.value.status_code == 500
    assert "script exhausted: request #2" in str(error.value.body)


@pytest.mark.parametrize("wire", WIRES)
async def test_thinking_arrives_as_thinking_parts(wire: WireName) -> None:
    async with LlmStandin(
        [Turn(thinking="Foxes are quick", text="Quick."), Turn(thinking="Hm", text="Ok")]
    ) as llm:
        agent = Agent(model_for(llm, wire))
        started: list[str] = []
        deltas: list[str] = []
        async with agent.run_stream_events("Are foxes quick?") as events:
            async for event in events:
                if isinstance(event, PartStartEvent) and isinstance(event.part, ThinkingPart):
                    started.append(event.part.content)
                elif isinstance(event, PartDeltaEvent) and isinstance(event.delta, ThinkingPartDelta):
                    deltas.append(event.delta.content_delta or "")
        assert "".join(started + deltas) == "Foxes are quick"
        assert len(deltas) >= 2
        result = await agent.run("again", model_settings=NON_STREAMING)
    response = result.all_messages()[-1]
    assert isinstance(response, ModelResponse)
    [thinking] = [p for p in response.parts if isinstance(p, ThinkingPart)]
    assert thinking.content == "Hm"
    assert result.output == "Ok"
    if wire == "anthropic":
        assert thinking.signature == "standin-signature-2"
    else:
        assert thinking.id == "reasoning_content"


@pytest.mark.parametrize("wire", WIRES)
@pytest.mark.parametrize("stream", [True, False])
async def test_usage_reaches_the_result(wire: WireName, stream: bool) -> None:
    async with LlmStandin([Turn(text="counted", usage=Usage(input_tokens=123, output_tokens=45))]) as llm:
        agent = Agent(model_for(llm, wire))
        if stream:
            async with agent.run_stream_events("count") as events:
                [result] = [e.result async for e in events if isinstance(e, AgentRunResultEvent)]
        else:
            result = await agent.run("count", model_settings=NON_STREAMING)
    usage = result.usage
    assert (usage.input_tokens, usage.output_tokens, usage.requests) == (123, 45, 1)
    assert llm.requests[0].stream is stream


@pytest.mark.parametrize("wire", WIRES)
async def test_hang_is_cut_off_by_client_timeout_and_shutdown_is_prompt(wire: WireName) -> None:
    llm = LlmStandin([Turn(hang=True)])
    async with llm:
        agent = Agent(model_for(llm, wire))
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.5):
                await agent.run("hello?")
        assert time.monotonic() - started < 2
        closing = time.monotonic()
    assert time.monotonic() - closing < 1.5
    assert len(llm.requests) == 1


@pytest.mark.parametrize("wire", WIRES)
async def test_shutdown_is_prompt_with_a_hung_request_in_flight(wire: WireName) -> None:
    llm = LlmStandin([Turn(hang=True)])
    async with llm:
        run = asyncio.create_task(Agent(model_for(llm, wire)).run("hello?"))
        while not llm.requests:
            await asyncio.sleep(0.01)
        closing = time.monotonic()
    assert time.monotonic() - closing < 1.5
    with pytest.raises((ModelAPIError, ModelHTTPError)):
        await asyncio.wait_for(run, 5)


@pytest.mark.parametrize("wire", WIRES)
async def test_slow_stream_is_cut_off_mid_way(wire: WireName) -> None:
    deltas: list[str] = []
    async with LlmStandin([Turn(text="one two three four five six", chunk_delay_s=0.1)]) as llm:
        agent = Agent(model_for(llm, wire))
        with pytest.raises(TimeoutError):
            # The deadline falls 1.5 chunks after the first delta, however long that took to come.
            async with asyncio.timeout(30) as deadline, agent.run_stream_events("count") as events:
                async for event in events:
                    if isinstance(event, PartDeltaEvent) and isinstance(event.delta, TextPartDelta):
                        if not deltas:
                            deadline.reschedule(asyncio.get_running_loop().time() + 0.15)
                        deltas.append(event.delta.content_delta)
    assert 0 < len(deltas) < 5


@pytest.mark.parametrize("wire", WIRES)
@pytest.mark.parametrize("stream", [True, False])
async def test_malformed_body_is_a_model_api_error(wire: WireName, stream: bool) -> None:
    async with LlmStandin([Turn(malformed=True)]) as llm:
        agent = Agent(model_for(llm, wire))
        with pytest.raises(ModelAPIError, match="decode"):
            if stream:
                async with agent.run_stream_events("hi") as events:
                    async for _ in events:
                        pass
            else:
                await agent.run("hi", model_settings=NON_STREAMING)
    assert llm.requests[0].stream is stream


async def test_delay_and_responder_see_the_conversation() -> None:
    def echo(request: Recorded) -> Turn:
        return Turn(text=f"you said {request.messages[-1]['content']}", delay_s=0.05)

    async with LlmStandin(["scripted first"], responder=echo) as llm:
        agent = Agent(llm.openai_model())
        assert (await agent.run("one")).output == "scripted first"
        started = time.monotonic()
        assert (await agent.run("two")).output == "you said two"
        assert time.monotonic() - started >= 0.05
    assert len(llm.requests) == 2


@pytest.mark.parametrize("wire", WIRES)
async def test_wrong_api_key_is_rejected_without_consuming_a_turn(wire: WireName) -> None:
    async with LlmStandin(["hi"], api_key="right") as llm:
        url = llm.openai_base_url if wire == "openai" else llm.anthropic_base_url
        with pytest.raises(ModelAPIError, match="401"):  # providers built by hand, with another key
            if wire == "openai":
                async with AsyncOpenAI(base_url=url, api_key="wrong", max_retries=0) as oc:
                    model: Model = OpenAIChatModel("gpt-4o", provider=OpenAIProvider(openai_client=oc))
                    await Agent(model).run("hi")
            else:
                async with AsyncAnthropic(base_url=url, api_key="wrong", max_retries=0) as ac:
                    model = AnthropicModel(
                        "claude-sonnet-4-6", provider=AnthropicProvider(anthropic_client=ac)
                    )
                    await Agent(model).run("hi")
        assert (await Agent(model_for(llm, wire)).run("hi")).output == "hi"
    assert [r.api_key for r in llm.requests] == ["wrong", "right"]


async def test_models_list() -> None:
    async with LlmStandin(models=["gpt-4o", "claude-x"]) as llm:
        client = AsyncOpenAI(base_url=llm.openai_base_url, api_key="unused", max_retries=0)
        async with client:
            page = await client.models.list()
    assert [m.id for m in page.data] == ["gpt-4o", "claude-x"]
