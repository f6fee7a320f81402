"""The shared SSE writer for every surface that streams a run: StreamRun's messages become frames
through a per-family SseFormat. Errors before the first message are ordinary HTTP errors; every
event's frame carries `id: <seq>`; Last-Event-ID re-attaches; heartbeats fill silences; a client
that leaves cancels only the gRPC stream, never the run.

aiohttp-sse's EventSourceResponse is not used: its ping is a fixed ": ping" timer on a second task,
while families need their own heartbeat frames, and one writer task keeps frames whole."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Final

import grpc
from agentrun.v1 import run_pb2, run_service_pb2
from aiohttp import web

from common.local_channel import LocalStreamCall
from gateway import keys, rules
from gateway.errors import ApiError, FieldViolation
from gateway.upstream import StreamCall

log = logging.getLogger(__name__)

# A write that cannot go out for this long means a stalled client: drop it, free the stream.
WRITE_TIMEOUT_S: Final = 60.0
HEADERS: Final = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
OPEN_STREAMS: web.AppKey[set[StreamCall]] = web.AppKey("agentrun.gateway.open_streams")
MAX_SEQ: Final = rules.MAX_SEQ  # what the server stores (and takes as after_seq)
MAX_BATCH: Final = 64  # events at most in one write
_LINE_BREAK = re.compile(r"\r\n|\r|\n")  # SSE's only line terminators (not str.splitlines's)


@dataclass(frozen=True)
class Frame:
    data: str
    event: str | None = None  # None: an unnamed ("message") event


def _no_frames(_: object) -> Iterable[Frame]:
    return ()


@dataclass(frozen=True)
class SseFormat:
    """How one surface spells a run's stream."""

    frames: Callable[[run_pb2.RunEvent], Iterable[Frame]]  # 0..n frames per event
    error: Callable[[ApiError], Iterable[Frame]]  # the stream failed after headers were sent
    end: Callable[[run_pb2.RunEvent | None], Iterable[Frame]] = _no_frames  # after the last event
    heartbeat: Callable[[], Frame] | None = None  # None: a comment line
    ids: bool = True  # `id: <seq>` on the last frame of each event
    # The id an event's frames carry when `ids` is set; None: the event's seq.
    event_id: Callable[[run_pb2.RunEvent], str] | None = None
    # The bytes of an event's frames given the event and its id: exactly encode(frames(event), id),
    # built without Frames on the hot path (see gateway.event_json). None: frames, then encode.
    prepared: Callable[[run_pb2.RunEvent, str | None], bytes] | None = None


class _ClientGone(Exception):
    pass


_IDLE: Final = object()  # no message within the heartbeat interval


def setup(app: web.Application) -> None:
    app[OPEN_STREAMS] = set()
    app.on_shutdown.append(_end_streams)


async def _end_streams(app: web.Application) -> None:
    # Shutdown waits for handlers; streams would hold it for their whole run. Ending the gRPC
    # calls ends the streams cleanly, and clients re-attach elsewhere with Last-Event-ID.
    calls = app[OPEN_STREAMS]
    for call in list(calls):
        call.cancel()


def resume_after(request: web.Request) -> int | None:
    """The seq a reconnecting client saw last: the Last-Event-ID header, or `lastEventId` in the
    query for clients that cannot set headers (EventSource polyfills send that); the header wins.
    Each one given must be a decimal seq from 0 to MAX_SEQ, else a 400 names it."""
    given = [
        (name, value.strip())
        for name, value in (
            ("Last-Event-ID", request.headers.get("Last-Event-ID", "")),
            ("lastEventId", request.query.get("lastEventId", "")),
        )
        if value.strip()
    ]
    bad = [name for name, text in given if not is_seq(text)]
    if bad:
        violations = [
            FieldViolation(n, f"must be the id (seq) of a received event: 0 to {MAX_SEQ}") for n in bad
        ]
        raise ApiError.invalid(f"{bad[0]} must be an integer from 0 to {MAX_SEQ}", violations)
    return int(given[0][1]) if given else None


