"""agentrun benchmark: starts the real server (and a minimal baseline server) as subprocesses and
measures them over gRPC with grpc.aio clients. Prints a table of figures, each with its ratio to the
baseline, and the targets (PASS/MISS).

    python bench/bench.py [--quick] [--json PATH] [--duration S] [--samples N] [--prefill N]
                          [--agents-file PATH]

See bench/README.md for what each figure means."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import itertools
import json
import math
import os
import platform
import random
import re
import sqlite3
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import yaml
from agentrun.v1 import run_pb2, run_service_pb2_grpc
from agentrun.v1 import run_service_pb2 as pb

from server.store.tables import RUN

BENCH_DIR = Path(__file__).resolve().parent
READY = re.compile(r"gRPC on (\S+):(\d+)")
IN_FLIGHT = 16
BATCH = 100
MESSAGE = "hello from the agentrun benchmark"
COMPLETED = run_pb2.RUN_STATE_COMPLETED
STOP_EVENT = run_pb2.EVENT_TYPE_STOP

Stub = run_service_pb2_grpc.RunServiceStub
Call = Callable[[], Awaitable[object]]
Measure = Callable[[], Awaitable[float]]
Opener = Callable[[int], AsyncIterable[object]]


# ---- plan and results -------------------------------------------------------------------------


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


@dataclass(frozen=True)
class Spec:
    """How one figure is shown: label, unit, and whether it is a latency (compared with the
    baseline p50) or a throughput (compared with the baseline calls/s at 16 in flight)."""

    label: str
    unit: str
    latency: bool


SPECS: dict[str, Spec] = {
    "baseline_p50_ms": Spec("baseline INSERT+COMMIT p50, 1 in flight", "ms", True),
    "baseline_p99_ms": Spec("baseline INSERT+COMMIT p99, 1 in flight", "ms", True),
    "baseline_calls_per_s": Spec(f"baseline calls/s, {IN_FLIGHT} in flight", "/s", False),
    "baseline_stream_msgs_per_s": Spec("baseline msgs/s on one stream (no work)", "/s", False),
    "echo_run_p50_ms": Spec("echo Run(wait) p50, 1 in flight", "ms", True),
    "echo_run_p99_ms": Spec("echo Run(wait) p99, 1 in flight", "ms", True),
    "echo_runs_per_s": Spec(f"echo Run(wait) runs/s, {IN_FLIGHT} in flight", "/s", False),
    "ai_echo_run_p50_ms": Spec("ai-echo Run(wait) p50, 1 in flight", "ms", True),
    "ai_echo_run_p99_ms": Spec("ai-echo Run(wait) p99, 1 in flight", "ms", True),
    "ai_echo_runs_per_s": Spec(f"ai-echo Run(wait) runs/s, {IN_FLIGHT} in flight", "/s", False),
    "submit_ack_p50_ms": Spec("background Run(wait=false) ack p50", "ms", True),
    "stream_first_event_p50_ms": Spec("StreamRun time to first event p50", "ms", True),
    "stream_events_per_s": Spec("events/s on one stream (slow, delay 0)", "/s", False),
    "batch_get_p50_ms": Spec(f"BatchGetRuns({BATCH}) p50, prefilled store", "ms", True),
    "batch_get_p99_ms": Spec(f"BatchGetRuns({BATCH}) p99, prefilled store", "ms", True),
}
AI_FIGURES = ("ai_echo_run_p50_ms", "ai_echo_run_p99_ms", "ai_echo_runs_per_s")


@dataclass(frozen=True)
class Target:
    figure: str
    text: str
    met: Callable[[dict[str, float]], bool]


TARGETS = (
    Target(
        "echo_runs_per_s",
        ">= 50% of baseline",
        lambda f: f["echo_runs_per_s"] >= f["baseline_calls_per_s"] / 2,
    ),
    Target("echo_run_p50_ms", "<= 2 ms", lambda f: f["echo_run_p50_ms"] <= 2.0),
    Target("stream_events_per_s", ">= 20,000/s", lambda f: f["stream_events_per_s"] >= 20_000),
    Target("batch_get_p50_ms", "<= 5 ms", lambda f: f["batch_get_p50_ms"] <= 5.0),
)


@dataclass
class Results:
    figures: dict[str, float] = field(default_factory=dict)
    samples: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def latency(self, prefix: str, seconds: Sequence[float], *, p99: bool = True) -> None:
        self._add(f"{prefix}_p50_ms", percentile(seconds, 50) * 1000, len(seconds))
        if p99:
            self._add(f"{prefix}_p99_ms", percentile(seconds, 99) * 1000, len(seconds))

    def rate(self, key: str, per_second: float, count: int) -> None:
        self._add(key, per_second, count)

    def _add(self, key: str, value: float, count: int) -> None:
        assert key in SPECS, key
        self.figures[key] = value
        self.samples[key] = count


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


# ---- load generation: the same client code for every server -----------------------------------


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


# ---- server subprocesses ----------------------------------------------------------------------


@contextlib.asynccontextmanager
async def server_process(name: str, argv: Sequence[str], log_dir: Path) -> AsyncIterator[str]:
    """Start a server, wait for its "gRPC on HOST:PORT" line, yield the target, SIGTERM it on exit."""
    log_path = log_dir / f"{name}.log"
    with log_path.open("wb") as log:
        proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE, stderr=log)
    drain: asyncio.Task[None] | None = None
    try:
        target = await _ready(name, proc, log_path)
        drain = asyncio.create_task(_drain(proc))  # nobody else reads its stdout from here on
        yield target
    finally:
        await _stop(proc)
        if drain is not None:
            drain.cancel()


async def _ready(name: str, proc: asyncio.subprocess.Process, log_path: Path) -> str:
    assert proc.stdout is not None
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(60):
            async for line in proc.stdout:
                found = READY.search(line.decode(errors="replace"))
                if found:
                    return f"{found[1]}:{found[2]}"
    raise ServerFailed(f"{name} did not start: {_tail(log_path)}")


def _tail(log_path: Path, lines: int = 5) -> str:
    return " | ".join(log_path.read_text(errors="replace").strip().splitlines()[-lines:]) or "no output"


async def _drain(proc: asyncio.subprocess.Process) -> None:
    assert proc.stdout is not None
    async for _ in proc.stdout:
        pass


async def _stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is not None:
        return
    proc.terminate()
    try:
        async with asyncio.timeout(20):
            await proc.wait()
    except TimeoutError:
        proc.kill()
        await proc.wait()


class ServerFailed(RuntimeError):
    pass


def agentrun_argv(database: Path, agents_file: Path | None) -> list[str]:
    script = Path(sys.executable).with_name("agentrun")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "server"]
    argv = [*command, "serve", "--listen", "127.0.0.1:0", "--database-url", f"sqlite:///{database}"]
    argv += ["--log-level", "WARNING"]
    return argv + (["--agents-file", str(agents_file)] if agents_file else [])


def baseline_argv(database: Path) -> list[str]:
    return [sys.executable, str(BENCH_DIR / "baseline_server.py"), "--database", str(database)]


# ---- the baseline -----------------------------------------------------------------------------


async def bench_baseline(plan: Plan, work: Path, results: Results) -> None:
    payload = run_request("echo").SerializeToString()
    async with (
        server_process("baseline", baseline_argv(work / "baseline.db"), work) as target,
        grpc.aio.insecure_channel(target) as channel,
    ):
        # No (de)serialisers: raw bytes, as the baseline server sees them.
        method = channel.unary_unary(
            "/bench.Baseline/Insert", request_serializer=None, response_deserializer=None
        )

        async def call() -> object:
            return await method(payload)

        results.latency("baseline", await series(timed(call), plan))
        results.rate("baseline_calls_per_s", *await throughput(call, plan))
        stream = channel.unary_stream(
            "/bench.Baseline/Stream", request_serializer=None, response_deserializer=None
        )
        results.rate(
            "baseline_stream_msgs_per_s", *await stream_rate(lambda n: stream(n.to_bytes(4, "little")), plan)
        )


# ---- the agentrun server: runs and streams ----------------------------------------------------


def run_request(agent_id: str, message: str = MESSAGE, *, wait: bool = True) -> pb.RunRequest:
    return pb.RunRequest(agent_id=agent_id, input=run_pb2.RunInput(message=message), wait=wait)


async def check_run(stub: Stub, agent_id: str) -> str | None:
    """None when one Run(wait) of the agent completes, otherwise why not."""
    try:
        run = (await stub.Run(run_request(agent_id))).run
    except grpc.aio.AioRpcError as exc:
        return f"{exc.code().name}: {exc.details()}"
    if run.state != COMPLETED:
        return f"run ended {run_pb2.RunState.Name(run.state)}: {run.error.reason} {run.error.message}".strip()
    return None


async def bench_sync(stub: Stub, agent_id: str, plan: Plan, results: Results) -> None:
    request = run_request(agent_id)
    prefix = agent_id.replace("-", "_") + "_run"

    async def call() -> object:
        return await stub.Run(request)

    results.latency(prefix, await series(timed(call), plan))
    results.rate(f"{prefix}s_per_s", *await throughput(call, plan))


async def bench_ack(stub: Stub, plan: Plan, results: Results) -> None:
    request = run_request("echo", wait=False)

    async def call() -> object:
        return await stub.Run(request)

    results.latency("submit_ack", await series(timed(call), plan), p99=False)
    await drained(stub)


async def drained(stub: Stub, timeout_s: float = 120.0) -> None:
    """Wait until the background runs submitted so far have finished."""
    busy = pb.ListRunsRequest(states=[run_pb2.RUN_STATE_QUEUED, run_pb2.RUN_STATE_RUNNING], page_size=1)
    async with asyncio.timeout(timeout_s):
        while (await stub.ListRuns(busy)).total_size:  # noqa: ASYNC110 - the state is in another process
            await asyncio.sleep(0.05)


async def bench_first_event(stub: Stub, plan: Plan, results: Results) -> None:
    request = pb.StreamRunRequest(run=run_request("echo", wait=False))

    async def measure() -> float:
        start = time.perf_counter()
        first = 0.0
        async for _ in stub.StreamRun(request):  # read to the end: the run finishes before the next
            first = first or time.perf_counter() - start
        return first

    results.latency("stream_first_event", await series(measure, plan, plan.stream_samples), p99=False)


def slow_stream(stub: Stub) -> Opener:
    """Opens a StreamRun of the slow agent with `count` events (START, the tokens, STOP), no delay."""

    async def events(count: int) -> AsyncIterator[object]:
        tokens = count - 2
        request = pb.StreamRunRequest(run=run_request("slow", f"tokens={tokens} delay_ms=0", wait=False))
        seen, last = 0, run_pb2.EVENT_TYPE_UNSPECIFIED
        async for response in stub.StreamRun(request):
            seen, last = seen + 1, response.event.type
            yield response
        if last != STOP_EVENT or seen != count:
            raise RuntimeError(f"slow stream ended after {seen} events with {run_pb2.EventType.Name(last)}")

    return events


@dataclass
class Agentrun:
    """Starts agentrun servers. If one cannot start with the agents file (say the pydantic-ai runtime
    does not load), it and every later one run with only that file's plain Python agents."""

    work: Path
    agents_file: Path | None
    results: Results
    plain: bool = False

    @contextlib.asynccontextmanager
    async def serve(self, name: str, database: Path) -> AsyncIterator[str]:
        async with contextlib.AsyncExitStack() as stack:
            try:
                target = await stack.enter_async_context(self._start(name, database))
            except ServerFailed as exc:
                if self.plain:
                    raise
                self._fall_back(str(exc))
                target = await stack.enter_async_context(self._start(f"{name}-plain", database))
            yield target

    def _start(self, name: str, database: Path) -> contextlib.AbstractAsyncContextManager[str]:
        return server_process(name, agentrun_argv(database, self.agents_file), self.work)

    def _fall_back(self, failure: str) -> None:
        source = self.agents_file or default_agents_file()
        self.agents_file = plain_agents_file(source, self.work / "plain_agents.yaml")
        self.plain = True
        self.results.notes.append(f"{failure}; retried with the plain Python agents of {source} only")


