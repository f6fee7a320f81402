"""`python -m gateway [flags]`: serve the HTTP gateway in front of an agentrun gRPC server."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from gateway.app import serve_gateway
from gateway.families import all_families
from gateway.settings import GatewaySettings, load


async def _serve(settings: GatewaySettings) -> None:
    # Not web.run_app: it cannot print the port it bound for --listen host:0, and this way the
    # standalone gateway runs the same code path as `serve_gateway` inside the server's CLI.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await serve_gateway(settings, stop, all_families())


def main(argv: list[str] | None = None) -> None:
    settings = load(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(_serve(settings))


if __name__ == "__main__":
    main()
