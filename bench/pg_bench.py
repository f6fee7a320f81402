"""PostgreSQL rows: echo Run(wait) on one server and on two server replicas sharing one throwaway
PostgreSQL (started here, as the tests start theirs), each compared with the SQLite rows of the
same run ("vs baseline" = multiple of the SQLite p50 / share of the SQLite runs/s)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
from agentrun.v1 import run_service_pb2_grpc

from bench.measure import Plan, series, throughput, timed
from bench.processes import agentrun_argv, server_process
from bench.report import PG_FIGURES, Results
from tests import postgres


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


async def bench_postgres(
    plan: Plan, work: Path, agents_file: Path | None, request: object, results: Results
) -> None:
    try:
        postgres.binary("pg_ctl")
    except RuntimeError as exc:
        results.skipped |= dict.fromkeys(PG_FIGURES, str(exc))
        results.notes.append(f"PostgreSQL rows skipped: {exc}")
        return
    async with (
        database() as url,
        server_process("agentrun-pg1", agentrun_argv(url, agents_file), work) as first,
        grpc.aio.insecure_channel(first.grpc) as one,
    ):
        stubs = [run_service_pb2_grpc.RunServiceStub(one)]
        await _measure("pg1_echo_run", stubs, request, plan, results)
        async with (
            server_process("agentrun-pg2", agentrun_argv(url, agents_file), work) as second,
            grpc.aio.insecure_channel(second.grpc) as two,
        ):
            stubs.append(run_service_pb2_grpc.RunServiceStub(two))
            await _measure("pg2_echo_run", stubs, request, plan, results)


async def _measure(
    prefix: str,
    stubs: list[run_service_pb2_grpc.RunServiceStub],
    request: object,
    plan: Plan,
    results: Results,
) -> None:
    """Calls alternate between the replicas (a client-side round robin, as a load balancer would)."""
    turn = itertools.cycle(stubs)

    async def call() -> object:
        return await next(turn).Run(request)

    results.latency(prefix, await series(timed(call), plan))
    results.rate(f"{prefix}s_per_s", *await throughput(call, plan))