async def bench_agentrun(plan: Plan, servers: Agentrun, results: Results) -> None:
    async with (
        servers.serve("agentrun", servers.work / "bench.db") as target,
        grpc.aio.insecure_channel(target) as channel,
    ):
        stub = Stub(channel)
        await bench_sync(stub, "echo", plan, results)
        why_not = await ai_echo_unavailable(stub)
        if why_not:
            results.skipped |= dict.fromkeys(AI_FIGURES, why_not)
            results.notes.append(f"ai-echo rows skipped: {why_not}")
        else:
            await bench_sync(stub, "ai-echo", plan, results)
        await bench_ack(stub, plan, results)
        await bench_first_event(stub, plan, results)
        results.rate("stream_events_per_s", *await stream_rate(slow_stream(stub), plan))


async def ai_echo_unavailable(stub: Stub) -> str | None:
    agents = (await stub.ListAgents(pb.ListAgentsRequest())).agents
    if "ai-echo" not in {a.id for a in agents}:
        return "agent ai-echo is not configured in the server's agents file"
    return await check_run(stub, "ai-echo")


def default_agents_file() -> Path:
    from server.agents.registry import DEFAULT_AGENTS_FILE

    return DEFAULT_AGENTS_FILE


def plain_agents_file(source: Path, dest: Path) -> Path:
    config = yaml.safe_load(source.read_text())
    config["agents"] = [a for a in config["agents"] if a.get("runtime") == "python"]
    dest.write_text(yaml.safe_dump(config, sort_keys=False))
    return dest


