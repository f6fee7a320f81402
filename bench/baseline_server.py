"""Baseline for bench.py: the least a durable gRPC submit can cost in Python. One grpc.aio server,
one unary method with raw-bytes (de)serialisers (no protobuf), and per call one SQLite INSERT +
COMMIT through aiosqlite (WAL, synchronous=NORMAL, like the real server's store).

A second method, Stream, sends N prepared 68-byte messages (a RunEvent's size) on one stream with
no work between them: the most messages per second the same client can read from a Python server.

    python bench/baseline_server.py --database PATH [--listen 127.0.0.1:0]

Prints `baseline: gRPC on HOST:PORT` when ready; stops on SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import signal
import time
from collections.abc import AsyncIterator

import aiosqlite
import grpc

SERVICE = "bench.Baseline"
MESSAGE = bytes(68)
SCHEMA = (
    "CREATE TABLE IF NOT EXISTS item (id INTEGER PRIMARY KEY, "
    "payload BLOB NOT NULL, created_at REAL NOT NULL)"
)


async def open_db(path: str) -> aiosqlite.Connection:
    db = await aiosqlite.connect(path)
    await db.execute("PRAGMA journal_mode=WAL")
    await db.execute("PRAGMA synchronous=NORMAL")
    await db.execute(SCHEMA)
    await db.commit()
    return db


def handler(db: aiosqlite.Connection) -> grpc.GenericRpcHandler[bytes, bytes]:
    lock = asyncio.Lock()  # one transaction per call: no accidental group commit between calls

    async def insert(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        async with lock:
            cursor = await db.execute(
                "INSERT INTO item (payload, created_at) VALUES (?, ?)", (request, time.time())
            )
            await db.commit()
        return (cursor.lastrowid or 0).to_bytes(8, "little")

    async def stream(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> AsyncIterator[bytes]:
        for _ in range(int.from_bytes(request, "little")):
            yield MESSAGE

    # No serialisers given: the handlers see and return raw bytes.
    methods = {
        "Insert": grpc.unary_unary_rpc_method_handler(insert),
        "Stream": grpc.unary_stream_rpc_method_handler(stream),
    }
    return grpc.method_handlers_generic_handler(SERVICE, methods)


async def serve(listen: str, database: str) -> None:
    db = await open_db(database)
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    server.add_generic_rpc_handlers((handler(db),))
    port = server.add_insecure_port(listen)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"baseline: gRPC on {listen.rsplit(':', 1)[0]}:{port}", flush=True)
    await stop.wait()
    await server.stop(1.0)
    await db.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--listen", default="127.0.0.1:0")
    parser.add_argument("--database", required=True, help="SQLite file to insert into")
    args = parser.parse_args()
    asyncio.run(serve(args.listen, args.database))


if __name__ == "__main__":
    main()
