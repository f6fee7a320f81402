"""Reads over a prefilled store: BatchGetRuns(100) and GetRun as the run table grows (10k, 100k, 1M
... up to --prefill), and BatchGetRuns for a caller whose API key scopes it to one org.

Each size has its own file, a copy of the one before with more runs, filled with `sqlite3` while no
server runs: one transaction, rows streamed from a generator, the named indexes built again at the
end (1M runs: about 30 s and little memory). Ids are derived from the run number, so a sample of
existing ids needs no list of them. Then a server per file (and a second one with API keys on the
largest) is started, and the series are measured in turns, a tenth of each at a time, so that every
size sees the same load from the rest of the machine: the sizes' p50s can be compared.

    python -m bench.store_bench [--prefill N] [--quick]   # these rows alone
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import hashlib
import itertools
import random
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import grpc
from agentrun.v1 import run_service_pb2 as pb
from agentrun.v1 import run_service_pb2_grpc

from bench.measure import FULL, QUICK, Call, Plan, timed
from bench.processes import Agentrun, Listening, agentrun_argv, server_process
from bench.report import BATCH, SIZED_BATCH, Results, print_measured
from server.store.tables import RUN

MESSAGE = "hello from the benchmark"
ORG = "bench"
# A reader key of org ORG, for the org-scoped rows (the server gets its hash via --api-keys).
API_KEY = "ar_bench-reader-key-0123456789abcdef0123456789abcdef"
# Sizes measured on the way to --prefill (which is measured too).
DECADES = (10_000, 100_000, 1_000_000)

Stub = run_service_pb2_grpc.RunServiceStub
Metadata = tuple[tuple[str, str], ...]


def run_id(number: int) -> str:
    """A uuid4-shaped id that depends only on the number: as random in the id index as uuid4()."""
    h = hashlib.blake2b(number.to_bytes(8, "little", signed=True), digest_size=16).hexdigest()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:]}"


_VARIANT = {c: "89ab"[int(c, 16) & 3] for c in "0123456789abcdef"}


def json_none(column: str) -> str | None:
    """How the server stores None written to a JSON column: SQL NULL, or the JSON text null."""
    return None if getattr(RUN.c[column].type, "none_as_null", False) else "null"


# A COMPLETED echo run as the server stores it: JSON as SQLAlchemy writes it (json.dumps), from a
# template because json.dumps per row would take most of a 1M-run prefill. agent_state and
# decisions are never written for such a run, so they stay NULL.
_COLUMNS = (
    "number", "id", "agent_id", "org_id", "user_id", "session_id", "state", "attempt", "input",
    "result", "pending_action", "resume", "extras", "timeout_s", "deadline", "last_seq",
    "cancel_requested", "created_at", "started_at", "updated_at", "completed_at",
)  # fmt: skip
_RESULT = (
    '{"output": "%s", "tool_calls": [], "reasoning_steps": ["The user said %d characters; echoing them '
    'back."], "usage": {"duration_ms": 0, "input_tokens": 0, "output_tokens": 0, "reasoning_tokens": 0, '
    '"model_calls": 0}, "output_json": null, "followups": []}'
)


def stored_runs(first: int, last: int, now: float) -> Iterator[tuple[object, ...]]:
    """Runs `first`..`last` as rows of _COLUMNS."""
    nulls = tuple(json_none(c) for c in ("pending_action", "resume", "extras"))
    for number in range(first, last + 1):
        created = now - 86_400 + number * 0.001
        message = f"{MESSAGE} #{number}"
        yield (
            number, run_id(number), "echo", ORG, f"user-{number % 97}", run_id(-number), "COMPLETED", 1,
            f'{{"message": "{message}"}}', _RESULT % (message, len(message)), *nulls, 3600.0,
            created + 3600.0, 6, 0, created, created + 0.004, created + 0.011, created + 0.011,
        )  # fmt: skip


def prefill(database: Path, first: int, last: int) -> None:
    """Insert runs `first`..`last` in one transaction (the server is not running)."""
    unknown = set(_COLUMNS) - {c.name for c in RUN.columns}
    if unknown:
        raise RuntimeError(f"bench prefill writes columns the run table lacks: {sorted(unknown)}")
    sql = f"INSERT INTO run ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})"
    with contextlib.closing(sqlite3.connect(database)) as db:
        db.execute("PRAGMA journal_mode=WAL")
        # A bench file: no fsync, and a page cache that holds the indexes of random ids (1M runs:
        # about 150 MB), which would otherwise be read and written back for most inserts.
        db.execute("PRAGMA synchronous=OFF")
        db.execute("PRAGMA cache_size=-262144")
        # The named indexes are built again afterwards: sorting once beats a random insert per row.
        # In their order: where costs tie, SQLite's planner picks by it, as on the server's file.
        named = "SELECT name, sql FROM sqlite_master WHERE tbl_name = 'run' AND sql LIKE 'CREATE INDEX%'"
        indexes = db.execute(named + " ORDER BY rowid").fetchall()
        with db:
            for name, _ in indexes:
                db.execute(f"DROP INDEX {name}")
            db.executemany(sql, stored_runs(first, last, time.time()))
            for _, create in indexes:
                db.execute(create)
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def checkpointed(database: Path) -> Path:
    """The file with its WAL folded in, so that a copy of the file alone holds every row."""
    with contextlib.closing(sqlite3.connect(database)) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return database


def sizes(total: int) -> list[int]:
    return [s for s in DECADES if s < total] + [total]


async def prefilled(servers: Agentrun, total: int, results: Results) -> dict[int, Path]:
    """One database file per size in sizes(total), each a copy of the one before with more runs."""
    previous = servers.work / "store-schema.db"
    async with servers.serve("agentrun-schema", previous):
        pass  # the server creates the schema its own way; the runs go in while it is down
    files: dict[int, Path] = {}
    stored, started = 0, time.perf_counter()
    for count in sizes(total):
        files[count] = servers.work / f"store-{count}.db"
        shutil.copyfile(checkpointed(previous), files[count])
        await asyncio.to_thread(prefill, files[count], stored + 1, count)
        stored, previous = count, files[count]
    spent = time.perf_counter() - started
    results.notes.append(f"prefilled {stored:,} COMPLETED runs (org {ORG!r}) in {spent:.1f} s")
    return files


def batches(count: int, seed: int = 7) -> Iterator[pb.BatchGetRunsRequest]:
    """An endless cycle of 256 requests, each for BATCH random stored runs."""
    rng = random.Random(seed)
    requests = [
        pb.BatchGetRunsRequest(run_ids=[run_id(n) for n in rng.sample(range(1, count + 1), BATCH)])
        for _ in range(256)
    ]
    return itertools.cycle(requests)


async def batch_call(stub: Stub, count: int, metadata: Metadata = ()) -> Call:
    """BatchGetRuns of random stored runs, checked once."""
    requests = batches(count, seed=count)
    found = await stub.BatchGetRuns(next(requests), metadata=metadata)
    if len(found.runs) != BATCH or found.missing_run_ids:
        raise RuntimeError(f"BatchGetRuns found {len(found.runs)} of {BATCH} prefilled runs")

    async def call() -> object:
        return await stub.BatchGetRuns(next(requests), metadata=metadata)

    return call


def get_call(stub: Stub, count: int) -> Call:
    rng = random.Random(11)
    requests = itertools.cycle([pb.GetRunRequest(run_id=run_id(rng.randint(1, count))) for _ in range(1024)])

    async def call() -> object:
        return await stub.GetRun(next(requests))

    return call


async def interleaved(
    plan: Plan, series: dict[str, tuple[Call, int]], rounds: int = 10
) -> dict[str, list[float]]:
    """Latencies of every call (name -> (call, samples)), taken in turns, a tenth of each series per
    round, so that all of them see the same load from the rest of the machine."""
    for call, _ in series.values():
        for _ in range(plan.warmup):
            await call()
    values: dict[str, list[float]] = {name: [] for name in series}
    deadline = time.perf_counter() + plan.cap_s * len(series)
    for _ in range(rounds):
        for name, (call, samples) in series.items():
            for _ in range(max(1, samples // rounds)):
                values[name].append(await timed(call)())
        if time.perf_counter() > deadline:
            break
    return values


async def bench_store(plan: Plan, servers: Agentrun, results: Results) -> None:
    """A server per size (idle while another is measured) and, on the largest, one with API keys
    whose reads are scoped to the runs' org; the series are measured in turns."""
    files = await prefilled(servers, plan.prefill, results)
    largest = max(files)
    async with contextlib.AsyncExitStack() as stack:
        series: dict[str, tuple[Call, int]] = {}
        stubs = {
            count: await _stub(stack, servers.serve(f"agentrun-store-{count}", f))
            for count, f in files.items()
        }
        for count, stub in stubs.items():
            series[SIZED_BATCH.get(count, "batch_get")] = (await batch_call(stub, count), plan.batch_samples)
        series["get_run"] = (get_call(stubs[largest], largest), plan.samples)
        digest = hashlib.sha256(API_KEY.encode()).hexdigest()
        keys = ["--api-keys", f"{ORG}:reader:reader:sha256:{digest}"]
        argv = [*agentrun_argv(files[largest], servers.agents_file), *keys]
        scoped = await _stub(stack, server_process("agentrun-store-scoped", argv, servers.work))
        metadata = (("authorization", f"Bearer {API_KEY}"),)
        series["batch_get_scoped"] = (await batch_call(scoped, largest, metadata), plan.batch_samples)
        values = await interleaved(plan, series)
    for name, latencies in values.items():
        results.latency(name, latencies, p99=name == "batch_get")
    if largest in SIZED_BATCH:  # the target row is the largest size's
        results.latency("batch_get", values[SIZED_BATCH[largest]])


async def _stub(
    stack: contextlib.AsyncExitStack, server: contextlib.AbstractAsyncContextManager[Listening]
) -> Stub:
    listening = await stack.enter_async_context(server)
    channel = await stack.enter_async_context(grpc.aio.insecure_channel(listening.grpc))
    return Stub(channel)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="BatchGetRuns and GetRun over a prefilled store.")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--prefill", type=int, help="runs stored (default: 100,000; --quick 5,000)")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    if args.prefill:
        plan = dataclasses.replace(plan, prefill=args.prefill)
    results = Results()
    with tempfile.TemporaryDirectory(prefix="agentrun-store-bench-") as tmp:
        asyncio.run(bench_store(plan, Agentrun(Path(tmp), None, results), results))
    print_measured(results)


if __name__ == "__main__":
    main()