# ---- BatchGetRuns over a prefilled store ------------------------------------------------------


def stored_run(number: int, now: float) -> dict[str, Any]:
    """One COMPLETED echo run as the server stores it (JSON columns as SQLAlchemy writes them;
    agent_state and decisions are never written for such a run, so they stay NULL)."""
    created = now - 86_400 + number * 0.01
    message = f"{MESSAGE} #{number}"
    result = {
        "output": message,
        "tool_calls": [],
        "reasoning_steps": [f"The user said {len(message)} characters; echoing them back."],
        "usage": dict.fromkeys(
            ("duration_ms", "input_tokens", "output_tokens", "reasoning_tokens", "model_calls"), 0
        ),
        "output_json": None,
        "followups": [],
    }
    return {
        "number": number, "id": str(uuid.uuid4()), "agent_id": "echo", "org_id": "",
        "user_id": f"user-{number % 97}", "session_id": str(uuid.uuid4()), "state": "COMPLETED",
        "attempt": 1, "input": json.dumps({"message": message}), "result": json.dumps(result),
        "error_reason": None, "error_message": None, "pending_action": json_none("pending_action"),
        "agent_state": None, "resume": json_none("resume"), "decisions": None, "timeout_s": 3600.0,
        "deadline": created + 3600.0, "idempotency_key": None, "request_hash": None,
        "webhook_url": None, "extras": json_none("extras"),
        "last_seq": 6, "cancel_requested": 0, "lease_owner": None, "lease_expires_at": None,
        "created_at": created, "started_at": created + 0.004, "updated_at": created + 0.011,
        "completed_at": created + 0.011,
    }  # fmt: skip


