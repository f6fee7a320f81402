"""Server settings: defaults, overridden by AGENTRUN_* environment variables, overridden by flags.
Read once in __main__ and passed down."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from common.options import Option, OptionTable
from server.agents.registry import DEFAULT_AGENTS_FILE
from server.auth.limits import LimitSettings
from server.auth.settings import AUTO, AuthSettings
from server.engine.engine import EngineSettings
from server.engine.retention import Duration, OrgAges, RetentionSettings
from server.webhooks.deliverer import WebhookSettings

ENV_PREFIX = "AGENTRUN_"


@dataclass(frozen=True)
class Settings:
    listen: str = "127.0.0.1:50051"
    database_url: str = "sqlite:///./agentrun.db"
    agents_file: Path = DEFAULT_AGENTS_FILE
    shutdown_grace_s: float = 10.0
    log_level: str = "INFO"
    log_format: str = "text"  # or "json": one JSON object per line
    metrics_listen: str = ""  # host:port of a Prometheus /metrics endpoint; empty: none
    otlp_endpoint: str = ""  # OTLP/HTTP traces endpoint; empty: tracing off
    engine: EngineSettings = field(default_factory=EngineSettings)
    webhooks: WebhookSettings = field(default_factory=WebhookSettings)
    # Off unless set (embedding, tests); the command line defaults to "auto" (see from_namespace).
    auth: AuthSettings = field(default_factory=AuthSettings)
    limits: LimitSettings = field(default_factory=LimitSettings)
    retention: RetentionSettings = field(default_factory=RetentionSettings)


GROUPS = {
    "": "server",
    "database_url": "database",
    "engine.": "runs",
    "webhooks.": "webhooks",
    "auth.": "auth",
    "limits.": "fair use (per org)",
    "retention.": "retention",
}

OPTIONS = OptionTable(
    Settings,
    ENV_PREFIX,
    {
        "listen": Option("listen", str, "gRPC listen address host:port (port 0 picks a free one)"),
        "database-url": Option(
            "database_url",
            str,
            "SQLAlchemy URL: sqlite:///path.db, sqlite:///:memory:, postgresql+asyncpg://...",
        ),
        "agents-file": Option("agents_file", Path, "agents.yaml to load"),
        "shutdown-grace": Option("shutdown_grace_s", float, "seconds running runs get to finish on SIGTERM"),
        "log-level": Option("log_level", str, "DEBUG, INFO, WARNING, ERROR"),
        "log-format": Option(
            "log_format",
            str,
            "text, or json: one object per line, with run_id, org_id, agent_id and "
            "attempt on every line of a run",
        ),
        "otlp-endpoint": Option(
            "otlp_endpoint",
            str,
            "send traces to this OTLP/HTTP endpoint (e.g. http://collector:4318/v1/traces); needs "
            "the otel extra; unset: tracing off",
        ),
        "metrics-listen": Option(
            "metrics_listen",
            str,
            "host:port to serve Prometheus metrics on (GET /metrics); unset: none (the gateway "
            "serves them at /metrics anyway)",
        ),
        "workers": Option("engine.workers", int, "runs executed at once by this process"),
        "lease": Option("engine.lease_s", float, "seconds a run's lease lasts without renewal"),
        "sweep-interval": Option(
            "engine.sweep_interval_s",
            float,
            "seconds between checks for expired leases and deadlines",
        ),
        "poll-interval": Option(
            "engine.poll_interval_s",
            float,
            "seconds between re-reads of the store while notifications from other replicas are "
            "down (PostgreSQL) or queued runs wait for their session or quota",
        ),
        "recheck-interval": Option(
            "engine.recheck_s",
            float,
            "while notifications work, seconds an idle stream, waiter or queue goes without re-reading "
            "the store (a safety net; nothing is missed without it)",
        ),
        "max-attempts": Option(
            "engine.max_attempts",
            int,
            "attempts a run gets in all when its worker is lost and no tool that may have acted was "
            "called (1: never run again; then WORKER_LOST)",
        ),
        "default-timeout": Option(
            "engine.default_timeout_s", float, "run timeout in seconds when a request sets none"
        ),
        "cancel-grace": Option(
            "engine.cancel_grace_s",
            float,
            "seconds a cancelled agent gets to stop before it is abandoned",
        ),
        "webhook-secret": Option(
            "webhooks.secret",
            str,
            "Standard Webhooks signing secret (whsec_...); unset: unsigned",
        ),
        "webhook-allow": Option(
            "webhooks.allow",
            str,
            "comma-separated hosts, IPs or networks webhooks may target although not public",
        ),
        "webhook-attempts": Option(
            "webhooks.max_attempts", int, "attempts per webhook before it is marked failed"
        ),
        "webhook-max-age": Option(
            "webhooks.max_age_s",
            float,
            "seconds after the run's end to keep retrying a webhook",
        ),
        "webhook-timeout": Option("webhooks.timeout_s", float, "seconds one webhook attempt may take"),
        "webhook-concurrency": Option("webhooks.concurrency", int, "webhook attempts in flight at once"),
        "webhook-backoff": Option(
            "webhooks.backoff_s", float, "seconds before the first retry; doubles each time"
        ),
        "auth": Option(
            "auth.mode",
            str,
            "on, off or auto (default): on when keys or a JWT key are configured, else off, which is "
            "allowed only on a loopback --listen",
        ),
        "keys-file": Option(
            "auth.keys_file",
            Path,
            "YAML file of API key hashes (`agentrun keys create` makes entries)",
        ),
        "api-keys": Option(
            "auth.api_keys",
            str,
            "API keys as org:user:role:sha256:<hex> entries, comma-separated (prefer the env variable)",
        ),
        "jwt-secret": Option("auth.jwt_secret", str, "HS256 secret of JWT bearer tokens"),
        "jwt-public-key": Option(
            "auth.jwt_public_key", str, "RS256 public key of JWT bearer tokens: PEM text or file"
        ),
        "jwt-issuer": Option("auth.jwt_issuer", str, "required `iss` of JWTs"),
        "jwt-audience": Option("auth.jwt_audience", str, "required `aud` of JWTs"),
        "jwt-org-claim": Option("auth.jwt_org_claim", str, "JWT claim holding the org (tenant)"),
        "jwt-user-claim": Option("auth.jwt_user_claim", str, "JWT claim holding the user id"),
        "jwt-role-claim": Option(
            "auth.jwt_role_claim", str, "JWT claim holding the role: admin, user or reader"
        ),
        "jwt-default-role": Option("auth.jwt_default_role", str, "role of a JWT without a role claim"),
        "max-running-per-org": Option(
            "limits.max_running", int, "runs of one org running at once; 0: no limit"
        ),
        "max-queued-per-org": Option("limits.max_queued", int, "runs of one org queued at once; 0: no limit"),
        "submit-rate": Option("limits.submit_rate", float, "submissions per second per org; 0: no limit"),
        "submit-burst": Option(
            "limits.submit_burst", int, "submissions at once per org above the rate; 0: the rate"
        ),
        "retention": Option(
            "retention.max_age_s",
            Duration,
            "delete finished runs (with their events, webhook deliveries and emptied sessions) this "
            "long after they ended: seconds, or with a unit: 12h, 30d, 2w; 0: keep them forever",
        ),
        "retention-org": Option(
            "retention.orgs",
            OrgAges,
            "per-org ages instead of --retention, as org=age,... (org=0 keeps that org's runs forever)",
        ),
        "retention-interval": Option(
            "retention.interval_s", Duration, "time between purges (seconds, or 30m, 1h...)"
        ),
        "retention-batch": Option("retention.batch", int, "runs a purge deletes per transaction"),
    },
    GROUPS,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    OPTIONS.add(parser)


def load(argv: Sequence[str] = (), environ: Mapping[str, str] = os.environ) -> Settings:
    parser = argparse.ArgumentParser(prog="agentrun serve")
    add_arguments(parser)
    return from_namespace(parser.parse_args(list(argv)), environ)


def from_namespace(args: argparse.Namespace, environ: Mapping[str, str] = os.environ) -> Settings:
    values = OPTIONS.read(args, environ)
    # Not told: auth follows the configuration (on with keys or JWT; off only on loopback).
    values.setdefault("auth.mode", AUTO)
    settings: Settings = OPTIONS.build(values)
    return settings
