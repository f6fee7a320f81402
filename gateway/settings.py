"""Gateway settings: defaults, overridden by AGENTRUN_GATEWAY_* environment variables, overridden by
flags. Read once in __main__ (or by the server's CLI) and passed down."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from common.options import Option, OptionTable

ENV_PREFIX = "AGENTRUN_GATEWAY_"


@dataclass(frozen=True)
class GatewaySettings:
    listen: str = "127.0.0.1:8080"
    upstream: str = "127.0.0.1:50051"
    max_body_bytes: int = 1024 * 1024
    sse_heartbeat_s: float = 15.0
    ready_timeout_s: float = 2.0
    log_level: str = "INFO"
    # Families B and C name no agent in their paths: the agents their runs go to by default.
    family_b_agent: str = "echo"
    family_c_agent: str = "ai-echo"

    @property
    def host(self) -> str:
        return self.listen.rsplit(":", 1)[0]

    @property
    def port(self) -> int:
        return int(self.listen.rsplit(":", 1)[1])


OPTIONS = OptionTable(
    GatewaySettings,
    ENV_PREFIX,
    {
        "listen": Option("listen", str, "HTTP listen address host:port (port 0 picks a free one)"),
        "upstream": Option("upstream", str, "gRPC target of the agentrun server, host:port"),
        "max-body-bytes": Option("max_body_bytes", int, "largest accepted request body; larger is HTTP 413"),
        "sse-heartbeat": Option(
            "sse_heartbeat_s",
            float,
            "seconds of silence after which an SSE stream gets a heartbeat",
        ),
        "ready-timeout": Option(
            "ready_timeout_s", float, "seconds /ready waits for the upstream health check"
        ),
        "log-level": Option("log_level", str, "DEBUG, INFO, WARNING, ERROR"),
        "family-b-agent": Option("family_b_agent", str, "agent for family B jobs that name no recipe_name"),
        "family-c-agent": Option(
            "family_c_agent", str, "agent for family C runs (model/provider override its model)"
        ),
    },
    {"": "gateway (HTTP)"},
)


def add_arguments(parser: argparse.ArgumentParser, flag_prefix: str = "") -> None:
    """Adds the gateway flags; `flag_prefix` (e.g. "gateway-") keeps them apart from the server's
    flags when one command serves both."""
    OPTIONS.add(parser, flag_prefix)


def load(argv: Sequence[str] = (), environ: Mapping[str, str] = os.environ) -> GatewaySettings:
    parser = argparse.ArgumentParser(prog="python -m gateway")
    add_arguments(parser)
    return from_namespace(parser.parse_args(list(argv)), environ)


def from_namespace(
    args: argparse.Namespace, environ: Mapping[str, str] = os.environ, flag_prefix: str = ""
) -> GatewaySettings:
    settings: GatewaySettings = OPTIONS.build(OPTIONS.read(args, environ, flag_prefix))
    return settings