def json_none(column: str) -> str | None:
    """How the server stores None written to a JSON column: SQL NULL, or the JSON text null."""
    return None if getattr(RUN.c[column].type, "none_as_null", False) else "null"


def prefill(database: Path, count: int) -> list[str]:
    """Bulk-insert `count` COMPLETED runs in one transaction; returns their ids."""
    rows = [stored_run(n, time.time()) for n in range(1, count + 1)]
    unknown = set(rows[0]) - {c.name for c in RUN.columns}
    if unknown:
        raise RuntimeError(f"bench prefill writes columns the run table lacks: {sorted(unknown)}")
    columns = list(rows[0])
    sql = f"INSERT INTO run ({', '.join(columns)}) VALUES ({', '.join(':' + c for c in columns)})"
    with contextlib.closing(sqlite3.connect(database)) as db:
        db.execute("PRAGMA journal_mode=WAL")
        with db:
            db.executemany(sql, rows)
    return [r["id"] for r in rows]


async def bench_batch_get(plan: Plan, servers: Agentrun, results: Results) -> None:
    database = servers.work / "batch.db"
    async with servers.serve("agentrun-schema", database):
        pass  # the server creates the schema its own way; the runs go in while it is down
    started = time.perf_counter()
    ids = prefill(database, plan.prefill)
    results.notes.append(f"prefilled {len(ids):,} COMPLETED runs in {time.perf_counter() - started:.1f} s")
    rng = random.Random(7)
    requests = itertools.cycle([pb.BatchGetRunsRequest(run_ids=rng.sample(ids, BATCH)) for _ in range(256)])
    first = next(requests)
    async with (
        servers.serve("agentrun-batch", database) as target,
        grpc.aio.insecure_channel(target) as channel,
    ):
        stub = Stub(channel)
        check = await stub.BatchGetRuns(first)
        if len(check.runs) != BATCH or check.missing_run_ids:
            raise RuntimeError(f"BatchGetRuns found {len(check.runs)} of {BATCH} prefilled runs")

        async def call() -> object:
            return await stub.BatchGetRuns(next(requests))

        results.latency("batch_get", await series(timed(call), plan, plan.batch_samples))


