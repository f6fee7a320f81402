"""A local HTTP stand-in for LLM providers (OpenAI Chat Completions, Anthropic Messages) on 127.0.0.1.

    async with LlmStandin([Turn(text="Hello there")]) as llm:
        result = await Agent(llm.openai_model()).run("hi")  # or llm.anthropic_model()
        assert llm.requests[0].model == "gpt-4o"

OpenAI-compatible thinking goes out as the `reasoning_content` field (DeepSeek style); pydantic-ai's
`OpenAIChatModel` reads it (and `reasoning`, and `<think>` tags in content) as thinking.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal

from aiohttp import web
from anthropic import AsyncAnthropic
from openai import AsyncOpenAI
from pydantic_ai.models.anthropic import AnthropicModel
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.anthropic import AnthropicProvider
from pydantic_ai.providers.openai import OpenAIProvider

Wire = Literal["openai", "anthropic"]
ToolCall = tuple[str, dict[str, Any]] | tuple[str, dict[str, Any], str]  # (name, args[, call_id])
Json = dict[str, Any]

OUTPUT_TOOL_PREFIX = "final_result"


@dataclass(frozen=True)
class Usage:
    input_tokens: int = 10
    output_tokens: int = 5


@dataclass
class Turn:
    """One scripted reply. Content is sent in this order: thinking, text, tool calls (then `output`)."""

    text: str | None = None
    thinking: str | None = None
    tool_calls: list[ToolCall] = field(default_factory=list[ToolCall])
    output: Json | None = None  # a call of the request's final_result* tool, else JSON text
    usage: Usage = field(default_factory=Usage)
    status: int = 200
    error_body: Json | None = None  # for status >= 400; default: the wire format's error shape
    hang: bool = False  # never answer, until the client disconnects or the stand-in shuts down
    delay_s: float = 0.0  # before answering
    chunk_delay_s: float = 0.0  # between streamed events
    malformed: bool = False  # a body (or SSE data) that is not valid JSON


@dataclass
class Recorded:
    """One request as the stand-in received it. Header names are lower-case."""

    wire: Wire
    path: str
    headers: dict[str, str]
    body: Json
    raw: bytes = b""

    @property
    def model(self) -> str:
        return str(self.body.get("model", ""))

    @property
    def stream(self) -> bool:
        return bool(self.body.get("stream", False))

    @property
    def messages(self) -> list[Json]:
        return list(self.body.get("messages", []))

    @property
    def tool_names(self) -> list[str]:
        tools: list[Json] = self.body.get("tools") or []
        return [str(t["function"]["name"] if "function" in t else t.get("name", "")) for t in tools]

    @property
    def api_key(self) -> str | None:
        """From `x-api-key`, else `Authorization: Bearer` (which anthropic 2.x sends its api_key as)."""
        auth = self.headers.get("authorization", "")
        return self.headers.get("x-api-key") or (auth[7:] if auth.startswith("Bearer ") else None)


Responder = Callable[[Recorded], Turn]


@dataclass
class _Block:
    kind: Literal["thinking", "text", "tool"]
    text: str  # for a tool call: its arguments as JSON
    name: str = ""
    id: str = ""

    def anthropic(self, *, empty: bool = False) -> Json:
        text = "" if empty else self.text
        if self.kind == "thinking":
            return {"type": "thinking", "thinking": text, "signature": _sig(text)}
        if self.kind == "text":
            return {"type": "text", "text": text}
        return {"type": "tool_use", "id": self.id, "name": self.name, "input": json.loads(text or "{}")}


def _sig(thinking: str) -> str:
    return f"standin-signature-{len(thinking)}" if thinking else ""


def _pieces(text: str) -> list[str]:
    """Word by word, each piece keeping its trailing whitespace."""
    return [p for p in re.split(r"(?<=\s)(?=\S)", text) if p] or [text]


def _halves(text: str) -> list[str]:
    return [p for p in (text[: len(text) // 2], text[len(text) // 2 :]) if p]


@dataclass
class _Reply:
    """A successful turn rendered for one request, in either wire format."""

    turn: Turn
    request: Recorded
    number: int
    blocks: list[_Block] = field(default_factory=list[_Block])
    created: int = field(default_factory=lambda: int(time.time()))

    def __post_init__(self) -> None:
        turn, request = self.turn, self.request
        if turn.thinking:
            self.blocks.append(_Block("thinking", turn.thinking))
        if turn.text is not None:
            self.blocks.append(_Block("text", turn.text))
        calls = list(turn.tool_calls)
        if turn.output is not None:
            tool = next((n for n in request.tool_names if n.startswith(OUTPUT_TOOL_PREFIX)), None)
            if tool is None:
                self.blocks.append(_Block("text", json.dumps(turn.output)))
            else:
                calls.append((tool, turn.output))
        prefix = "toolu" if request.wire == "anthropic" else "call"
        for i, call in enumerate(calls):
            call_id = call[2] if len(call) == 3 else f"{prefix}_standin_{self.number}_{i}"
            self.blocks.append(_Block("tool", json.dumps(call[1]), call[0], call_id))

    @property
    def stop_reason(self) -> str:
        tool = any(b.kind == "tool" for b in self.blocks)
        if self.request.wire == "openai":
            return "tool_calls" if tool else "stop"
        return "tool_use" if tool else "end_turn"

    def json(self) -> Json:
        """The non-streaming response body."""
        if self.request.wire == "anthropic":
            return self._message([b.anthropic() for b in self.blocks], self.stop_reason, self.turn.usage)
        message: Json = {"role": "assistant", "content": None}
        for b in self.blocks:
            if b.kind == "thinking":
                message["reasoning_content"] = b.text
            elif b.kind == "text":
                message["content"] = (message["content"] or "") + b.text
            else:
                call = {"id": b.id, "type": "function", "function": {"name": b.name, "arguments": b.text}}
                message.setdefault("tool_calls", []).append(call)
        choice = {"index": 0, "message": message, "finish_reason": self.stop_reason, "logprobs": None}
        return {**self._openai_base("chat.completion"), "choices": [choice], "usage": self._openai_usage()}

    def frames(self) -> Iterator[str]:
        """The streamed response body: SSE frames."""
        if self.request.wire == "anthropic":
            for event in self._anthropic_events():
                yield f"event: {event['type']}\ndata: {json.dumps(event)}\n\n"
            return
        for chunk in self._openai_chunks():
            yield f"data: {json.dumps(chunk)}\n\n"
        yield "data: [DONE]\n\n"

    def _openai_base(self, kind: str) -> Json:
        return dict(id=f"chatcmpl-{self.number}", object=kind, created=self.created, model=self.request.model)

    def _openai_usage(self) -> Json:
        inp, out = self.turn.usage.input_tokens, self.turn.usage.output_tokens
        return {"prompt_tokens": inp, "completion_tokens": out, "total_tokens": inp + out}

    def _openai_chunks(self) -> Iterator[Json]:
        base = self._openai_base("chat.completion.chunk")

        def chunk(delta: Json, finish: str | None = None) -> Json:
            return {**base, "choices": [dict(index=0, delta=delta, finish_reason=finish, logprobs=None)]}

        yield chunk({"role": "assistant"})
        tools = 0
        for b in self.blocks:
            if b.kind == "tool":
                fn = {"name": b.name, "arguments": ""}
                yield chunk({"tool_calls": [dict(index=tools, id=b.id, type="function", function=fn)]})
                for piece in _halves(b.text):
                    yield chunk({"tool_calls": [{"index": tools, "function": {"arguments": piece}}]})
                tools += 1
            else:
                key = "reasoning_content" if b.kind == "thinking" else "content"
                yield from (chunk({key: piece}) for piece in _pieces(b.text))
        yield chunk({}, self.stop_reason)
        if (self.request.body.get("stream_options") or {}).get("include_usage"):
            yield {**base, "choices": [], "usage": self._openai_usage()}

    def _message(self, content: list[Json], stop: str | None, usage: Usage) -> Json:
        tokens = {"input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens}
        head = dict(id=f"msg_{self.number}", type="message", role="assistant", model=self.request.model)
        return {**head, "content": content, "stop_reason": stop, "stop_sequence": None, "usage": tokens}

    def _anthropic_events(self) -> Iterator[Json]:
        start = self._message([], None, Usage(self.turn.usage.input_tokens, 1))
        yield {"type": "message_start", "message": start}
        for index, b in enumerate(self.blocks):
            yield {"type": "content_block_start", "index": index, "content_block": b.anthropic(empty=True)}
            deltas: list[Json]
            if b.kind == "thinking":
                deltas = [{"type": "thinking_delta", "thinking": p} for p in _pieces(b.text)]
                deltas.append({"type": "signature_delta", "signature": _sig(b.text)})
            elif b.kind == "text":
                deltas = [{"type": "text_delta", "text": p} for p in _pieces(b.text)]
            else:
                deltas = [{"type": "input_json_delta", "partial_json": p} for p in _halves(b.text)]
            yield from ({"type": "content_block_delta", "index": index, "delta": d} for d in deltas)
            yield {"type": "content_block_stop", "index": index}
        delta, usage = {"stop_reason": self.stop_reason, "stop_sequence": None}, self.turn.usage
        yield {"type": "message_delta", "delta": delta, "usage": {"output_tokens": usage.output_tokens}}
        yield {"type": "message_stop"}


_MALFORMED = {
    "openai": 'data: {"id": "broken\n\n',
    "anthropic": 'event: message_start\ndata: {"type": "message_start", "message": \n\n',
}


def _error(wire: Wire, status: int, message: str) -> web.Response:
    if wire == "openai":
        body: Json = {"error": dict(message=message, type="server_error", param=None, code=str(status))}
    else:
        kind = {401: "authentication_error", 404: "not_found_error", 429: "rate_limit_error"}.get(status)
        body = {"type": "error", "error": {"type": kind or "api_error", "message": message}}
    return web.json_response(body, status=status)


class LlmStandin:
    """`async with LlmStandin(turns) as llm:` serves on `llm.url` until the block exits.

    Turns answer one request each, in order, then `responder` does; with neither left, a 500 says the
    script is exhausted. With `api_key` set, a request with another key gets a 401 and uses no turn.
    """

    def __init__(
        self,
        turns: Iterable[Turn | str] = (),
        *,
        responder: Responder | None = None,
        api_key: str | None = "sk-standin-test",
        models: Iterable[str] = ("gpt-4o", "claude-sonnet-4-6"),
    ) -> None:
        self._turns: deque[Turn] = deque()
        self._scripted = 0
        self.add(*turns)
        self.responder = responder
        self.api_key = api_key
        self.models = list(models)
        self.requests: list[Recorded] = []
        self._closing = asyncio.Event()
        self._clients: list[AsyncOpenAI | AsyncAnthropic] = []
        self._runner: web.AppRunner | None = None
        self._port = 0

    def add(self, *turns: Turn | str) -> None:
        """Append turns to the script; a plain string is `Turn(text=...)`."""
        self._turns.extend(Turn(text=t) if isinstance(t, str) else t for t in turns)
        self._scripted += len(turns)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    @property
    def openai_base_url(self) -> str:
        return f"{self.url}/v1"

    @property
    def anthropic_base_url(self) -> str:
        return self.url  # the SDK appends /v1/messages

    def openai_model(self, name: str = "gpt-4o", *, max_retries: int = 0) -> OpenAIChatModel:
        """pydantic-ai's OpenAI Chat Completions model pointed here (its client is closed on exit)."""
        key = self.api_key or "none"
        client = AsyncOpenAI(base_url=self.openai_base_url, api_key=key, max_retries=max_retries)
        self._clients.append(client)
        return OpenAIChatModel(name, provider=OpenAIProvider(openai_client=client))

    def anthropic_model(self, name: str = "claude-sonnet-4-6", *, max_retries: int = 0) -> AnthropicModel:
        """pydantic-ai's Anthropic model pointed here (its client is closed on exit)."""
        key = self.api_key or "none"
        client = AsyncAnthropic(base_url=self.anthropic_base_url, api_key=key, max_retries=max_retries)
        self._clients.append(client)
        return AnthropicModel(name, provider=AnthropicProvider(anthropic_client=client))

    async def __aenter__(self) -> LlmStandin:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", partial(self._handle, wire="openai"))
        app.router.add_post("/v1/messages", partial(self._handle, wire="anthropic"))
        app.router.add_get("/v1/models", self._models)
        self._runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=1.0, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self._port = int(self._runner.addresses[0][1])
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._closing.set()  # wakes hung handlers
        for client in self._clients:
            await client.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _models(self, request: web.Request) -> web.Response:
        data = [dict(id=m, object="model", type="model", created=0, owned_by="standin") for m in self.models]
        return web.json_response({"object": "list", "data": data, "has_more": False})

    def _next_turn(self, recorded: Recorded) -> Turn:
        if self._turns:
            return self._turns.popleft()
        if self.responder is not None:
            return self.responder(recorded)
        raise LookupError(
            f"LlmStandin: script exhausted: request #{len(self.requests)} ({recorded.path}, model "
            f"{recorded.model!r}) has no turn left; {self._scripted} turn(s) were scripted"
        )

    async def _handle(self, request: web.Request, wire: Wire) -> web.StreamResponse:
        raw = await request.read()
        try:
            parsed = json.loads(raw)
        except ValueError:
            parsed = None
        body: Json = parsed if isinstance(parsed, dict) else {}
        headers = {k.lower(): v for k, v in request.headers.items()}
        recorded = Recorded(wire, request.path, headers, body, raw)
        self.requests.append(recorded)
        number = len(self.requests)
        if self.api_key is not None and recorded.api_key != self.api_key:
            return _error(wire, 401, "LlmStandin: wrong or missing API key")
        try:
            turn = self._next_turn(recorded)
        except Exception as e:
            return _error(wire, 500, f"{type(e).__name__}: {e}")
        if turn.delay_s:
            await asyncio.sleep(turn.delay_s)
        if turn.hang:
            await self._closing.wait()
            return web.Response(status=503, text="LlmStandin: shutting down")
        if turn.status >= 400:
            if turn.error_body is not None:
                return web.json_response(turn.error_body, status=turn.status)
            return _error(wire, turn.status, f"LlmStandin: scripted {turn.status}")
        reply = _Reply(turn, recorded, number)
        if not recorded.stream:
            if turn.malformed:
                return web.Response(text='{"id": "broken', content_type="application/json")
            return web.json_response(reply.json())
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for frame in [_MALFORMED[wire]] if turn.malformed else reply.frames():
            await response.write(frame.encode())
            if turn.chunk_delay_s:
                await asyncio.sleep(turn.chunk_delay_s)
        await response.write_eof()
        return response
