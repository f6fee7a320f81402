"""Server settings: defaults, overridden by AGENTRUN_* environment variables, overridden by flags.
Read once in __main__ and passed down."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path

from server.agents.registry import DEFAULT_AGENTS_FILE
from server.engine.engine import EngineSettings


@dataclass(frozen=True)
class Settings:
    listen: str = "127.0.0.1:50051"
    database_url: str = "sqlite:///./agentrun.db"
    agents_file: Path = DEFAULT_AGENTS_FILE
    shutdown_grace_s: float = 10.0
    log_level: str = "INFO"
    engine: EngineSettings = field(default_factory=EngineSettings)


# flag / env suffix -> (settings attribute, type, help)
_OPTIONS: dict[str, tuple[str, type, str]] = {
    "listen": ("listen", str, "gRPC listen address host:port (port 0 picks a free one)"),
    "database-url": (
        "database_url",
        str,
        "SQLAlchemy URL: sqlite:///path.db, sqlite:///:memory:, postgresql://...",
    ),
    "agents-file": ("agents_file", Path, "agents.yaml to load"),
    "shutdown-grace": ("shutdown_grace_s", float, "seconds running runs get to finish on SIGTERM"),
    "log-level": ("log_level", str, "DEBUG, INFO, WARNING, ERROR"),
    "workers": ("workers", int, "runs executed at once by this process"),
    "lease": ("lease_s", float, "seconds a run's lease lasts without renewal"),
    "sweep-interval": ("sweep_interval_s", float, "seconds between checks for expired leases and deadlines"),
    "poll-interval": ("poll_interval_s", float, "seconds between queue polls for runs submitted elsewhere"),
    "default-timeout": ("default_timeout_s", float, "run timeout in seconds when a request sets none"),
    "cancel-grace": (
        "cancel_grace_s",
        float,
        "seconds a cancelled agent gets to stop before it is abandoned",
    ),
}
_ENGINE_FIELDS = {f.name for f in fields(EngineSettings)}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    for flag, (_, kind, help_text) in _OPTIONS.items():
        env = "AGENTRUN_" + flag.upper().replace("-", "_")
        parser.add_argument(f"--{flag}", type=kind, default=None, help=f"{help_text} [env {env}]")


def load(argv: Sequence[str] = (), environ: Mapping[str, str] = os.environ) -> Settings:
    parser = argparse.ArgumentParser(prog="agentrun serve")
    add_arguments(parser)
    return from_namespace(parser.parse_args(list(argv)), environ)


def from_namespace(args: argparse.Namespace, environ: Mapping[str, str] = os.environ) -> Settings:
    top: dict[str, object] = {}
    engine: dict[str, object] = {}
    for flag, (attr, kind, _) in _OPTIONS.items():
        value = getattr(args, flag.replace("-", "_"), None)
        env = environ.get("AGENTRUN_" + flag.upper().replace("-", "_"))
        if value is None and env is not None:
            value = kind(env)
        if value is not None:
            (engine if attr in _ENGINE_FIELDS else top)[attr] = value
    return Settings(**top, engine=EngineSettings(**engine))  # type: ignore[arg-type]
