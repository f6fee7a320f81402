"""The `agentrun` command line. `agentrun serve` runs the service; `agentrun keys create` makes an API
key; bare `agentrun` prints help. A configuration problem is one line on stderr and exit code 2."""

from __future__ import annotations

import argparse
import sys
from importlib import metadata

from cli import keys, serve
from cli.errors import UsageError


def version() -> str:
    try:
        return metadata.version("agentrun")
    except metadata.PackageNotFoundError:  # run from a checkout without an install
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agentrun",
        description="Run AI agents durably over gRPC, with their JSON/SSE APIs on an HTTP gateway.",
    )
    parser.add_argument("--version", action="version", version=f"agentrun {version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    serve.add_parser(commands)
    keys.add_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
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