def is_seq(text: str) -> bool:
    """A decimal event seq, 0 to MAX_SEQ (the length is checked first: int() of thousands of
    digits is slow, and of more it raises)."""
    return (
        text.isascii()
        and text.isdigit()
        and len(text.lstrip("0")) <= len(str(MAX_SEQ))
        and int(text) <= MAX_SEQ
    )


async def stream_run(
    request: web.Request,
    message: run_service_pb2.StreamRunRequest,
    fmt: SseFormat,
    *,
    headers: Mapping[str, str] | None = None,
    heartbeat_s: float | None = None,
    resume: bool = True,
) -> web.StreamResponse:
    """Calls StreamRun and answers with SSE. On re-attach (`run_id` set) Last-Event-ID raises
    `after_seq`; frames at or below it are never sent again (also on an idempotent replay).
    `resume=False`: the caller has read the resume point itself (in its own id format) and set
    `after_seq`. `heartbeat_s`: silence before a heartbeat (default: the gateway's setting)."""
    after = resume_after(request) if resume else None
    if after is not None and not message.run_id and not message.run.idempotency_key:
        # A retried start without a key would be a second run with its first frames cut off.
        violation = FieldViolation("Last-Event-ID", "resumes a new run's stream only with an idempotency key")
        raise ApiError.invalid(
            "to resume, re-attach by run id or repeat the start with its idempotency key", [violation]
        )
    if after is not None and message.run_id:
        message.after_seq = max(message.after_seq, after)
    skip = max(after or 0, message.after_seq if message.run_id else 0)
    call = request.app[keys.UPSTREAM].stream_run(message, request)
    open_streams = request.app[OPEN_STREAMS]
    open_streams.add(call)
    heartbeat = heartbeat_s if heartbeat_s is not None else request.app[keys.SETTINGS].sse_heartbeat_s
    try:
        return await _serve(request, _Reader(call), fmt, skip, {**HEADERS, **(headers or {})}, heartbeat)
    finally:
        open_streams.discard(call)
        call.cancel()  # no-op after a clean end; otherwise the client left or we failed


async def _serve(
    request: web.Request,
    reader: _Reader,
    fmt: SseFormat,
    skip: int,
    headers: Mapping[str, str],
    heartbeat: float,
) -> web.StreamResponse:
    try:
        # Before headers: an ApiError here (unknown agent, bad field) is a plain HTTP error. A
        # quiet stream (re-attach to a queued run) gets its headers after one heartbeat interval.
        first = await reader.next(heartbeat)
        response = web.StreamResponse(headers=headers)
        await response.prepare(request)
        writer = _Writer(request, response)
        try:
            await _pump(reader, writer, fmt, first, skip, heartbeat)
            await writer.close()
        except _ClientGone:
            pass
        return response
    finally:
        reader.close()


async def _pump(
    reader: _Reader, writer: _Writer, fmt: SseFormat, first: object, skip: int, heartbeat: float
) -> None:
    last: run_pb2.RunEvent | None = None
    message = first
    try:
        while message is not None:
            if message is _IDLE:
                await writer.heartbeat(fmt.heartbeat)
            else:
                # The answers already made go out in one write: one syscall and one drain for a
                # burst of tokens rather than one each.
                chunks = []
                for response in reader.with_ready(message):
                    if response.event.seq > skip:
                        chunks.append(event_bytes(fmt, response.event))
                        last = response.event
                await writer.write(b"".join(chunks))
            message = await reader.next(heartbeat)
    except ApiError as exc:
        await writer.frames(fmt.error(exc))
        return
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise  # the client left (handler cancelled)
        return  # the gateway is shutting down and ended the call: close the stream cleanly
    except _ClientGone:
        raise
    except Exception:
        log.exception("SSE stream failed")
        await writer.frames(fmt.error(ApiError.internal()))
        return
    await writer.frames(fmt.end(last))


def _event_id(fmt: SseFormat, event: run_pb2.RunEvent) -> str | None:
    if not fmt.ids:
        return None
    return fmt.event_id(event) if fmt.event_id is not None else str(event.seq)


