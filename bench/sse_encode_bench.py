"""Per-event SSE encoding, in process (issue 19): a stream's realistic CONTENT_DELTA events (the
`slow` agent's "t<i> " tokens, one run, consecutive seqs, times a few µs apart) turned into the
bytes each surface sends, before (the generic path: json_format.MessageToDict, json.dumps, the
regex-splitting encoder, as they were: tests/sse_oracle.py) and after (gateway.event_json and the SSE fast
paths), in the same run. Each figure is the best of --repeat passes over --events events; every
surface's output is checked to be the same bytes before it is timed. Family C has no stream.

Last, one completed echo run's RunResponse (POST /v1/agents/echo/runs with wait) as the JSON body
codec.json_response sends: before, codec.dumps(json_format.MessageToDict(...)); after,
event_json.to_json (a planned Run; its Duration field printed by json_format alone).

    python -m bench.sse_encode_bench [--events N] [--repeat R] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from agentrun.v1 import run_pb2, run_service_pb2
from google.protobuf import json_format

from gateway import codec, event_json, sse, transcode
from gateway.families import a_shapes, a_stream, b_stream
from gateway.families import b as family_b
from tests.sse_oracle import old_canonical, old_dumps, old_encode

RUN_ID = "6f1c2a7e-5d4b-4c8a-9e3f-0a1b2c3d4e5f"
Encoder = Callable[[run_pb2.RunEvent], bytes]  # one stream's: event -> bytes sent


def deltas(count: int, start: float = 1_700_000_000.25) -> list[run_pb2.RunEvent]:
    """The slow agent's tokens as the server streams them (times from float seconds, 9 digits)."""
    out = []
    for i in range(count):
        at = start + i * 5e-6
        event = run_pb2.RunEvent(
            run_id=RUN_ID, seq=i + 2, type=run_pb2.EVENT_TYPE_CONTENT_DELTA, text=f"t{i} "
        )
        event.create_time.seconds, event.create_time.nanos = int(at), int((at - int(at)) * 1e9)
        out.append(event)
    return out


# ---- before: the generic path as it was --------------------------------------------------------


def canonical_before() -> Encoder:
    return old_canonical


def family_a_before() -> Encoder:
    shaper = a_shapes.StreamShaper(followups=False)

    def encode(event: run_pb2.RunEvent) -> bytes:
        shaped = shaper.event(event)
        frames = [sse.Frame(old_dumps(shaped))] if shaped is not None else []
        return old_encode(frames, f"{event.run_id}:{event.seq}")

    return encode


def family_b_before() -> Encoder:
    job = _job()

    def encode(event: run_pb2.RunEvent) -> bytes:
        named = job.frames(event)
        frames = [sse.Frame(old_dumps(b_stream.envelope(n, p)), event=n) for n, p in named]
        return old_encode(frames, str(event.seq))

    return encode


# ---- after: what the gateway runs now ---------------------------------------------------------


def through(fmt: sse.SseFormat) -> Encoder:
    return lambda event: sse.event_bytes(fmt, event)


def canonical_prepared() -> Encoder:
    """CANONICAL_SSE once it names event_json.canonical_sse as its `prepared`."""
    return lambda event: event_json.canonical_sse(event, str(event.seq))


def family_b_after() -> Encoder:
    job = _job()
    return through(sse.SseFormat(frames=lambda e: family_b._frames(job.frames(e)), error=lambda _: []))


def _job() -> b_stream.JobStream:
    run = run_pb2.Run(id=RUN_ID, state=run_pb2.RUN_STATE_RUNNING)
    run.start_time.seconds = 1
    return b_stream.JobStream(run, heartbeat_s=15.0)


@dataclass(frozen=True)
class Row:
    surface: str
    before: Callable[[], Encoder]
    after: Callable[[], Encoder]


ROWS = [
    Row("canonical (CANONICAL_SSE as wired)", canonical_before, lambda: through(transcode.CANONICAL_SSE)),
    Row("canonical (event_json.canonical_sse)", canonical_before, canonical_prepared),
    Row(
        "family A (POST …/runs/stream)",
        family_a_before,
        lambda: through(a_stream.stream_format(a_shapes.StreamShaper(followups=False))),
    ),
    Row("family B (GET /api/v1/jobs/{id}/stream)", family_b_before, family_b_after),
]