# ---- report -----------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": model,
        "cores": os.cpu_count() or 0,
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "grpc": grpc.__version__,
    }


def ratio(key: str, figures: dict[str, float]) -> float:
    """A latency as a multiple of the baseline p50; a throughput as a share of the baseline calls/s."""
    return figures[key] / figures["baseline_p50_ms" if SPECS[key].latency else "baseline_calls_per_s"]


def ratios(figures: dict[str, float]) -> dict[str, float]:
    needed = ("baseline_p50_ms", "baseline_calls_per_s")
    return {k: ratio(k, figures) for k in figures} if all(k in figures for k in needed) else {}


def verdicts(figures: dict[str, float]) -> dict[str, tuple[str, bool | None]]:
    """Target text and PASS (True) / MISS (False) / not measured (None) per figure with a target."""
    out: dict[str, tuple[str, bool | None]] = {}
    for target in TARGETS:
        needed = ("baseline_calls_per_s", target.figure)
        out[target.figure] = (target.text, target.met(figures) if all(k in figures for k in needed) else None)
    return out


def table(results: Results) -> Iterator[str]:
    figures, checks, vs = results.figures, verdicts(results.figures), ratios(results.figures)
    yield f"{'figure':<46} {'value':>12} {'unit':<4} {'vs baseline':>11} {'n':>7}  {'target':<19} result"
    yield "-" * 112
    for key, spec in SPECS.items():
        text, met = checks.get(key, ("", None))
        verdict = "" if key not in checks else {True: "PASS", False: "MISS", None: "-"}[met]
        value, unit, base, count = "skipped", "", "", ""
        if key in figures:
            value = f"{figures[key]:,.3f}" if spec.latency else f"{figures[key]:,.0f}"
            unit, count = spec.unit, f"{results.samples[key]:,}"
            base = "-" if key not in vs else f"{vs[key]:.2f}x" if spec.latency else f"{vs[key]:.0%}"
        line = f"{spec.label:<46} {value:>12} {unit:<4} {base:>11} {count:>7}  {text:<19} {verdict}"
        yield line.rstrip()


