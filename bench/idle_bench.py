"""Idle cost and cross-replica cancel, each against its target, on real `agentrun serve` processes:

- idle: SQL statements per second a server sends with nothing to do (after a warm-up run), read
  from its own `agentrun_db_statements_total` over a window, on SQLite and on PostgreSQL (one
  replica; the LISTEN connection's keepalive, one query per 15 s, and SQLite's watch for other
  processes' commits, one PRAGMA a second, are not SQLAlchemy statements and are added by hand).
  Target: ≤ 2 per second per replica.
- cancel: two replicas on one PostgreSQL; a `slow` run executes on replica A, CancelRun is sent to
  replica B; time until B answers with the CANCELLED run. Target: p50 ≤ 100 ms.

    python -m bench.idle_bench [--window 10] [--cancels 20]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import aiohttp
import grpc
from agentrun.v1 import run_pb2, run_service_pb2_grpc
from agentrun.v1 import run_service_pb2 as pb

from bench.pg_bench import database
from bench.processes import Listening, agentrun_argv, server_process

LISTEN_KEEPALIVE_PER_S = 1 / 15
# SQLite's watch for other processes' commits: one PRAGMA a second on the writer's DB-API connection.
SQLITE_WATCH_PER_S = 1.0
IDLE_TARGET_PER_S = 2.0
CANCEL_TARGET_P50_MS = 100.0


async def statements(server: Listening) -> float:
    async with aiohttp.ClientSession() as http, http.get(f"http://{server.http}/metrics") as reply:
        for line in (await reply.text()).splitlines():
            if line.startswith("agentrun_db_statements_total "):
                return float(line.split()[1])
    raise RuntimeError("agentrun_db_statements_total missing from /metrics")


async def idle_rate(name: str, url: str, work: Path, window_s: float) -> float:
    """Statements per second of an idle server, after one run has warmed it up."""
    async with (
        server_process(name, agentrun_argv(url, None, gateway=True), work, expect=("gRPC", "HTTP")) as server,
        grpc.aio.insecure_channel(server.grpc) as channel,
    ):
        stub = run_service_pb2_grpc.RunServiceStub(channel)
        await stub.Run(pb.RunRequest(agent_id="echo", input=run_pb2.RunInput(message="warm up"), wait=True))
        await asyncio.sleep(1.0)  # let the run's own after-work (e.g. its webhook check) settle
        before = await statements(server)
        await asyncio.sleep(window_s)  # the measurement: a window of doing nothing
        after = await statements(server)
    # The scrape itself reads the queue gauges (one statement per scrape): not idle work.
    return (after - before - 1) / window_s


async def cancel_latencies(url: str, work: Path, count: int) -> list[float]:
    """Milliseconds from CancelRun on replica B to its answer, for runs executing on replica A."""
    worker_argv = agentrun_argv(url, None)
    front_argv = [*agentrun_argv(url, None), "--workers", "0"]
    async with (
        server_process("replica-a", worker_argv, work) as a,
        server_process("replica-b", front_argv, work) as b,
        grpc.aio.insecure_channel(a.grpc) as on_a,
        grpc.aio.insecure_channel(b.grpc) as on_b,
    ):
        stub_a, stub_b = run_service_pb2_grpc.RunServiceStub(on_a), run_service_pb2_grpc.RunServiceStub(on_b)
        times: list[float] = []
        for _ in range(count):
            start = pb.StreamRunRequest(
                run=pb.RunRequest(agent_id="slow", input=run_pb2.RunInput(message="tokens=1000 delay_ms=20"))
            )
            stream = stub_a.StreamRun(start)
            first = await stream.read()  # START: the run executes on A
            run_id = first.event.run_id
            await stream.read()  # a token: the agent is running
            began = time.perf_counter()
            reply = await stub_b.CancelRun(pb.CancelRunRequest(run_id=run_id))
            times.append((time.perf_counter() - began) * 1000)
            assert reply.run.state == run_pb2.RUN_STATE_CANCELLED, reply.run.state
            stream.cancel()
        return times


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


async def main(window_s: float, cancels: int) -> None:
    target = f"(target ≤ {IDLE_TARGET_PER_S:g})"
    with tempfile.TemporaryDirectory(prefix="agentrun-idle-") as tmp:
        work = Path(tmp)
        sqlite = (
            await idle_rate("idle-sqlite", f"sqlite:///{work / 'idle.db'}", work, window_s)
            + SQLITE_WATCH_PER_S
        )
        print(f"idle statements/s, SQLite:      {sqlite:6.2f}  {target} {verdict(sqlite <= 2)}")
        async with database() as url:
            pg = await idle_rate("idle-pg", url, work, window_s) + LISTEN_KEEPALIVE_PER_S
            print(f"idle statements/s, PostgreSQL:  {pg:6.2f}  {target} {verdict(pg <= 2)}")
        async with database() as url:
            times = await cancel_latencies(url, work, cancels)
        p50, worst = statistics.median(times), max(times)
        ok = verdict(p50 <= CANCEL_TARGET_P50_MS)
        print(
            f"cancel via replica B of a run on A, {len(times)} runs: p50 {p50:.1f} ms, worst {worst:.1f} ms"
        )
        print(f"  (target p50 ≤ {CANCEL_TARGET_P50_MS:g} ms) {ok}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--window", type=float, default=10.0, help="seconds of idleness measured")
    parser.add_argument("--cancels", type=int, default=20, help="runs cancelled across replicas")
    args = parser.parse_args()
    asyncio.run(main(args.window, args.cancels))
