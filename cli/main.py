"""The `agentrun` command line: `agentrun serve` runs the service, `agentrun keys create` makes an API
key, and the client commands (`run`, `stream`, `follow`, `get`, `list`, `approve`, `reject`, `cancel`,
`events`, `agents`) talk to a running server. Bare `agentrun` prints help; a usage problem is one
line on stderr and exit code 2."""

from __future__ import annotations

import argparse
import importlib
import sys
from importlib import metadata

from cli import client_commands
from cli.errors import UsageError

# `serve` and `keys` load the server (and pydantic-ai, SQLAlchemy …): only when they are the command,
# so the client commands start in a fraction of a second.
SERVER_COMMANDS = {
    "serve": "serve the gRPC API and the HTTP gateway (SQLite and the demo agents by default)",
    "keys": "create API keys for the keys file",
}


def version() -> str:
    try:
        return metadata.version("agentrun")
    except metadata.PackageNotFoundError:  # run from a checkout without an install
        return "unknown"


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agentrun",
        description="Run AI agents durably over gRPC, with their JSON/SSE APIs on an HTTP gateway.",
    )
    parser.add_argument("--version", action="version", version=f"agentrun {version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    wanted = next((a for a in (sys.argv[1:] if argv is None else argv) if not a.startswith("-")), None)
    for name, summary in SERVER_COMMANDS.items():
        if name == wanted:
            module = importlib.import_module(f"cli.{name}")
            module.add_parser(commands)
        else:
            commands.add_parser(name, help=summary)
    client_commands.add_parsers(commands)
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return
    try:
        code = args.handler(args)
    except UsageError as exc:
        print(f"agentrun: {exc}", file=sys.stderr)
        sys.exit(2)
    sys.exit(code)


if __name__ == "__main__":
    main()
