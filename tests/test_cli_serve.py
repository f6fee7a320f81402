"""`agentrun` explains itself: help when run bare, a version, grouped `serve --help` with defaults,
and one clear line with exit code 2 for a bad flag, a bad database URL or a taken port."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest

AGENTRUN = [sys.executable, "-m", "cli"]


def agentrun(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*AGENTRUN, *args], capture_output=True, text=True, timeout=60)


def test_bare_agentrun_prints_help() -> None:
    done = agentrun()
    assert done.returncode == 0
    assert "usage: agentrun" in done.stdout and "serve" in done.stdout and "keys" in done.stdout


def test_version() -> None:
    done = agentrun("--version")
    assert done.returncode == 0 and done.stdout.startswith("agentrun ")


def test_serve_help_is_grouped_with_defaults() -> None:
    out = agentrun("serve", "--help").stdout
    for section in (
        "server:",
        "database:",
        "runs:",
        "webhooks:",
        "auth:",
        "fair use (per org):",
        "gateway (HTTP):",
    ):
        assert f"\n{section}\n" in out, section
    flat = " ".join(out.split())  # argparse wraps lines anywhere
    assert "default 127.0.0.1:50051" in flat and "default sqlite:///./agentrun.db" in flat
    assert "AGENTRUN_WORKERS" in flat and "usage: agentrun serve [options]" in flat


def one_line_error(done: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("agentrun: "), done.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_a_bad_log_level_is_one_line() -> None:
    one_line_error(agentrun("serve", "--log-level", "bogus"), "--log-level", "bogus")


def test_a_bad_database_url_is_one_line() -> None:
    args = ("serve", "--no-gateway", "--listen", "127.0.0.1:0", "--database-url")
    one_line_error(agentrun(*args, "foo://x"), "unsupported database URL")
    one_line_error(agentrun(*args, ":::"), "not a database URL")


@pytest.fixture
def taken() -> Iterator[str]:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        yield f"127.0.0.1:{held.getsockname()[1]}"


def test_a_taken_grpc_port_is_one_line(taken: str) -> None:
    one_line_error(agentrun("serve", "--no-gateway", "--listen", taken), taken, "gRPC", "in use")


def test_a_taken_http_port_is_one_line_before_anything_starts(taken: str) -> None:
    done = agentrun("serve", "--listen", "127.0.0.1:0", "--gateway-listen", taken)
    one_line_error(done, taken, "HTTP", "in use")
    assert "gRPC on" not in done.stdout


@pytest.mark.parametrize(
    ("env", "loop", "loopback"),
    [
        ({}, "asyncio", False),
        ({"AGENTRUN_EVENT_LOOP": "uvloop", "AGENTRUN_GATEWAY_LOOPBACK": "yes"}, "uvloop", True),
    ],
)
def test_the_event_loop_and_the_gateway_path_read_the_environment_too(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], loop: str, loopback: bool
) -> None:
    from cli.main import build_parser

    for name in ("AGENTRUN_EVENT_LOOP", "AGENTRUN_GATEWAY_LOOPBACK"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    args = build_parser(["serve"]).parse_args(["serve"])
    assert (args.event_loop, args.gateway_loopback) == (loop, loopback)
    assert build_parser(["serve"]).parse_args(["serve", "--event-loop", "asyncio"]).event_loop == "asyncio"
