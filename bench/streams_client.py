"""The load clients of the streams bench. Run as a script, one client process (bench/streams_bench.py
starts several through `clients()`): opens its share of SSE streams through the gateway at a given
rate, reads each one to its end, and reports what every stream got. The job comes as JSON on stdin;
on stdout it prints `opened` once each of its streams has its first frame (or has failed), then
`result <JSON>` when all have ended.

One aiohttp session with an unlimited connector (every stream is its own connection, closed at
its end, so the gateway frees it) and no read timeout: a stream is quiet for seconds at a time."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import asyncio
import contextlib
import json
import os
import resource
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp

FINAL = {"EVENT_TYPE_STOP", "EVENT_TYPE_ERROR", "EVENT_TYPE_PAUSED"}
HEADERS = {"Content-Type": "application/json"}


@dataclass(frozen=True)
class Job:
    base: str  # http://host:port of the gateway
    agent: str
    message: str  # what each new run is asked (mode "start")
    run_ids: list[str]  # runs to re-attach to (mode "attach"); empty: start `count` new runs
    count: int
    rate: float  # streams opened per second by this process
    delay_s: float = 0.0  # wait this long before opening the first (workers open interleaved)


@dataclass
class Tally:
    """What this process's streams got, summed (per-stream lists only for first-frame times)."""

    first_s: list[float] = field(default_factory=list)
    events: int = 0  # event frames received (distinct seqs)
    complete: int = 0  # ended with a final event after 1..seq with no gap or repeat
    errors: Counter[str] = field(default_factory=Counter)
    target: int = 0  # streams this process opens
    opened: int = 0  # got a first frame or failed
    all_opened: asyncio.Event = field(default_factory=asyncio.Event)

    def mark_opened(self) -> None:
        self.opened += 1
        if self.opened >= self.target:
            self.all_opened.set()

    def as_json(self) -> dict[str, Any]:
        return {
            "first_s": self.first_s,
            "events": self.events,
            "complete": self.complete,
            "errors": dict(self.errors),
        }


class Stream:
    """Reads one SSE response: counts event frames, checks their seqs, notes how it ended."""

    def __init__(self, tally: Tally, started: float) -> None:
        self.tally, self.started = tally, started
        self.seq = 0
        self.last_type = ""
        self.fault = ""  # why the stream is not complete, if it is not

    def open(self) -> None:
        """This stream has its first frame or failed: count it towards `opened` once."""
        if self.started:
            self.started = 0.0
            self.tally.mark_opened()

    def frame(self, raw: bytes) -> None:
        if raw.startswith(b":"):
            return  # heartbeat comment
        fields = dict(line.split(b": ", 1) for line in raw.split(b"\n") if b": " in line)
        if fields.get(b"event") == b"error":
            self.fault = self.fault or "error frame " + json.loads(fields[b"data"])["error"]["status"]
            return
        if b"data" not in fields:
            return
        if self.started:
            self.tally.first_s.append(time.perf_counter() - self.started)
            self.open()
        event = json.loads(fields[b"data"])["event"]
        seq = int(event["seq"])
        if seq != self.seq + 1:
            self.fault = self.fault or f"seq {seq} after {self.seq}"
        self.seq, self.last_type = max(seq, self.seq), event["type"]
        self.tally.events += 1

    def end(self) -> None:
        if not self.fault and self.last_type not in FINAL:
            self.fault = "cut (no final event)"
        if self.fault:
            self.tally.errors[self.fault] += 1
        else:
            self.tally.complete += 1
        self.open()


async def one(session: aiohttp.ClientSession, job: Job, index: int, stream: Stream) -> None:
    if job.run_ids:
        request = session.get(f"{job.base}/v1/runs/{job.run_ids[index]}:stream")
    else:
        body = json.dumps({"run": {"input": {"message": job.message}}})
        request = session.post(f"{job.base}/v1/agents/{job.agent}/runs:stream", data=body, headers=HEADERS)
    try:
        async with request as response:
            if response.status != 200:
                stream.fault = f"HTTP {response.status}"
                await response.read()
                return
            pending = b""
            async for chunk in response.content.iter_any():
                *frames, pending = (pending + chunk).split(b"\n\n")
                for raw in frames:
                    stream.frame(raw)
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        stream.fault = stream.fault or f"client {type(exc).__name__}"
    finally:
        stream.end()


