"""Streams at scale: N SSE streams open at once through one `agentrun serve` (gateway in process).

    python bench/streams_bench.py --streams 1000,5000[,10000] [--clients K] [--open-rate R]
                                  [--tokens T] [--delay-ms D] [--idle-s S] [--json PATH]

For each N, a fresh server (new SQLite file, `--workers N + 64` so every run executes at once):
1. idle: N background `slow` runs that sleep for the whole phase; then N streams re-attached to
   them (`GET /v1/runs/{id}:stream`). Server RSS before, with the runs only, with every stream
   open, and after they close; SQL statements in an idle window without and with the streams.
   The runs are then cancelled, which ends each stream with its ERROR event.
2. live: N new runs streamed by `POST /v1/agents/slow/runs:stream`, each emitting one event every
   D ms (T tokens): first-frame p50/p99, events delivered vs produced (the store's last_seq of
   every run of the phase), errors by kind, server CPU% and peak RSS, RSS after they close.
The load comes from K client processes (bench/streams_client.py). See bench/README.md."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import asyncio
import atexit
import contextlib
import json
import os
import re
import signal
import sqlite3
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import grpc
from agentrun.v1 import run_pb2, run_service_pb2_grpc
from agentrun.v1 import run_service_pb2 as pb

from bench.measure import percentile
from bench.processes import READY, agentrun_argv
from bench.streams_client import CHILDREN, Load, clients, kill_children, raise_fd_limit

HOLD_MS = 3_600_000  # idle-phase runs sleep this long; they are cancelled at the phase's end
METRIC = re.compile(r"^(agentrun_[a-z_]+)(\{[^}]*\})? ([0-9.e+-]+)$", re.M)
Stub = run_service_pb2_grpc.RunServiceStub


def exit_on_signal(signum: int, _: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through every `finally`, which stops the servers


@dataclass(frozen=True)
class Options:
    sizes: tuple[int, ...] = (1000,)
    clients: int = 2  # load-client processes
    open_rate: float = 250.0  # streams opened per second, all clients together
    tokens: int = 10  # live runs: tokens each ...
    delay_ms: int = 3000  # ... one every delay_ms
    idle_s: float = 15.0  # each idle window
    agents_file: Path | None = None
    server_args: tuple[str, ...] = ()  # more `agentrun serve` flags


@dataclass
class Server:
    pid: int
    http: str
    grpc: str
    log: Path

    def rss_mb(self) -> float:
        status = Path(f"/proc/{self.pid}/status").read_text()
        return int(re.search(r"VmRSS:\s+(\d+)", status)[1]) / 1024  # type: ignore[index]

    def cpu_s(self) -> float:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def log_errors(self) -> dict[str, int]:
        """Error lines of the server's log, by their first words."""
        lines = self.log.read_text(errors="replace").splitlines()
        kinds = Counter(
            " ".join(line.split()[:8])[:100] for line in lines if "ERROR" in line or "Error" in line
        )
        return dict(kinds.most_common(8))


@dataclass
class Figures:
    n: int
    values: dict[str, float] = field(default_factory=dict)
    errors: dict[str, dict[str, int]] = field(default_factory=dict)  # phase -> kind -> count


# ---- the server and its metrics --------------------------------------------------------------


@contextlib.asynccontextmanager
async def serving(work: Path, n: int, options: Options) -> AsyncIterator[Server]:
    """A fresh `agentrun serve` with its gateway; SIGTERM (then SIGKILL) on exit."""
    argv = agentrun_argv(work / f"streams-{n}.db", options.agents_file, gateway=True)
    argv += ["--workers", str(n + 64), *options.server_args]
    log = work / f"server-{n}.log"
    with log.open("wb") as err:
        proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE, stderr=err)
    CHILDREN.add(proc.pid)
    try:
        found: dict[str, str] = {}
        assert proc.stdout is not None
        async with asyncio.timeout(90):
            while {"gRPC", "HTTP"} - found.keys():
                line = (await proc.stdout.readline()).decode()
                if not line:
                    raise RuntimeError(f"agentrun serve exited: {log.read_text()[-2000:]}")
                if match := READY.search(line):
                    found[match[1]] = f"{match[2]}:{match[3]}"
        yield Server(proc.pid, found["HTTP"], found["gRPC"], log)
    finally:
        await stop(proc)


async def stop(proc: asyncio.subprocess.Process) -> None:
    CHILDREN.discard(proc.pid)
    if proc.returncode is None:
        proc.terminate()
        try:
            async with asyncio.timeout(30):
                await proc.wait()
        except TimeoutError:
            proc.kill()
            await proc.wait()


async def scrape(http: aiohttp.ClientSession, server: Server) -> dict[str, float]:
    async with http.get(f"http://{server.http}/metrics") as response:
        text = await response.text()
    return {m[1] + (m[2] or ""): float(m[3]) for m in METRIC.finditer(text)}


