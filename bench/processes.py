"""The servers under test as subprocesses: start one, wait for the addresses it prints when ready,
stop it with SIGTERM. Every server listens on 127.0.0.1:0 with a fresh SQLite file."""

from __future__ import annotations

import asyncio
import contextlib
import re
import sys
from collections.abc import AsyncIterator, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from bench.report import Results

BENCH_DIR = Path(__file__).resolve().parent
# `agentrun: gRPC on HOST:PORT`, `agentrun-gateway: HTTP on HOST:PORT`, `baseline: gRPC on ...`
READY = re.compile(r"(gRPC|HTTP) on (\S+):(\d+)")


@dataclass(frozen=True)
class Listening:
    """The addresses a server printed, "host:port" by protocol ("gRPC", "HTTP")."""

    addresses: dict[str, str]

    @property
    def grpc(self) -> str:
        return self.addresses["gRPC"]

    @property
    def http(self) -> str:
        return self.addresses["HTTP"]


class ServerFailed(RuntimeError):
    pass


@contextlib.asynccontextmanager
async def server_process(
    name: str, argv: Sequence[str], log_dir: Path, expect: Collection[str] = ("gRPC",)
) -> AsyncIterator[Listening]:
    """Start a server, wait until it has printed "<protocol> on HOST:PORT" for every protocol in
    `expect`, yield the addresses, SIGTERM it on exit."""
    log_path = log_dir / f"{name}.log"
    with log_path.open("wb") as log:
        proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE, stderr=log)
    drain: asyncio.Task[None] | None = None
    try:
        listening = await _ready(name, proc, log_path, set(expect))
        drain = asyncio.create_task(_drain(proc))  # nobody else reads its stdout from here on
        yield listening
    finally:
        await _stop(proc)
        if drain is not None:
            drain.cancel()


async def _ready(name: str, proc: asyncio.subprocess.Process, log_path: Path, expect: set[str]) -> Listening:
    assert proc.stdout is not None
    found: dict[str, str] = {}
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(60):
            async for line in proc.stdout:
                match = READY.search(line.decode(errors="replace"))
                if match:
                    found[match[1]] = f"{match[2]}:{match[3]}"
                if expect <= found.keys():
                    return Listening(found)
    raise ServerFailed(f"{name} did not start: {_tail(log_path)}")


def _tail(log_path: Path, lines: int = 5) -> str:
    return " | ".join(log_path.read_text(errors="replace").strip().splitlines()[-lines:]) or "no output"


async def _drain(proc: asyncio.subprocess.Process) -> None:
    assert proc.stdout is not None
    async for _ in proc.stdout:
        pass


async def _stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is not None:
        return
    proc.terminate()
    try:
        async with asyncio.timeout(20):
            await proc.wait()
    except TimeoutError:
        proc.kill()
        await proc.wait()


def agentrun_argv(database: Path | str, agents_file: Path | None, *, gateway: bool = False) -> list[str]:
    """`agentrun serve` on a free port; with `gateway`, its HTTP gateway on a free port too."""
    script = Path(sys.executable).with_name("agentrun")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "cli"]
    url = database if isinstance(database, str) else f"sqlite:///{database}"
    argv = [*command, "serve", "--listen", "127.0.0.1:0", "--database-url", url]
    argv += ["--log-level", "WARNING"]
    argv += (
        ["--gateway-listen", "127.0.0.1:0", "--gateway-log-level", "WARNING"] if gateway else ["--no-gateway"]
    )
    return argv + (["--agents-file", str(agents_file)] if agents_file else [])


def baseline_argv(database: Path) -> list[str]:
    return [sys.executable, str(BENCH_DIR / "baseline_server.py"), "--database", str(database)]


def baseline_gateway_argv(database: Path) -> list[str]:
    return [sys.executable, str(BENCH_DIR / "baseline_gateway.py"), "--database", str(database)]


@dataclass
class Agentrun:
    """Starts agentrun servers. If one cannot start with the agents file (say the pydantic-ai runtime
    does not load), it and every later one run with only that file's plain Python agents."""

    work: Path
    agents_file: Path | None
    results: Results
    plain: bool = False

    @contextlib.asynccontextmanager
    async def serve(self, name: str, database: Path, *, gateway: bool = False) -> AsyncIterator[Listening]:
        async with contextlib.AsyncExitStack() as stack:
            try:
                listening = await stack.enter_async_context(self._start(name, database, gateway))
            except ServerFailed as exc:
                if self.plain:
                    raise
                self._fall_back(str(exc))
                listening = await stack.enter_async_context(self._start(f"{name}-plain", database, gateway))
            yield listening

    def _start(
        self, name: str, database: Path, gateway: bool
    ) -> contextlib.AbstractAsyncContextManager[Listening]:
        argv = agentrun_argv(database, self.agents_file, gateway=gateway)
        return server_process(name, argv, self.work, ("gRPC", "HTTP") if gateway else ("gRPC",))

    def _fall_back(self, failure: str) -> None:
        source = self.agents_file or default_agents_file()
        self.agents_file = plain_agents_file(source, self.work / "plain_agents.yaml")
        self.plain = True
        self.results.notes.append(f"{failure}; retried with the plain Python agents of {source} only")


def default_agents_file() -> Path:
    from server.agents.registry import DEFAULT_AGENTS_FILE

    return DEFAULT_AGENTS_FILE


def plain_agents_file(source: Path, dest: Path) -> Path:
    config = yaml.safe_load(source.read_text())
    config["agents"] = [a for a in config["agents"] if a.get("runtime") == "python"]
    dest.write_text(yaml.safe_dump(config, sort_keys=False))
    return dest
