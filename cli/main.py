"""The `agentrun` command line: `agentrun serve [flags]` serves the gRPC API and, unless --no-gateway,
the HTTP gateway in front of it; `agentrun keys create` makes an API key (see --help)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from cli import keys as keys_cli
from cli.serve import serve as run_server
from gateway import settings as gateway_settings
from server import settings as settings_module
from server.agents.registry import AgentConfigError
from server.auth.keys import AuthConfigError


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="agentrun", description="Run AI agents durably over gRPC.")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser(
        "serve", help="serve the gRPC API and the HTTP gateway (SQLite and the demo agents by default)"
    )
    settings_module.add_arguments(serve)
    serve.add_argument("--no-gateway", action="store_true", help="serve gRPC only")
    gateway_settings.add_arguments(serve, flag_prefix="gateway-")
    keys_cli.add_arguments(commands.add_parser("keys", help="create API keys for the keys file"))
    args = parser.parse_args(argv)
    if args.command == "keys":
        keys_cli.run(args)
        return
    settings = settings_module.from_namespace(args)
    gateway = None if args.no_gateway else gateway_settings.from_namespace(args, flag_prefix="gateway-")
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        asyncio.run(run_server(settings, gateway))
    except (AgentConfigError, AuthConfigError) as exc:
        sys.exit(f"agentrun: {exc}")


if __name__ == "__main__":
    main()