# ---- one Run response ------------------------------------------------------------------------


def echo_response() -> run_service_pb2.RunResponse:
    """What a completed echo run (wait=true) answers: the fields the server sets for one."""
    run = run_pb2.Run(
        id=RUN_ID,
        number=1234,
        agent_id="echo",
        session_id="0b9f3c1e-2d4a-4f6b-8c7d-9e0a1b2c3d4e",
        state=run_pb2.RUN_STATE_COMPLETED,
        output="hello",
        attempt=1,
        last_seq=4,
    )
    run.input.message = "hello"
    run.usage.CopyFrom(run_pb2.Usage(input_tokens=1, output_tokens=1, model_calls=1, duration_ms=2))
    run.timeout.seconds = 3600
    base = 1_700_000_000
    for field, seconds, nanos in [
        ("create_time", base, 123_456_000),
        ("start_time", base, 124_001_000),
        ("update_time", base, 126_789_000),
        ("complete_time", base, 126_789_000),
        ("deadline", base + 3600, 123_456_000),
    ]:
        stamp = getattr(run, field)
        stamp.seconds, stamp.nanos = seconds, nanos
    return run_service_pb2.RunResponse(run=run)


def run_response_us(repeat: int, count: int = 20_000) -> tuple[float, float]:
    """µs to encode one echo RunResponse, before and after (best of `repeat` passes)."""
    response = echo_response()

    def before() -> str:
        return codec.dumps(json_format.MessageToDict(response))

    def after() -> str:
        return event_json.to_json(response)

    if before() != after():
        raise AssertionError("RunResponse: different bytes")
    return _best_us(before, count, repeat), _best_us(after, count, repeat)


def _best_us(encode: Callable[[], str], count: int, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        began = time.perf_counter()
        for _ in range(count):
            encode()
        best = min(best, time.perf_counter() - began)
    return best / count * 1e6


# ---- measuring -------------------------------------------------------------------------------


def rate(make: Callable[[], Encoder], events: list[run_pb2.RunEvent], repeat: int) -> float:
    """Events/s of the best pass (a fresh encoder, as a new stream, for each)."""
    best = float("inf")
    for _ in range(repeat):
        encode = make()
        began = time.perf_counter()
        for event in events:
            encode(event)
        best = min(best, time.perf_counter() - began)
    return len(events) / best


def same_bytes(row: Row, events: list[run_pb2.RunEvent]) -> None:
    before, after = row.before(), row.after()
    for event in events:
        if before(event) != after(event):
            raise AssertionError(f"{row.surface}: different bytes for seq {event.seq}")


def profile(make: Callable[[], Encoder], events: list[run_pb2.RunEvent]) -> str:
    encode = make()
    profiler = cProfile.Profile()
    profiler.enable()
    for event in events:
        encode(event)
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(8)
    return out.getvalue()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Per-event SSE encoding, before and after.")
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--profile", action="store_true", help="cProfile each surface, before and after")
    args = parser.parse_args(argv)
    events = deltas(args.events)
    print(f"{args.events:,} CONTENT_DELTA events, best of {args.repeat}; load {os.getloadavg()[0]:.2f}")
    print(f"{'surface':42} {'before ev/s':>12} {'after ev/s':>12} {'µs/ev before':>13} {'after':>7} {'x':>6}")
    for row in ROWS:
        same_bytes(row, events)
        before, after = rate(row.before, events, args.repeat), rate(row.after, events, args.repeat)
        print(
            f"{row.surface:42} {before:12,.0f} {after:12,.0f} {1e6 / before:13.2f} {1e6 / after:7.2f}"
            f" {after / before:6.1f}"
        )
        if args.profile:
            print(f"-- before\n{profile(row.before, events)}-- after\n{profile(row.after, events)}")
    before, after = run_response_us(args.repeat)
    label = "echo RunResponse JSON (µs an encode)"
    print(f"{label:42} {'':12} {'':12} {before:13.2f} {after:7.2f} {before / after:6.1f}")
    print(f"load after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
