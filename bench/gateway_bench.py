"""The HTTP rows: the agentrun gateway's canonical REST and SSE, and an HTTP baseline
(bench/baseline_gateway.py) measured the same way, with an aiohttp client in the bench process.
Every call reads the whole response; every stream is read to its end."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp

from bench.measure import IN_FLIGHT, Call, Opener, Plan, series, stream_rate, throughput, timed
from bench.processes import baseline_gateway_argv, server_process
from bench.report import Results

MESSAGE = "hello from the agentrun benchmark"
HEADERS = {"Content-Type": "application/json"}
RUN_BODY = json.dumps({"input": {"message": MESSAGE}, "wait": True}).encode()
SUBMIT_BODY = json.dumps({"input": {"message": MESSAGE}, "wait": False}).encode()
STREAM_BODY = json.dumps({"run": {"agentId": "echo", "input": {"message": MESSAGE}}}).encode()


class HttpFailed(RuntimeError):
    pass


def client(connections: int) -> aiohttp.ClientSession:
    """A session with at most `connections` keep-alive connections."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=connections))


async def post(session: aiohttp.ClientSession, url: str, body: bytes) -> bytes:
    """POST a JSON body, read the whole response; anything but 200 raises."""
    async with session.post(url, data=body, headers=HEADERS) as response:
        data = await response.read()
        if response.status != 200:
            raise HttpFailed(f"POST {url}: HTTP {response.status} {data[:300]!r}")
        return data


def poster(session: aiohttp.ClientSession, url: str, body: bytes) -> Call:
    return lambda: post(session, url, body)


async def sse_frames(response: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    """Each complete SSE frame as it arrives (its lines, without the blank line that ends it)."""
    if response.status != 200:
        raise HttpFailed(f"{response.url}: HTTP {response.status} {(await response.read())[:300]!r}")
    pending = b""
    async for chunk in response.content.iter_any():
        *frames, pending = (pending + chunk).split(b"\n\n")
        for frame in frames:
            if frame.startswith(b"event: error"):
                raise HttpFailed(f"{response.url}: error frame {frame[:300]!r}")
            yield frame


async def http_rows(one: Call, many: Call, prefix: str, rate: str, plan: Plan, results: Results) -> None:
    """p50/p99 at 1 connection, calls/s at IN_FLIGHT connections."""
    results.latency(prefix, await series(timed(one), plan))
    results.rate(rate, *await throughput(many, plan))


# ---- the baseline -----------------------------------------------------------------------------


async def bench_baseline_gateway(plan: Plan, work: Path, results: Results) -> None:
    argv = baseline_gateway_argv(work / "baseline-gateway.db")
    async with (
        server_process("baseline-gateway", argv, work, ("HTTP",)) as listening,
        client(1) as one,
        client(IN_FLIGHT) as many,
    ):
        url = f"http://{listening.http}"
        await http_rows(
            poster(one, f"{url}/insert", RUN_BODY),
            poster(many, f"{url}/insert", RUN_BODY),
            "baseline_gateway",
            "baseline_gateway_calls_per_s",
            plan,
            results,
        )
        rate = await stream_rate(baseline_relay(one, f"{url}/stream"), plan)
        results.rate("baseline_gateway_sse_events_per_s", *rate)


def baseline_relay(session: aiohttp.ClientSession, url: str) -> Opener:
    async def frames(count: int) -> AsyncIterator[object]:
        async with session.post(url, data=json.dumps({"count": count}), headers=HEADERS) as response:
            async for frame in sse_frames(response):
                yield frame

    return frames


# ---- the gateway ------------------------------------------------------------------------------


async def bench_gateway(
    plan: Plan, base: str, drained: Callable[[], Awaitable[None]], results: Results
) -> None:
    """The gateway rows against `base` (http://host:port); `drained` waits for background runs."""
    runs = f"{base}/v1/agents/echo/runs"
    async with client(1) as one, client(IN_FLIGHT) as many:
        run = json.loads(await post(one, runs, RUN_BODY))["run"]
        if run["state"] != "RUN_STATE_COMPLETED":
            raise HttpFailed(f"POST {runs} (wait) ended {run['state']}: {run.get('error')}")
        await http_rows(
            poster(one, runs, RUN_BODY), poster(many, runs, RUN_BODY), "gateway_run", "gateway_runs_per_s",
            plan, results,
        )  # fmt: skip
        ack = await series(timed(poster(one, runs, SUBMIT_BODY)), plan)
        results.latency("gateway_submit_ack", ack, p99=False)
        await drained()
        first = await series(first_frame(one, f"{runs}:stream"), plan, plan.stream_samples)
        results.latency("gateway_sse_first_event", first, p99=False)
        rate = await stream_rate(slow_sse(one, f"{base}/v1/agents/slow/runs:stream"), plan)
        results.rate("gateway_sse_events_per_s", *rate)


def first_frame(session: aiohttp.ClientSession, url: str) -> Callable[[], Awaitable[float]]:
    """Time from the request to the first complete SSE frame of a new echo run; the stream is read
    to its end, so the run finishes before the next."""

    async def measure() -> float:
        start = time.perf_counter()
        first = 0.0
        async with session.post(url, data=STREAM_BODY, headers=HEADERS) as response:
            async for _ in sse_frames(response):
                first = first or time.perf_counter() - start
        return first

    return measure


def slow_sse(session: aiohttp.ClientSession, url: str) -> Opener:
    """Streams a run of the slow agent with `count` events (START, the tokens, STOP), no delay."""

    async def frames(count: int) -> AsyncIterator[object]:
        message = f"tokens={count - 2} delay_ms=0"
        body = json.dumps({"run": {"agentId": "slow", "input": {"message": message}}})
        seen, last = 0, b""
        async with session.post(url, data=body, headers=HEADERS) as response:
            async for frame in sse_frames(response):
                seen, last = seen + 1, frame
                yield frame
        if b'"EVENT_TYPE_STOP"' not in last or seen != count:
            raise HttpFailed(f"slow SSE stream ended after {seen} frames with {last[:300]!r}")

    return frames