def event_bytes(fmt: SseFormat, event: run_pb2.RunEvent) -> bytes:
    """What one event sends on `fmt`'s stream (empty for an event it does not show)."""
    event_id = _event_id(fmt, event)
    if fmt.prepared is not None:
        return fmt.prepared(event, event_id)
    return encode(fmt.frames(event), event_id)


class _Reader:
    """Reads StreamRun with a timeout that does not cancel the call: the pending read survives a
    heartbeat and is picked up again. An in-process call (common.local_channel) also hands over
    the answers it holds already, without a wait."""

    def __init__(self, call: StreamCall) -> None:
        self._call = call
        self._pending: asyncio.Future[object] | None = None
        self._ready = call.read_nowait if isinstance(call, LocalStreamCall) else None

    def with_ready(self, first: object) -> list[run_service_pb2.StreamRunResponse]:
        """`first` (a StreamRunResponse from next()) and the answers ready after it, up to
        MAX_BATCH."""
        batch = [first] if isinstance(first, run_service_pb2.StreamRunResponse) else []
        while self._ready is not None and self._pending is None and len(batch) < MAX_BATCH:
            answer = self._ready()
            if answer is None:
                break
            batch.append(answer)
        return batch

    async def next(self, timeout: float) -> object:
        """The next StreamRunResponse, None at the end, or _IDLE after `timeout` seconds."""
        if self._pending is None and self._ready is not None:
            answer = self._ready()
            if answer is not None:
                return answer
        if self._pending is None:
            self._pending = asyncio.ensure_future(self._call.read())
        done, _ = await asyncio.wait({self._pending}, timeout=timeout)
        if not done:
            return _IDLE
        task, self._pending = self._pending, None
        try:
            message = task.result()
        except grpc.aio.AioRpcError as exc:
            raise ApiError.from_rpc(exc) from None
        return message if isinstance(message, run_service_pb2.StreamRunResponse) else None

    def close(self) -> None:
        if self._pending is not None:
            self._pending.cancel()


class _Writer:
    def __init__(self, request: web.Request, response: web.StreamResponse) -> None:
        self._request = request
        self._response = response

    async def frames(self, frames: Iterable[Frame], event_id: str | None = None) -> None:
        await self._write(encode(frames, event_id))

    async def write(self, data: bytes) -> None:
        await self._write(data)

    async def heartbeat(self, frame: Callable[[], Frame] | None) -> None:
        await self._write(encode([frame()]) if frame is not None else b": heartbeat\n\n")

    async def close(self) -> None:
        with contextlib.suppress(ConnectionError):
            await self._response.write_eof()

    async def _write(self, data: bytes) -> None:
        if not data:
            return
        try:
            async with asyncio.timeout(WRITE_TIMEOUT_S):
                await self._response.write(data)
        except ConnectionError:
            raise _ClientGone from None
        except TimeoutError:
            log.warning("SSE client stalled for %.0f s; dropping it", WRITE_TIMEOUT_S)
            if self._request.transport is not None:
                self._request.transport.abort()  # a graceful close would wait on the same buffer
            raise _ClientGone from None


def encode(frames: Iterable[Frame], event_id: str | None = None) -> bytes:
    """SSE text of `frames`; `event_id` goes on the last one, so a client cut off inside an
    event's frames resumes before that event rather than after it."""
    items = frames if isinstance(frames, list) else list(frames)
    if not items:
        return b""  # most events of a family B job stream show nothing
    last = len(items) - 1
    out: list[str] = []
    for i, frame in enumerate(items):
        if event_id is not None and i == last:
            out.append(f"id: {event_id}\n")
        if frame.event is not None:
            if _has_break(frame.event):
                raise ValueError(f"SSE event name with a line break: {frame.event!r}")
            out.append(f"event: {frame.event}\n")
        if _has_break(frame.data):
            out.extend(f"data: {line}\n" for line in _LINE_BREAK.split(frame.data))
        else:  # one line, as all JSON data is: nothing to split
            out.append(f"data: {frame.data}\n")
        out.append("\n")
    return "".join(out).encode()


def _has_break(text: str) -> bool:
    # Two substring scans cost a fraction of a regex search.
    return "\n" in text or "\r" in text
