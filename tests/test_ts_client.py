"""The generated TypeScript client (clients/ts): its committed gen/ matches proto/, and its Node tests
pass against a real server process. Needs node (>= 20) and npm: without them these tests fail."""

from __future__ import annotations

import fcntl
import os
import re
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TS = ROOT / "clients" / "ts"
NODE_TIMEOUT_S = 45.0
START_TIMEOUT_S = 15.0


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(
            f"`{name}` is not on PATH: the TypeScript client tests need Node.js 20+ and npm "
            "(e.g. `apt-get install nodejs npm`)",
            pytrace=False,
        )
    return path


def _env() -> dict[str, str]:
    """The caller's environment with this interpreter's bin/ (python, buf) first on PATH."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["PYTHON"] = sys.executable
    beside = Path(sys.executable).with_name("buf")
    if beside.exists():
        env["BUF"] = str(beside)
    return env


def _installed() -> bool:
    # npm ci writes node_modules/.package-lock.json last; older than the lockfile means stale.
    hidden = TS / "node_modules" / ".package-lock.json"
    lock = TS / "package-lock.json"
    return hidden.exists() and hidden.stat().st_mtime >= lock.stat().st_mtime


@pytest.fixture
def node_modules() -> Path:
    """clients/ts/node_modules, installed with `npm ci` from the committed lockfile when missing;
    one xdist worker installs while the others wait on a lock."""
    node = _tool("node")
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=True).stdout
    major = re.match(r"v(\d+)\.", version.strip())
    assert major and int(major.group(1)) >= 20, f"the TypeScript client needs Node.js 20+, not {version!r}"
    npm = _tool("npm")
    lock_path = Path(tempfile.gettempdir()) / f"agentrun-npm-ci-{os.getuid()}.lock"
    with lock_path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _installed():
            result = subprocess.run(
                [npm, "ci", "--no-audit", "--no-fund"],
                cwd=TS,
                capture_output=True,
                text=True,
                timeout=600,
            )
            assert result.returncode == 0, f"npm ci failed:\n{result.stdout}\n{result.stderr}"
    return TS / "node_modules"


def _files(top: Path) -> dict[str, bytes]:
    return {str(p.relative_to(top)): p.read_bytes() for p in sorted(top.rglob("*")) if p.is_file()}


def test_ts_gen_is_up_to_date(node_modules: Path, tmp_path: Path) -> None:
    result = subprocess.run(
        [str(TS / "generate.sh"), str(tmp_path)],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=120,
    )
    assert result.returncode == 0, f"generate.sh failed:\n{result.stdout}\n{result.stderr}"
    committed, fresh = _files(TS / "gen"), _files(tmp_path / "gen")
    stale = sorted(name for name in committed.keys() | fresh.keys() if committed.get(name) != fresh.get(name))
    assert not stale, f"clients/ts/gen/ is stale, run `clients/ts/generate.sh`: {stale}"


class Server:
    """`agentrun serve` (gRPC and the HTTP gateway) as a subprocess on free ports, over a SQLite file."""

    def __init__(self, db: Path, log: Path) -> None:
        args = [sys.executable, "-m", "cli", "serve", "--listen", "127.0.0.1:0"]
        args += ["--gateway-listen", "127.0.0.1:0"]
        args += ["--database-url", f"sqlite:///{db}", "--log-level", "WARNING"]
        self.log = log
        with log.open("w") as err:
            self.p = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=err, text=True)
        self.address, self.http = self._read_addresses()

    def _read_addresses(self) -> tuple[str, str]:
        """The gRPC and HTTP addresses the server prints first (read from the descriptor, so no
        line waits in a buffer the selector cannot see)."""
        assert self.p.stdout is not None
        fd, text = self.p.stdout.fileno(), ""
        deadline = time.monotonic() + START_TIMEOUT_S
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while True:
                grpc = re.search(r"gRPC on (\S+:\d+)\n", text)
                http = re.search(r"HTTP on (\S+:\d+)\n", text)
                if grpc and http:
                    return grpc.group(1), f"http://{http.group(1)}"
                chunk = (
                    os.read(fd, 4096) if sel.select(timeout=max(0.0, deadline - time.monotonic())) else b""
                )
                if not chunk:
                    self.stop()
                    pytest.fail(f"the server did not start: {text!r}\n{self.log.read_text()}")
                text += chunk.decode()

    def stop(self) -> None:
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        if self.p.stdout is not None:
            self.p.stdout.close()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    started = Server(tmp_path / "a.db", tmp_path / "server.log")
    yield started
    started.stop()


def test_ts_client_against_a_real_server(node_modules: Path, server: Server) -> None:
    node = _tool("node")
    tests = sorted(str(p.relative_to(TS)) for p in (TS / "test").glob("*.test.mjs"))
    assert tests, "no clients/ts/test/*.test.mjs"
    env = {**_env(), "AGENTRUN_SERVER": server.address, "AGENTRUN_HTTP": server.http}
    began = time.monotonic()
    try:
        result = subprocess.run(
            [node, "--test", *tests], cwd=TS, capture_output=True, text=True, env=env, timeout=NODE_TIMEOUT_S
        )
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"").decode() if isinstance(exc.stdout, bytes) else exc.stdout or ""
        pytest.fail(f"node --test did not finish in {NODE_TIMEOUT_S:g} s:\n{out}\n{server.log.read_text()}")
    assert result.returncode == 0, (
        f"node --test failed (exit {result.returncode}) after {time.monotonic() - began:.1f} s:\n"
        f"{result.stdout}\n{result.stderr}\nserver log:\n{server.log.read_text()}"
    )
