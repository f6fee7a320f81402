"""HTTP baseline for bench.py's gateway rows: the least an HTTP JSON front of a durable gRPC submit
can cost in Python. One process, like `agentrun serve`: the baseline gRPC server of
bench/baseline_server.py (INSERT + COMMIT per call) and an aiohttp app that reaches it over one
grpc.aio channel on 127.0.0.1.

- POST /insert: parses the JSON body, sends `input.message` to Insert, answers `{"id": N}`.
- POST /stream: body `{"count": N}`; relays Stream's N prepared messages as SSE frames
  (`id: <n>` / `data: <hex of the message>`), one write per frame.

    python bench/baseline_gateway.py --database PATH [--listen 127.0.0.1:0]

Prints `baseline: gRPC on HOST:PORT` and `baseline-gateway: HTTP on HOST:PORT` when ready; stops on
SIGTERM/SIGINT."""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script: import the baseline server through the `bench` package.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import asyncio
import signal

import grpc
from aiohttp import web

from bench.baseline_server import SERVICE, handler, open_db

SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}


def create_app(channel: grpc.aio.Channel) -> web.Application:
    # No (de)serialisers: raw bytes, as the baseline server sees them.
    insert = channel.unary_unary(f"/{SERVICE}/Insert", request_serializer=None, response_deserializer=None)
    stream = channel.unary_stream(f"/{SERVICE}/Stream", request_serializer=None, response_deserializer=None)

    async def post_insert(request: web.Request) -> web.Response:
        body = await request.json()
        reply: bytes = await insert(body["input"]["message"].encode())
        return web.json_response({"id": int.from_bytes(reply, "little")})

    async def post_stream(request: web.Request) -> web.StreamResponse:
        count = int((await request.json())["count"])
        response = web.StreamResponse(headers=SSE_HEADERS)
        await response.prepare(request)
        seq = 0
        async for message in stream(count.to_bytes(4, "little")):
            seq += 1
            await response.write(f"id: {seq}\ndata: {message.hex()}\n\n".encode())
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_post("/insert", post_insert)
    app.router.add_post("/stream", post_stream)
    return app


async def serve(listen: str, database: str) -> None:
    db = await open_db(database)
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    server.add_generic_rpc_handlers((handler(db),))
    grpc_port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(f"baseline: gRPC on 127.0.0.1:{grpc_port}", flush=True)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}")
    runner = web.AppRunner(create_app(channel))
    await runner.setup()
    host, port = listen.rsplit(":", 1)
    await web.TCPSite(runner, host, int(port)).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"baseline-gateway: HTTP on {host}:{runner.addresses[0][1]}", flush=True)
    await stop.wait()
    await runner.cleanup()
    await channel.close(None)
    await server.stop(1.0)
    await db.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--listen", default="127.0.0.1:0", help="HTTP listen address")
    parser.add_argument("--database", required=True, help="SQLite file to insert into")
    args = parser.parse_args()
    asyncio.run(serve(args.listen, args.database))


if __name__ == "__main__":
    main()