def report(results: Results, info: dict[str, Any], plan: Plan, quick: bool) -> None:
    cores = f"{info['cores']} cores ({info['cores_usable']} usable)"
    print(f"\nmachine: {info['cpu']}, {cores}, Python {info['python']}, grpcio {info['grpc']}")
    print(f"platform: {info['platform']}")
    mode = "quick (counts too small for real figures)" if quick else "full"
    series_text = f"up to {plan.samples} samples per 1-in-flight series"
    print(f"mode: {mode}; {series_text}, {plan.duration_s:g} s per {IN_FLIGHT}-in-flight series")
    print("note: the Python client runs on the same machine and shares its cores with the server under test;")
    print("      its own per-call CPU is part of every figure, the baseline's included.\n")
    for line in table(results):
        print(line)
    print("\nvs baseline: latencies as a multiple of the baseline p50; throughputs as a share of the")
    print(f"baseline calls/s at {IN_FLIGHT} in flight (one aiosqlite INSERT + COMMIT per gRPC call).")
    for note in all_notes(results):
        print(f"note: {note}")


def all_notes(results: Results) -> list[str]:
    return [*results.notes, *stream_note(results.figures)]


def stream_note(figures: dict[str, float]) -> list[str]:
    if "stream_events_per_s" not in figures or "baseline_stream_msgs_per_s" not in figures:
        return []
    share = figures["stream_events_per_s"] / figures["baseline_stream_msgs_per_s"]
    return [
        f"events/s on one stream are {share:.0%} of what this client reads from a server that only "
        f"writes prepared messages ({figures['baseline_stream_msgs_per_s']:,.0f}/s)"
    ]


def write_json(path: Path, results: Results, info: dict[str, Any], plan: Plan, quick: bool) -> None:
    checks = verdicts(results.figures)
    document = {
        "mode": "quick" if quick else "full",
        "machine": info,
        "plan": dataclasses.asdict(plan),
        "figures": results.figures,
        "vs_baseline": ratios(results.figures),
        "samples": results.samples,
        "skipped": results.skipped,
        "targets": {k: {"target": text, "pass": met} for k, (text, met) in checks.items()},
        "notes": all_notes(results),
    }
    path.write_text(json.dumps(document, indent=2) + "\n")


# ---- main -------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Benchmark agentrun against a minimal gRPC+SQLite baseline.")
    parser.add_argument("--quick", action="store_true", help="small counts (< 30 s), for the smoke test")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    parser.add_argument("--duration", type=float, help=f"seconds per {IN_FLIGHT}-in-flight series")
    parser.add_argument("--samples", type=int, help="calls per 1-in-flight latency series")
    parser.add_argument("--prefill", type=int, help="runs stored before the BatchGetRuns series")
    parser.add_argument("--agents-file", type=Path, help="agents.yaml for the server (default: its own)")
    return parser.parse_args(argv)


def make_plan(args: argparse.Namespace) -> Plan:
    plan = QUICK if args.quick else FULL
    overrides = {"duration_s": args.duration, "samples": args.samples, "prefill": args.prefill}
    return dataclasses.replace(plan, **{k: v for k, v in overrides.items() if v is not None})


async def bench(plan: Plan, agents_file: Path | None) -> Results:
    results = Results()
    with tempfile.TemporaryDirectory(prefix="agentrun-bench-") as tmp:
        work = Path(tmp)
        await bench_baseline(plan, work, results)
        servers = Agentrun(work, agents_file, results)
        await bench_agentrun(plan, servers, results)
        await bench_batch_get(plan, servers, results)
    return results


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    plan = make_plan(args)
    started = time.perf_counter()
    results = asyncio.run(bench(plan, args.agents_file))
    info = machine()
    report(results, info, plan, args.quick)
    print(f"\ntotal bench time {time.perf_counter() - started:.0f} s")
    if args.json:
        write_json(args.json, results, info, plan, args.quick)


if __name__ == "__main__":
    main()
