"""The plan (how many calls, how long) and the load generation: the same client code for every
server, gRPC or HTTP. A call is any awaitable; a stream is any async iterable of messages."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterable, Awaitable, Callable, Sequence
from dataclasses import dataclass

IN_FLIGHT = 16

Call = Callable[[], Awaitable[object]]
Measure = Callable[[], Awaitable[float]]
Opener = Callable[[int], AsyncIterable[object]]


@dataclass(frozen=True)
class Plan:
    warmup: int  # calls before every latency series
    samples: int  # calls per latency series at 1 in flight
    duration_s: float  # length of every 16-in-flight throughput series
    stream_samples: int  # StreamRun calls for time-to-first-event
    stream_tokens: int  # events of the one-stream throughput run
    stream_repeats: int  # one-stream runs (the median is reported)
    batch_samples: int  # BatchGetRuns calls
    prefill: int  # runs stored before the BatchGetRuns series
    cap_s: float  # no latency series runs longer than this


FULL = Plan(
    warmup=200, samples=2000, duration_s=8.0, stream_samples=500, stream_tokens=20_000,
    stream_repeats=3, batch_samples=1000, prefill=100_000, cap_s=25.0,
)  # fmt: skip
QUICK = Plan(
    warmup=20, samples=100, duration_s=1.0, stream_samples=30, stream_tokens=2_000,
    stream_repeats=1, batch_samples=50, prefill=5_000, cap_s=3.0,
)  # fmt: skip


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


def timed(call: Call) -> Measure:
    async def measure() -> float:
        start = time.perf_counter()
        await call()
        return time.perf_counter() - start

    return measure


async def series(measure: Measure, plan: Plan, samples: int | None = None) -> list[float]:
    """Warm up, then collect `samples` values one at a time (at most `plan.cap_s` seconds)."""
    for _ in range(plan.warmup):
        await measure()
    wanted = samples or plan.samples
    values: list[float] = []
    deadline = time.perf_counter() + plan.cap_s
    while len(values) < wanted and time.perf_counter() < deadline:
        values.append(await measure())
    return values


async def load(call: Call, in_flight: int, seconds: float) -> tuple[float, int]:
    """Calls per second with `in_flight` callers looping for `seconds`; the calls still in flight
    at the end are waited for and counted."""
    done = 0
    start = time.perf_counter()
    stop_at = start + seconds

    async def caller() -> None:
        nonlocal done
        while time.perf_counter() < stop_at:
            await call()
            done += 1

    await asyncio.gather(*(caller() for _ in range(in_flight)))
    return done / (time.perf_counter() - start), done


async def throughput(call: Call, plan: Plan) -> tuple[float, int]:
    await load(call, IN_FLIGHT, min(1.0, plan.duration_s / 4))  # warm-up
    return await load(call, IN_FLIGHT, plan.duration_s)


async def one_stream(open_stream: Opener, count: int) -> tuple[float, int]:
    """Messages per second on one stream, from the request to the last message."""
    start, seen = time.perf_counter(), 0
    async for _ in open_stream(count):
        seen += 1
    return seen / (time.perf_counter() - start), seen


async def stream_rate(open_stream: Opener, plan: Plan) -> tuple[float, int]:
    """The median of `plan.stream_repeats` streams of `plan.stream_tokens` + 2 messages."""
    await one_stream(open_stream, min(2000, plan.stream_tokens) + 2)  # warm-up
    runs = [await one_stream(open_stream, plan.stream_tokens + 2) for _ in range(plan.stream_repeats)]
    return sorted(runs)[len(runs) // 2]
