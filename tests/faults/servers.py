"""The processes under fault: agentrun servers killed with SIGKILL and restarted on the same database
and port, and the database they share: a SQLite file, or a throwaway PostgreSQL (started the way
tests/postgres.py starts it) that can be stopped and started again, or frozen with SIGSTOP."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import re
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from agentrun.v1 import run_service_pb2_grpc

from tests import postgres

ROOT = Path(__file__).resolve().parents[2]
READY = re.compile(r"gRPC on (\S+):(\d+)")
START_TIMEOUT_S = 60.0
# grpc's own reconnection backoff (1 s, growing) would leave a restarted server unused for long.
CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 500),
]


class HarnessError(RuntimeError):
    """The harness itself could not go on (a server did not start, the database did not come back):
    not a finding about the stored history."""


@dataclass(frozen=True)
class Timing:
    """The engine's clocks, short so that runs of a killed server end (WORKER_LOST) within seconds."""

    lease_s: float = 1.0
    sweep_s: float = 0.3
    poll_s: float = 0.2

    def flags(self) -> list[str]:
        values = {"--lease": self.lease_s, "--sweep-interval": self.sweep_s, "--poll-interval": self.poll_s}
        return [item for flag, value in values.items() for item in (flag, f"{value:g}")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Replica:
    """One `agentrun serve` process slot: started, killed and started again on the same database
    (and, when it is still free, the same port). `stub` is None while the process is down."""

    name: str
    database_url: str
    log_path: Path
    timing: Timing
    port: int = field(default_factory=free_port)
    proc: asyncio.subprocess.Process | None = None
    stub: Any = None
    starts: int = 0
    _channels: list[grpc.aio.Channel] = field(default_factory=list)
    _drains: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def up(self) -> bool:
        return self.stub is not None and self.proc is not None and self.proc.returncode is None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> None:
        try:
            await self._spawn()
        except HarnessError:
            self.port = free_port()  # taken meanwhile by another process: take another
            await self._spawn()

    async def _spawn(self) -> None:
        argv = [sys.executable, "-m", "cli", "serve", "--no-gateway", "--listen", self.target]
        argv += ["--database-url", self.database_url, *self.timing.flags()]
        argv += ["--log-level", "WARNING"]
        with self.log_path.open("ab") as log:
            log.write(f"---- {self.name} start #{self.starts + 1}\n".encode())
            log.flush()
            proc = await asyncio.create_subprocess_exec(
                *argv, cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=log
            )
        try:
            await self._ready(proc)
        except BaseException:
            await _reap(proc)
            raise
        self.proc = proc
        self.starts += 1
        # Old channels are not closed: calls still in flight on them fail as a client's would.
        channel = grpc.aio.insecure_channel(self.target, options=CHANNEL_OPTIONS)
        self._channels.append(channel)
        self.stub = run_service_pb2_grpc.RunServiceStub(channel)
        self._drains.append(asyncio.create_task(_drain(proc)))

    async def _ready(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(START_TIMEOUT_S):
                async for line in proc.stdout:
                    if READY.search(line.decode(errors="replace")):
                        return
        tail = " | ".join(self.log_path.read_text(errors="replace").strip().splitlines()[-5:])
        raise HarnessError(f"{self.name} did not start: {tail or 'no output'}")

    async def kill(self) -> None:
        """SIGKILL: no shutdown code runs, leases are left to expire."""
        proc, self.proc, self.stub = self.proc, None, None
        if proc is not None:
            await _reap(proc)

    async def close(self) -> None:
        """Kill the process (the history is checked by now; a graceful stop would only cost time)."""
        await self.kill()
        for task in self._drains:
            task.cancel()
        for channel in self._channels:
            await channel.close(None)
        self._channels.clear()


async def _reap(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.kill()
    await proc.wait()


async def _drain(proc: asyncio.subprocess.Process) -> None:
    assert proc.stdout is not None
    async for _ in proc.stdout:
        pass


@dataclass
class Pool:
    """The replicas of one scenario. Clients pick one that is up, as a load balancer would."""

    replicas: list[Replica]

    def live(self) -> list[Replica]:
        return [r for r in self.replicas if r.up]

    async def pick(self, rng: random.Random, timeout: float) -> Replica:
        """A random replica that is up, waiting (at most `timeout` s) while none is."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not (live := self.live()):
            if loop.time() >= deadline:
                raise TimeoutError(f"no replica came up within {timeout:g}s")
            await asyncio.sleep(0.05)
        return rng.choice(live)

    async def start_all(self) -> None:
        """Start every replica that is down, at once; all have started (or failed) on return."""
        starts = [r.start() for r in self.replicas if not r.up]
        results = await asyncio.gather(*starts, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def close(self) -> None:
        await asyncio.gather(*(r.close() for r in self.replicas), return_exceptions=True)


class Cluster(postgres.Cluster):
    """tests/postgres.py's throwaway server, plus the faults: stop/start and freeze/thaw."""

    def stop_server(self) -> None:
        self._ctl("stop", "-m", "fast")

    def start_server(self) -> None:
        self._ctl("start")

    def processes(self) -> list[int]:
        """The postmaster and its children (backends, checkpointer, WAL writer, ...)."""
        pid_file = self.dir / "data" / "postmaster.pid"
        postmaster = int(pid_file.read_text().split()[0])
        children = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                # the command name may hold spaces or parentheses: parse after the last ')'
                if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == postmaster:
                    children.append(int(stat.parent.name))
        return [postmaster, *children]

    @staticmethod
    def signal_all(pids: list[int], sig: signal.Signals) -> None:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)


@dataclass
class Database:
    """The database a scenario's replicas share. `cluster` is None for SQLite (no database faults)."""

    url: str
    cluster: Cluster | None = None
    _frozen: list[int] = field(default_factory=list)

    async def restart(self, downtime_s: float) -> None:
        """Stop PostgreSQL (every connection drops), leave it down `downtime_s`, start it again."""
        assert self.cluster is not None
        try:
            await asyncio.to_thread(self.cluster.stop_server)
            try:
                await asyncio.sleep(downtime_s)  # the fault's length, not a synchronisation
            finally:
                await asyncio.to_thread(self.cluster.start_server)
        except subprocess.CalledProcessError as exc:
            raise HarnessError(f"pg_ctl {exc.cmd[-1]} failed: {exc.stderr!r}") from exc

    async def pause(self, seconds: float) -> None:
        """Freeze every PostgreSQL process (SIGSTOP) for `seconds`: connections stay open, queries
        hang, new connections wait in the listen backlog. Then SIGCONT."""
        assert self.cluster is not None
        self._frozen = self.cluster.processes()
        Cluster.signal_all(self._frozen, signal.SIGSTOP)
        try:
            await asyncio.sleep(seconds)  # the fault's length, not a synchronisation
        finally:
            self.thaw()

    def thaw(self) -> None:
        frozen, self._frozen = self._frozen, []
        Cluster.signal_all(frozen, signal.SIGCONT)


@contextlib.asynccontextmanager
async def postgres_cluster() -> AsyncIterator[tuple[Cluster, str]]:
    """A throwaway PostgreSQL server for the PostgreSQL scenarios, and its admin URL. Never left
    frozen: a stopped postmaster would not stop."""
    cluster = Cluster()
    try:
        admin = await asyncio.to_thread(cluster.start)
        yield cluster, admin
    finally:
        with contextlib.suppress(OSError, ValueError, IndexError):
            Cluster.signal_all(cluster.processes(), signal.SIGCONT)
        await asyncio.to_thread(cluster.stop)
