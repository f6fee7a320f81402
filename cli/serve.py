"""`agentrun serve`: the gRPC server and, unless --no-gateway, the HTTP gateway in front of it, in one
process, until SIGTERM/SIGINT. The gateway calls the server's services in process (the same
interceptors and handlers as over gRPC; --gateway-loopback: over loopback gRPC like any client)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable
from typing import Any

from cli import heap, tracing
from cli.errors import UsageError
from common import logs
from common.local_channel import LocalChannel
from gateway import settings as gateway_settings
from gateway.app import running_gateway
from gateway.families import all_families
from gateway.settings import GatewaySettings
from server import settings as server_settings
from server.agents.registry import AgentConfigError
from server.app import ListenError, running
from server.auth.keys import AuthConfigError
from server.settings import Settings
from server.store.dialect import DatabaseUrlError

log = logging.getLogger(__name__)
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def add_parser(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "serve",
        help="serve the gRPC API and the HTTP gateway (SQLite and the demo agents by default)",
        description="Serve the gRPC API and, in the same process, the HTTP gateway in front of it. "
        "Every flag can also be set by the environment variable named in its help.",
        usage="agentrun serve [options]",
    )
    parser.set_defaults(handler=command)
    server_settings.add_arguments(parser)
    gateway_settings.add_arguments(parser, flag_prefix="gateway-")
    parser.add_argument("--no-gateway", action="store_true", help="serve gRPC only")
    parser.add_argument(
        "--event-loop",
        choices=("asyncio", "uvloop"),
        default=os.environ.get("AGENTRUN_EVENT_LOOP", "asyncio"),
        help="the event loop: asyncio's own or uvloop (`pip install agentrun[uvloop]`); env "
        "AGENTRUN_EVENT_LOOP (default: asyncio)",
    )
    parser.add_argument(
        "--gateway-loopback",
        action="store_true",
        default=os.environ.get("AGENTRUN_GATEWAY_LOOPBACK", "").lower() in ("1", "true", "yes", "on"),
        help="the gateway calls the server over loopback gRPC, as a gateway of its own would; env "
        "AGENTRUN_GATEWAY_LOOPBACK=yes (default: in process, without the gRPC hop)",
    )


def command(args: argparse.Namespace) -> int:
    try:
        settings = server_settings.from_namespace(args)
        gateway = None if args.no_gateway else gateway_settings.from_namespace(args, flag_prefix="gateway-")
    except (TypeError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    for name, level in (
        ("--log-level", settings.log_level),
        ("--gateway-log-level", gateway and gateway.log_level),
    ):
        if level and level.upper() not in LOG_LEVELS:
            raise UsageError(f"{name}: {level!r} is not one of {', '.join(LOG_LEVELS)}")
    _check_free(settings.listen, "gRPC")
    if gateway is not None:
        _check_free(gateway.listen, "HTTP")
    try:
        logs.configure(settings.log_level, settings.log_format)
    except ValueError as exc:
        raise UsageError(f"--log-format: {exc}") from None
    flush_traces = tracing.configure(settings.otlp_endpoint)
    try:
        with asyncio.Runner(loop_factory=_loop(args.event_loop)) as runner:
            runner.run(serve(settings, gateway, loopback=args.gateway_loopback))
    except (AgentConfigError, AuthConfigError) as exc:  # the configuration files: exit 1, as ever
        print(f"agentrun: {exc}", file=sys.stderr)
        return 1
    except (DatabaseUrlError, ListenError) as exc:
        raise UsageError(str(exc)) from None
    finally:
        flush_traces()
    return 0


def _loop(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    if name != "uvloop":
        return None
    try:
        import uvloop
    except ImportError:
        raise UsageError("--event-loop uvloop: uvloop is not installed (agentrun[uvloop])") from None
    return uvloop.new_event_loop


def _check_free(listen: str, what: str) -> None:
    """Refuse a taken address before anything starts (the servers' own bind errors come later, with
    a half-started process and, from gRPC's core, a log line of its own)."""
    host, _, port = listen.rpartition(":")
    if not port.isdigit() or int(port) > 65535:
        raise UsageError(f"{listen!r} is not a host:port address ({what})")
    if int(port) == 0:
        return
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host.strip("[]") or "0.0.0.0", int(port)))
        except OSError as exc:
            raise UsageError(f"cannot listen on {listen} ({what}): {exc.strerror}") from None


async def serve(settings: Settings, gateway: GatewaySettings | None = None, loopback: bool = False) -> None:
    """Serve until SIGTERM/SIGINT. On the way out the gateway stops first (its streams end; clients
    re-attach elsewhere), then the server lets runs finish for its grace period. `loopback`: the
    gateway calls the server over loopback gRPC, as a gateway of its own would."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with running(settings) as server, contextlib.AsyncExitStack() as stack:
        host = settings.listen.rsplit(":", 1)[0]
        print(f"agentrun: gRPC on {host}:{server.port}", flush=True)
        if gateway is not None:
            local = dataclasses.replace(gateway, upstream=f"127.0.0.1:{server.port}")
            # In process unless asked otherwise: no loopback gRPC hop (see common/local_channel.py).
            channel = None if loopback or server.local is None else LocalChannel(server.local)
            try:
                http = await stack.enter_async_context(
                    running_gateway(local, all_families(), server.refresh_metrics, channel)
                )
            except OSError as exc:
                raise ListenError(f"cannot listen on {gateway.listen} (HTTP): {exc.strerror}") from None
            print(f"agentrun-gateway: HTTP on {http.host}:{http.port}", flush=True)
            print(f"  REST API      {http.url}/v1/agents", flush=True)
            print(f"  OpenAPI       {http.url}/openapi.json", flush=True)
            print(f"  API page      {http.url}/docs", flush=True)
            print(f"  metrics       {http.url}/metrics", flush=True)
        if server.metrics_port is not None:
            metrics_host = settings.metrics_listen.rpartition(":")[0]
            print(f"agentrun: metrics on http://{metrics_host}:{server.metrics_port}/metrics", flush=True)
        print("  stop with Ctrl-C (runs in progress get the shutdown grace to finish)", flush=True)
        heap.settle()  # streams at scale: see cli/heap.py
        await stop.wait()
        log.info("shutting down")
