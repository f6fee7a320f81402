"""PostgreSQL rows: echo Run(wait) on one server and on two server replicas sharing one throwaway
PostgreSQL (started here, as the tests start theirs), each compared with SQLite measured in the same
run ("vs baseline" = multiple of the SQLite p50 / share of the SQLite runs/s). Also a burst: BURST
Run(wait) of echo sent at once, timed until the last returns, on SQLite and on PostgreSQL.

A SQLite server runs alongside PostgreSQL x1 and the two are measured in turns (a burst on one, then
on the other; with `sqlite_rows`, latency samples and throughput windows too): on a machine whose
load changes from one minute to the next, each comparison is between figures taken under the same
load. Part of bench/bench.py; run alone, only these rows and the SQLite echo rows they compare:

    python bench/pg_bench.py [--quick] [--json PATH] [--duration S] [--samples N] [--agents-file PATH]
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as `python bench/pg_bench.py`: import the sibling modules through the `bench` package.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import asyncio
import contextlib
import dataclasses
import itertools
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Sequence

import grpc
from agentrun.v1 import run_pb2, run_service_pb2_grpc
from agentrun.v1 import run_service_pb2 as pb

from bench.gateway_bench import MESSAGE
from bench.measure import FULL, IN_FLIGHT, QUICK, Call, Plan, load, series, timed
from bench.processes import agentrun_argv, server_process
from bench.report import BURST, PG_FIGURES, Results, machine, report, write_json
from tests import postgres

Stub = run_service_pb2_grpc.RunServiceStub
# What the PostgreSQL rows are compared with; measured here when this module runs alone.
SQLITE_ROWS = ("echo_run_p50_ms", "echo_run_p99_ms", "echo_runs_per_s", "echo_burst_ms")
TURNS = 4  # each series is taken in this many parts, the configurations alternating part by part


@contextlib.asynccontextmanager
async def database() -> AsyncIterator[str]:
    """A fresh database on a throwaway PostgreSQL server: its postgresql+asyncpg URL."""
    cluster = postgres.Cluster()
    admin = await asyncio.to_thread(cluster.start)
    try:
        url, _ = await asyncio.to_thread(postgres.fresh_database, admin)
        yield url
    finally:
        await asyncio.to_thread(cluster.stop)


async def _serve(
    stack: contextlib.AsyncExitStack, name: str, url: str, work: Path, agents: Path | None
) -> Stub:
    listening = await stack.enter_async_context(server_process(name, agentrun_argv(url, agents), work))
    return Stub(await stack.enter_async_context(grpc.aio.insecure_channel(listening.grpc)))


async def bench_postgres(
    plan: Plan,
    work: Path,
    agents_file: Path | None,
    request: object,
    results: Results,
    *,
    sqlite_rows: bool = False,
) -> None:
    """The PostgreSQL rows and the SQLite burst; with `sqlite_rows` the SQLite echo rows too (when
    the rest of the bench, which measures them, does not run)."""
    async with contextlib.AsyncExitStack() as stack:
        sqlite = await _serve(
            stack, "agentrun-sqlite", f"sqlite:///{work / 'reference.db'}", work, agents_file
        )
        reference = {"echo_run": [sqlite]} if sqlite_rows else {}
        try:
            postgres.binary("pg_ctl")
        except RuntimeError as exc:
            results.skipped |= dict.fromkeys(PG_FIGURES, str(exc))
            results.notes.append(f"PostgreSQL rows skipped: {exc}")
            await _in_turns(reference, request, plan, results)
            await _bursts({"echo_burst": [sqlite]}, request, plan, results)
            return
        url = await stack.enter_async_context(database())
        first = await _serve(stack, "agentrun-pg1", url, work, agents_file)
        await _in_turns(reference | {"pg1_echo_run": [first]}, request, plan, results)
        await _bursts({"echo_burst": [sqlite], "pg1_echo_burst": [first]}, request, plan, results)
        second = await _serve(stack, "agentrun-pg2", url, work, agents_file)
        await _in_turns({"pg2_echo_run": [first, second]}, request, plan, results)


def _caller(stubs: list[Stub], request: object) -> Call:
    """Calls alternate between the replicas (a client-side round robin, as a load balancer would)."""
    turn = itertools.cycle(stubs)

    async def call() -> object:
        return await next(turn).Run(request)

    return call


async def _in_turns(configs: dict[str, list[Stub]], request: object, plan: Plan, results: Results) -> None:
    """p50/p99 at 1 in flight and runs/s at IN_FLIGHT of each configuration (figure prefix -> its
    servers), taken in TURNS parts with the configurations alternating."""
    calls = {prefix: _caller(stubs, request) for prefix, stubs in configs.items()}
    part = dataclasses.replace(plan, warmup=0, cap_s=plan.cap_s / TURNS)
    samples: dict[str, list[float]] = {prefix: [] for prefix in calls}
    for call in calls.values():
        for _ in range(plan.warmup):
            await call()
    for _ in range(TURNS):
        for prefix, call in calls.items():
            samples[prefix] += await series(timed(call), part, -(-plan.samples // TURNS))
    done = dict.fromkeys(calls, 0)
    took = dict.fromkeys(calls, 0.0)
    for call in calls.values():
        await load(call, IN_FLIGHT, min(1.0, plan.duration_s / 4))  # warm-up
    for _ in range(TURNS):
        for prefix, call in calls.items():
            started = time.perf_counter()
            done[prefix] += (await load(call, IN_FLIGHT, plan.duration_s / TURNS))[1]
            took[prefix] += time.perf_counter() - started
    for prefix in calls:
        results.latency(prefix, samples[prefix])
        results.rate(f"{prefix}s_per_s", done[prefix] / took[prefix], done[prefix])


async def _bursts(configs: dict[str, list[Stub]], request: object, plan: Plan, results: Results) -> None:
    """BURST Run(wait) sent at once (alternating between a configuration's replicas), timed until
    the last one returns: after one burst each as a warm-up, the median of the next ones, the
    configurations taking turns (--quick: one burst each)."""

    async def once(prefix: str, stubs: list[Stub]) -> float:
        started = time.perf_counter()
        answers = await asyncio.gather(
            *(stub.Run(request) for stub, _ in zip(itertools.cycle(stubs), range(BURST)))
        )
        took = time.perf_counter() - started
        states = {a.run.state for a in answers}
        if states != {run_pb2.RUN_STATE_COMPLETED}:
            ended = sorted(run_pb2.RunState.Name(s) for s in states)
            raise RuntimeError(f"{prefix}: runs of the burst ended {ended}")
        return took

    quick = plan.duration_s < 4  # --quick: one burst each, no warm-up
    repeats = 1 if quick else 3
    times: dict[str, list[float]] = {prefix: [] for prefix in configs}
    warmups = {prefix: 0.0 if quick else await once(prefix, stubs) for prefix, stubs in configs.items()}
    for _ in range(repeats):
        for prefix, stubs in configs.items():
            times[prefix].append(await once(prefix, stubs))
    for prefix, took in times.items():
        results.rate(f"{prefix}_ms", statistics.median(took) * 1000, BURST * repeats)
        shown = ", ".join(f"{t * 1000:.0f}" for t in took)
        warmup = f"warm-up {warmups[prefix] * 1000:.0f} ms, then " if warmups[prefix] else ""
        results.notes.append(f"{prefix}: {warmup}{shown} ms")


# ---- run alone -----------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="The PostgreSQL rows of bench/bench.py and the SQLite echo rows they compare, in turns."
    )
    parser.add_argument("--quick", action="store_true", help="small counts, to see that it works")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    parser.add_argument("--duration", type=float, help="seconds per in-flight series")
    parser.add_argument("--samples", type=int, help="calls per 1-in-flight latency series")
    parser.add_argument("--agents-file", type=Path, help="agents.yaml for the servers (default: their own)")
    args = parser.parse_args(argv)
    overrides = {"duration_s": args.duration, "samples": args.samples}
    plan = dataclasses.replace(
        QUICK if args.quick else FULL, **{k: v for k, v in overrides.items() if v is not None}
    )
    echo = pb.RunRequest(agent_id="echo", input=run_pb2.RunInput(message=MESSAGE), wait=True)

    async def measure() -> Results:
        results = Results()
        with tempfile.TemporaryDirectory(prefix="agentrun-pg-bench-") as tmp:
            await bench_postgres(plan, Path(tmp), args.agents_file, echo, results, sqlite_rows=True)
        return results

    started = time.perf_counter()
    results = asyncio.run(measure())
    info = machine()
    report(results, info, plan, args.quick, rows=SQLITE_ROWS + PG_FIGURES)
    print(f"\ntotal bench time {time.perf_counter() - started:.0f} s")
    if args.json:
        write_json(args.json, results, info, plan, args.quick)


if __name__ == "__main__":
    main()