async def idle_statements(http: aiohttp.ClientSession, server: Server, seconds: float) -> tuple[float, float]:
    """SQL statements and events appended in `seconds` of quiet, less what a scrape itself costs
    (it reads the queue's gauges): the window's count minus that of a scrape right after it."""
    before = await scrape(http, server)
    await asyncio.sleep(seconds)
    after = await scrape(http, server)
    again = await scrape(http, server)
    statements, events = "agentrun_db_statements_total", "agentrun_events_appended_total"
    scrape_cost = again[statements] - after[statements]
    return after[statements] - before[statements] - scrape_cost, after[events] - before[events]


async def settled_rss(server: Server, seconds: float = 3.0) -> float:
    await asyncio.sleep(seconds)
    return server.rss_mb()


# ---- the phases ------------------------------------------------------------------------------


def load_of(server: Server, options: Options) -> Load:
    return Load(f"http://{server.http}", options.clients, options.open_rate)


async def gather_limited(calls: Sequence[Callable[[], Awaitable[Any]]], in_flight: int = 64) -> list[Any]:
    gate = asyncio.Semaphore(in_flight)

    async def limited(call: Callable[[], Awaitable[Any]]) -> Any:
        async with gate:
            return await call()

    return await asyncio.gather(*(limited(c) for c in calls))


async def until_none(stub: Stub, state: int, timeout_s: float = 300.0) -> None:
    request = pb.ListRunsRequest(states=[state], page_size=1)  # type: ignore[list-item]
    async with asyncio.timeout(timeout_s):
        while (await stub.ListRuns(request)).total_size:  # noqa: ASYNC110 - state in another process
            await asyncio.sleep(0.2)


async def idle_phase(
    server: Server, stub: Stub, http: aiohttp.ClientSession, options: Options, fig: Figures
) -> None:
    n, v = fig.n, fig.values
    v["rss_before_mb"] = await settled_rss(server, 1.0)
    request = pb.RunRequest(agent_id="slow", input=run_pb2.RunInput(message=f"tokens=1 delay_ms={HOLD_MS}"))
    runs = await gather_limited([lambda: stub.Run(request)] * n)
    ids = [r.run.id for r in runs]
    await until_none(stub, run_pb2.RUN_STATE_QUEUED)
    v["rss_runs_mb"] = await settled_rss(server)
    v["idle_statements_runs_only"], _ = await idle_statements(http, server, options.idle_s)
    async with clients(load_of(server, options), n, run_ids=ids) as load:
        await load.opened()
        v["rss_idle_open_mb"] = await settled_rss(server)
        v["idle_kb_per_stream"] = (v["rss_idle_open_mb"] - v["rss_runs_mb"]) * 1024 / n
        v["idle_statements_with_streams"], v["idle_events"] = await idle_statements(
            http, server, options.idle_s
        )
        cancels = [lambda run_id=i: stub.CancelRun(pb.CancelRunRequest(run_id=run_id)) for i in ids]
        await gather_limited(cancels)
        result = await load.results()
    v["idle_streams_complete"] = result["complete"]
    fig.errors["idle"] = dict(result["errors"])
    v["rss_idle_after_mb"] = await settled_rss(server)


async def live_phase(server: Server, options: Options, database: Path, fig: Figures) -> None:
    n, v = fig.n, fig.values
    message = f"tokens={options.tokens} delay_ms={options.delay_ms}"
    started_at, cpu0, wall0 = time.time(), server.cpu_s(), time.perf_counter()
    peak = server.rss_mb()
    async with clients(load_of(server, options), n, message) as load:
        sampler = asyncio.create_task(sample_peak(server))
        await load.opened()
        opening = time.perf_counter() - wall0
        v["open_cpu_pct"], v["open_seconds"] = 100 * (server.cpu_s() - cpu0) / opening, opening
        v["rss_live_open_mb"] = server.rss_mb()
        result = await load.results()
        peak = max(peak, await cancel_value(sampler))
    wall, cpu = time.perf_counter() - wall0, server.cpu_s() - cpu0
    v["live_cpu_pct"] = 100 * cpu / wall
    v["live_seconds"] = wall
    v["rss_live_peak_mb"] = peak
    v["first_frame_p50_ms"] = percentile(result["first_s"], 50) * 1000 if result["first_s"] else -1
    v["first_frame_p99_ms"] = percentile(result["first_s"], 99) * 1000 if result["first_s"] else -1
    v["events_delivered"] = result["events"]
    v["events_produced"] = produced(database, started_at)
    v["events_per_s"] = result["events"] / wall
    v["live_streams_complete"] = result["complete"]
    fig.errors["live"] = dict(result["errors"])
    v["rss_live_after_mb"] = await settled_rss(server)


async def sample_peak(server: Server) -> float:
    peak = 0.0
    with contextlib.suppress(asyncio.CancelledError):
        while True:
            peak = max(peak, server.rss_mb())
            await asyncio.sleep(0.5)
    return peak


async def cancel_value(task: asyncio.Task[float]) -> float:
    task.cancel()
    return await task


def produced(database: Path, since: float) -> int:
    """Events the store holds for the live phase's runs (their last seqs)."""
    with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db:
        row = db.execute(
            "SELECT COALESCE(SUM(last_seq), 0) FROM run WHERE created_at >= ?", (since,)
        ).fetchone()
    return int(row[0])


