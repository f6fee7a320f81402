"""Statements per run on PostgreSQL: serves one agentrun process on a throwaway PostgreSQL with
pg_stat_statements, sends echo Run(wait) calls (one at a time, then many at once) and prints, per
run, the statements the database executed (by kind) and the transactions it committed.

    python bench/pg_statements.py [--runs N] [--burst N] [--agents-file PATH]"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import asyncio
import tempfile
from collections import Counter

import asyncpg
import grpc
from agentrun.v1 import run_pb2, run_service_pb2_grpc
from agentrun.v1 import run_service_pb2 as pb

from bench.gateway_bench import MESSAGE
from bench.processes import agentrun_argv, server_process
from tests import postgres

# The statement's kind: its first words, enough to tell them apart.
KINDS = (
    ("pg_notify", "NOTIFY"),
    ("pg_try_advisory", "advisory lock"),
    ("INSERT INTO run_event", "INSERT run_event"),
    ("INSERT INTO run ", "INSERT run"),
    ("INSERT INTO session", "upsert session"),
    ("INSERT INTO webhook_delivery", "INSERT webhook_delivery"),
    ("UPDATE run SET last_seq", "UPDATE run (events)"),
    ("UPDATE run SET state", "UPDATE run (state)"),
    ("UPDATE run", "UPDATE run (other)"),
    ("SELECT session.id", "lock session"),
    ("BEGIN", "BEGIN"),
    ("COMMIT", "COMMIT"),
    ("ROLLBACK", "ROLLBACK"),
)


def kind(query: str) -> str:
    text = " ".join(query.split())
    for start, name in KINDS:
        if start in text[:120]:
            return name
    return text[:150]


async def counts(admin: str, database: str) -> tuple[Counter[str], int]:
    conn = await asyncpg.connect(admin)
    try:
        rows = await conn.fetch(
            "SELECT s.query, s.calls FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid"
            " WHERE d.datname = $1",
            database,
        )
        commits = await conn.fetchval("SELECT xact_commit FROM pg_stat_database WHERE datname = $1", database)
    finally:
        await conn.close()
    found: Counter[str] = Counter()
    for row in rows:
        found[kind(row["query"])] += row["calls"]
    return found, int(commits)


async def reset(admin: str) -> None:
    conn = await asyncpg.connect(admin)
    try:
        await conn.execute("SELECT pg_stat_statements_reset(); SELECT pg_stat_reset()")
    finally:
        await conn.close()


async def measure(stub: run_service_pb2_grpc.RunServiceStub, runs: int, at_once: int) -> None:
    request = pb.RunRequest(agent_id="echo", input=run_pb2.RunInput(message=MESSAGE), wait=True)
    for start in range(0, runs, at_once):
        answers = await asyncio.gather(*(stub.Run(request) for _ in range(min(at_once, runs - start))))
        assert {a.run.state for a in answers} == {run_pb2.RUN_STATE_COMPLETED}


async def main(runs: int, burst: int, agents_file: Path | None) -> None:
    cluster = postgres.Cluster()
    admin = await asyncio.to_thread(cluster.start)
    try:
        conn = await asyncpg.connect(admin)
        await conn.execute("ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'")
        await conn.close()
        await asyncio.to_thread(cluster.restart)
        conn = await asyncpg.connect(admin)
        await conn.execute("CREATE EXTENSION pg_stat_statements")
        await conn.close()
        url, name = await asyncio.to_thread(postgres.fresh_database, admin)
        with tempfile.TemporaryDirectory(prefix="agentrun-pgstat-") as work:
            async with (
                server_process("agentrun-pg", agentrun_argv(url, agents_file), Path(work)) as listening,
                grpc.aio.insecure_channel(listening.grpc) as channel,
            ):
                stub = run_service_pb2_grpc.RunServiceStub(channel)
                await measure(stub, 20, 1)  # warm-up
                for label, at_once in (("one at a time", 1), (f"{burst} at once", burst)):
                    await reset(admin)
                    await measure(stub, runs, at_once)
                    await asyncio.sleep(1.0)  # pg_stat_database is reported with a delay
                    found, commits = await counts(admin, name)
                    total = sum(found.values())
                    print(
                        f"\n{runs} echo Run(wait), {label}: per run {total / runs:.2f} statements, "
                        f"{commits / runs:.2f} commits"
                    )
                    for what, calls in found.most_common():
                        print(f"  {calls / runs:8.3f}  {what}")
    finally:
        await asyncio.to_thread(cluster.stop)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=400)
    parser.add_argument("--burst", type=int, default=200)
    parser.add_argument("--agents-file", type=Path)
    args = parser.parse_args()
    asyncio.run(main(args.runs, args.burst, args.agents_file))
