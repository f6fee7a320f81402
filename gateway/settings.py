"""Gateway settings: defaults, overridden by AGENTRUN_GATEWAY_* environment variables, overridden by
flags. Read once in __main__ (or by the server's CLI) and passed down."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from common.options import Option, OptionTable

ENV_PREFIX = "AGENTRUN_GATEWAY_"
_YES, _NO = ("1", "true", "yes", "on"), ("0", "false", "no", "off", "")


class YesNo(int):
    """A switch option: yes/no, true/false, on/off or 1/0 (a bool cannot be subclassed, and
    bool("no") is True, so the option table needs a type of its own)."""

    def __new__(cls, value: str | int = 0) -> YesNo:
        if isinstance(value, int):
            return super().__new__(cls, bool(value))
        text = value.strip().lower()
        if text not in _YES + _NO:
            raise ValueError(f"not yes or no: {value!r}")
        return super().__new__(cls, text in _YES)

    def __format__(self, spec: str) -> str:
        return "yes" if self else "no"


NO = YesNo(0)  # immutable, so one instance serves as every default


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
    # Family B documents a heartbeat after 5 s of silence on its job stream.
    family_b_heartbeat_s: float = 5.0
    # Family B's `agent_file`: only files under this directory ("": agent_file is refused).
    family_b_agent_root: str = ""
    # Family B's inline `agent_yaml`: off, since it picks agents and their overrides freely.
    family_b_inline_agents: YesNo = NO
    # Family A's SSE query tokens (`?token=`): seconds a token stays usable.
    sse_token_ttl_s: float = 60.0

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
        "family-b-heartbeat": Option(
            "family_b_heartbeat_s",
            float,
            "seconds of silence after which a family B job stream gets a heartbeat",
        ),
        "family-b-agent-root": Option(
            "family_b_agent_root",
            str,
            "directory family B's agent_file must lie under; unset: agent_file is refused",
        ),
        "family-b-inline-agents": Option(
            "family_b_inline_agents", YesNo, "accept family B's inline agent_yaml (yes/no)"
        ),
        "sse-token-ttl": Option(
            "sse_token_ttl_s", float, "seconds a family A SSE query token (?token=) stays usable"
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
