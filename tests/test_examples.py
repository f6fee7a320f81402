"""examples/ cannot rot: every example runs against one real `agentrun serve` process (gRPC and the
HTTP gateway, over a SQLite file) and must exit 0 and print what it is about. The shell examples need
bash and curl, the Node one Node.js 20+ and clients/ts/node_modules (installed by `npm ci` when
missing); without them these tests fail."""

from __future__ import annotations

import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

# The fixture that installs clients/ts/node_modules once (under a lock shared by xdist workers).
from tests.test_ts_client import node_modules  # noqa: F401

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
START_TIMEOUT_S = 20.0
EXAMPLE_TIMEOUT_S = 90.0
TERMINAL = ("COLUMNS", "LINES")
# What each curl example must show: a few fields of the answers it gets and the status codes it checks.
CURL_SHOWS = {
    "curl_rest.sh": (
        '"state":"RUN_STATE_COMPLETED"',
        "EVENT_TYPE_STOP",
        '"missingRunIds":["nope"]',
        '"state":"RUN_STATE_CANCELLED"',
        ": 404",
        '"state":"RUN_STATE_PAUSED"',
        "The email was sent.",
    ),
    "curl_family_a.sh": (
        '"content":"hello there"',
        "followUpSuggestions",
        '"status":"QUEUED"',
        '"status":"PAUSED"',
        "requiredAction",
        "The email was sent.",
        ": 204",
        '"status":"CANCELLED"',
    ),
    "curl_family_b.sh": (
        "202 Accepted",
        "Retry-After:",
        "409  ",
        "data: [DONE]",
        '"result": "t0 t1 t2',
        "204  -X DELETE",
        '"status": "cancelled"',
        '"status": "healthy"',
    ),
    "curl_family_c.sh": (
        '"result": "what is 2 + 3"',
        '"is_done": true',
        '"result": {"city": "a city"}',
        "422",
    ),
}


@dataclass
class Served:
    grpc: str  # HOST:PORT
    http: str  # http://HOST:PORT
    log: Path


def _addresses(proc: subprocess.Popen[str], log: Path) -> tuple[str, str]:
    """The gRPC and HTTP addresses from the first two lines `agentrun serve` prints, read by a thread
    so that a server that never prints them fails the test instead of hanging it."""
    assert proc.stdout is not None
    stdout, lines = proc.stdout, queue.Queue[str]()

    def pump() -> None:  # to the end: a pipe nobody reads would block the server
        for line in stdout:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    found: list[str] = []
    for pattern in (r"agentrun: gRPC on (\S+:\d+)", r"agentrun-gateway: HTTP on (\S+:\d+)"):
        try:
            line = lines.get(timeout=START_TIMEOUT_S)
        except queue.Empty:
            line = ""
        match = re.search(pattern, line)
        if not match:
            pytest.fail(f"agentrun serve did not start: {line!r}\n{log.read_text()}")
        found.append(match.group(1))
    return found[0], found[1]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """`agentrun serve` with its gateway, both on free ports."""
    tmp = tmp_path_factory.mktemp("examples")
    log = tmp / "server.log"
    args = [sys.executable, "-m", "cli", "serve", "--listen", "127.0.0.1:0"]
    args += ["--gateway-listen", "127.0.0.1:0", "--database-url", f"sqlite:///{tmp / 'a.db'}"]
    args += ["--log-level", "WARNING"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTRUN_")}  # no keys: auth off
    with log.open("w") as err:
        proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=err, text=True)
    try:
        grpc, http = _addresses(proc, log)
        yield Served(grpc=grpc, http=f"http://{http}", log=log)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"`{name}` is not on PATH: the examples need it", pytrace=False)
    return path


def run_example(served: Served, cwd: Path, *command: str) -> str:
    """Run one example (scripts as themselves: their #! line and executable bit count) in its own
    process group, so that a timeout ends curl and node too, with the venv's bin/ first on PATH
    (`agentrun`, `python3`); it must exit 0. Returns stdout and stderr together."""
    # Not the caller's server or key, nor its COLUMNS (the CLI's tables fit them, cutting ids).
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTRUN_") and k not in TERMINAL}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env |= {"AGENTRUN_SERVER": served.grpc, "AGENTRUN_HTTP": served.http}
    proc = subprocess.Popen(
        command,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=EXAMPLE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"{command} did not finish in {EXAMPLE_TIMEOUT_S:g} s:\n{out}\n{served.log.read_text()}")
    assert proc.returncode == 0, (
        f"{command} exited {proc.returncode}:\n{out}\nserver log:\n{served.log.read_text()}"
    )
    return out


def assert_shows(out: str, *expected: str) -> None:
    missing = [text for text in expected if text not in out]
    assert not missing, f"the output lacks {missing}:\n{out}"


def test_python_client(served: Served, tmp_path: Path) -> None:
    out = run_example(served, tmp_path, sys.executable, str(EXAMPLES / "python_client.py"))
    assert_shows(
        out,
        "echo: COMPLETED 'hello'",
        "tool calculator",
        "tool result 42",
        "content '42'",
        "approval: PAUSED, waiting for send_email",
        "approved: COMPLETED 'The email was sent.'",
    )
    listed = [line for line in out.splitlines() if re.match(r"\s+#\d+ ", line)]
    assert 3 <= len(listed) <= 5, out  # this file's three runs at least (other tests may add more)


def test_cli_session(served: Served, tmp_path: Path) -> None:
    out = run_example(served, tmp_path, str(EXAMPLES / "cli_session.sh"))
    assert_shows(out, "hello", "→ calculator", "← 42", "COMPLETED", "paused run: ", "The email was sent.")
    assert re.search(r"^ *#\s+ID\s+AGENT\s+STATE", out, re.MULTILINE), out  # the table of `list`


@pytest.mark.usefixtures("node_modules")
def test_node_client(served: Served, tmp_path: Path) -> None:
    out = run_example(served, tmp_path, _tool("node"), str(EXAMPLES / "node_client.mjs"))
    assert_shows(out, 'echo: COMPLETED "hello from node"', 'content "t4 "', "STOP", 'slow: "t0 t1 t2 t3 t4 "')


@pytest.mark.parametrize("script", sorted(CURL_SHOWS))
def test_curl_examples(served: Served, tmp_path: Path, script: str) -> None:
    _tool("curl")
    out = run_example(served, tmp_path, str(EXAMPLES / script))
    assert_shows(out, *CURL_SHOWS[script])


def test_every_example_is_tested_and_the_scripts_are_executable() -> None:
    tested = {"python_client.py", "cli_session.sh", "node_client.mjs", *CURL_SHOWS}
    assert {path.name for path in EXAMPLES.iterdir() if path.is_file()} == tested
    scripts = sorted(EXAMPLES.glob("*.sh"))
    assert all(os.access(script, os.X_OK) for script in scripts), scripts