async def run(job: Job) -> Tally:
    tally = Tally(target=job.count)
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        tasks: list[asyncio.Task[None]] = []
        await asyncio.sleep(job.delay_s)
        begin = time.perf_counter()
        for index in range(job.count):
            delay = begin + index / job.rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            stream = Stream(tally, time.perf_counter())
            tasks.append(asyncio.create_task(one(session, job, index, stream)))
        if job.count:
            await tally.all_opened.wait()
        print("opened", flush=True)
        await asyncio.gather(*tasks)
    return tally


# ---- the manager, in the bench's process ------------------------------------------------------

CHILDREN: set[int] = set()  # server and client processes still running: killed at exit


def kill_children() -> None:
    for pid in CHILDREN:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


@dataclass(frozen=True)
class Load:
    base: str  # http://host:port of the gateway
    processes: int
    open_rate: float  # streams opened per second, all processes together

    def jobs(self, count: int, message: str, run_ids: list[str]) -> list[dict[str, Any]]:
        """Each process's share of `count` streams, their openings interleaved."""
        k = max(1, min(self.processes, count))
        return [
            {
                "base": self.base, "agent": "slow", "message": message, "run_ids": run_ids[i::k],
                "count": count // k + (1 if i < count % k else 0), "rate": self.open_rate / k,
                "delay_s": i / self.open_rate,
            }
            for i in range(k)
        ]  # fmt: skip


class Clients:
    """The client processes of one phase."""

    def __init__(self, jobs: list[dict[str, Any]]) -> None:
        self.jobs = jobs
        self.procs: list[asyncio.subprocess.Process] = []

    async def start(self) -> None:
        for job in self.jobs:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, __file__, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
            )
            assert proc.stdin is not None
            CHILDREN.add(proc.pid)
            proc.stdin.write(json.dumps(job).encode())
            proc.stdin.close()
            self.procs.append(proc)

    async def opened(self) -> None:
        """Every stream of every client has its first frame, or has failed."""
        for proc in self.procs:
            assert proc.stdout is not None
            line = await proc.stdout.readline()
            if line.strip() != b"opened":
                raise RuntimeError(f"a stream client failed: {line!r}")

    async def results(self) -> dict[str, Any]:
        merged: dict[str, Any] = {"first_s": [], "events": 0, "complete": 0, "errors": Counter()}
        for proc in self.procs:
            assert proc.stdout is not None
            line = (await proc.stdout.read()).decode().strip().splitlines()[-1]
            result = json.loads(line.removeprefix("result "))
            merged["first_s"] += result["first_s"]
            merged["events"] += result["events"]
            merged["complete"] += result["complete"]
            merged["errors"].update(result["errors"])
            await proc.wait()
            CHILDREN.discard(proc.pid)
        return merged

    def kill(self) -> None:
        for proc in self.procs:
            if proc.returncode is None:
                proc.kill()


@contextlib.asynccontextmanager
async def clients(
    load: Load, count: int, message: str = "", run_ids: Sequence[str] = ()
) -> AsyncIterator[Clients]:
    """`count` streams from `load.processes` processes: new runs asked `message`, or `run_ids`."""
    running = Clients(load.jobs(count, message, list(run_ids)))
    try:
        await running.start()
        yield running
    finally:
        running.kill()


def raise_fd_limit() -> int:
    """Each stream is a socket: lift the soft open-files limit to the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    return soft


def main() -> None:
    raise_fd_limit()
    job = Job(**json.loads(sys.stdin.read()))
    tally = asyncio.run(run(job))
    print("result " + json.dumps(tally.as_json()), flush=True)


if __name__ == "__main__":
    main()