async def one_size(work: Path, n: int, options: Options) -> Figures:
    fig = Figures(n)
    async with (
        serving(work, n, options) as server,
        grpc.aio.insecure_channel(server.grpc) as channel,
        aiohttp.ClientSession() as http,
    ):
        stub = Stub(channel)
        await idle_phase(server, stub, http, options, fig)
        await live_phase(server, options, work / f"streams-{n}.db", fig)
        fig.errors["server log"] = server.log_errors()
    return fig


# ---- report and main -------------------------------------------------------------------------

ROWS = (
    ("rss_before_mb", "server RSS before, MB"),
    ("rss_runs_mb", "  with N idle runs executing, MB"),
    ("rss_idle_open_mb", "  + N idle streams open, MB"),
    ("idle_kb_per_stream", "  = per idle stream, KB"),
    ("rss_idle_after_mb", "  after they closed, MB"),
    ("idle_statements_runs_only", "SQL statements in the idle window, runs only"),
    ("idle_statements_with_streams", "  with the N streams open"),
    ("idle_events", "  events appended in that window"),
    ("idle_streams_complete", "idle streams complete (cancelled: ERROR)"),
    ("first_frame_p50_ms", "live: first frame p50, ms"),
    ("first_frame_p99_ms", "live: first frame p99, ms"),
    ("events_delivered", "live: events delivered"),
    ("events_produced", "live: events produced (stored)"),
    ("events_per_s", "live: events/s delivered"),
    ("live_streams_complete", "live streams complete"),
    ("open_seconds", "live: time until all had a frame, s"),
    ("open_cpu_pct", "live: server CPU % until then"),
    ("live_cpu_pct", "live: server CPU %, whole phase"),
    ("live_seconds", "live: phase length, s"),
    ("rss_live_open_mb", "live: RSS with all open, MB"),
    ("rss_live_peak_mb", "live: RSS peak, MB"),
    ("rss_live_after_mb", "live: RSS after they closed, MB"),
)


def report(figures: list[Figures], options: Options, fd_limit: int) -> None:
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"\nstreams bench: {options.clients} client processes, open rate {options.open_rate:g}/s")
    print(
        f"live runs: tokens={options.tokens} delay_ms={options.delay_ms}; idle windows {options.idle_s:g} s"
    )
    print(f"open files limit {fd_limit} (raised to the hard limit); load average now {load}")
    print(f"{'N':<46}" + "".join(f"{f.n:>12,}" for f in figures))
    for key, label in ROWS:
        print(f"{label:<46}" + "".join(f"{f.values.get(key, float('nan')):>12,.1f}" for f in figures))
    for fig in figures:
        for phase, kinds in fig.errors.items():
            if kinds:
                print(f"errors N={fig.n:,} {phase}: " + ", ".join(f"{k}: {c}" for k, c in kinds.items()))


async def bench_streams(options: Options) -> list[Figures]:
    with tempfile.TemporaryDirectory(prefix="agentrun-streams-") as tmp:
        return [await one_size(Path(tmp), n, options) for n in options.sizes]


def sizes(text: str) -> tuple[int, ...]:
    return tuple(int(part.replace("_", "")) for part in text.split(",") if part.strip())


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--clients", type=int, default=Options.clients, help="load-client processes")
    parser.add_argument(
        "--open-rate", type=float, default=Options.open_rate, help="streams opened per second"
    )
    parser.add_argument("--tokens", type=int, default=Options.tokens, help="tokens per live run")
    parser.add_argument(
        "--delay-ms", type=int, default=Options.delay_ms, help="ms between a live run's tokens"
    )
    parser.add_argument("--idle-s", type=float, default=Options.idle_s, help="length of each idle window")
    parser.add_argument(
        "--server-arg", action="append", default=[], help="one more `agentrun serve` argument"
    )


def options_from(args: argparse.Namespace, streams: str) -> Options:
    return Options(
        sizes=sizes(streams), clients=args.clients, open_rate=args.open_rate, tokens=args.tokens,
        delay_ms=args.delay_ms, idle_s=args.idle_s, agents_file=args.agents_file,
        server_args=tuple(args.server_arg),
    )  # fmt: skip


def run(options: Options, json_path: Path | None) -> None:
    fd_limit = raise_fd_limit()  # inherited by the server and client subprocesses
    atexit.register(kill_children)
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, exit_on_signal)
    figures = asyncio.run(bench_streams(options))
    report(figures, options, fd_limit)
    if json_path:
        document = {"options": {k: str(v) for k, v in vars(options).items()}, "loadavg": os.getloadavg(),
                    "sizes": [{"n": f.n, **f.values, "errors": f.errors} for f in figures]}  # fmt: skip
        json_path.write_text(json.dumps(document, indent=2) + "\n")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="N SSE streams at once through one agentrun serve.")
    parser.add_argument("--streams", default="1000", help="stream counts, e.g. 1000,5000,10000")
    parser.add_argument("--agents-file", type=Path, help="agents.yaml for the server (default: its own)")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    add_arguments(parser)
    args = parser.parse_args(argv)
    run(options_from(args, args.streams), args.json)


if __name__ == "__main__":
    main()
