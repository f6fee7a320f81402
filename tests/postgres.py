"""A throwaway PostgreSQL server for the tests: initdb in a temporary directory, started on a free
loopback port (as the `postgres` user when the tests run as root, which PostgreSQL refuses), one
fresh database per test. AGENTRUN_TEST_POSTGRES_URL points the tests at an existing server instead.
Without PostgreSQL the PostgreSQL cases fail, loudly: they are part of the suite."""

from __future__ import annotations

import asyncio
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import asyncpg

ENV = "AGENTRUN_TEST_POSTGRES_URL"


def binary(name: str) -> str:
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))), None)
    if found is None:
        raise RuntimeError(
            f"PostgreSQL's {name} is not installed (apt-get install postgresql) and {ENV} is unset"
        )
    return found


def _runuser() -> str:
    # An administrator's tool: often in sbin, which a plain user's PATH (or `env -i`) leaves out.
    for found in (shutil.which("runuser"), "/usr/sbin/runuser", "/sbin/runuser"):
        if found and os.path.exists(found):
            return found
    raise RuntimeError("runuser (util-linux) is needed to start PostgreSQL as root")


def _as_postgres(argv: list[str]) -> list[str]:
    return [_runuser(), "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Cluster:
    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="agentrun-pg-"))
        self.port = _free_port()

    def start(self) -> str:
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres")
        data = self.dir / "data"
        subprocess.run(
            _as_postgres([binary("initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "--no-sync"]),
            check=True,
            capture_output=True,
        )
        self._ctl("start")
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _ctl(self, action: str, *extra: str) -> None:
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        data, log = str(self.dir / "data"), str(self.dir / "log")
        argv = [binary("pg_ctl"), "-D", data, "-o", f"{options} -c max_connections=300", "-l", log, "-w"]
        subprocess.run(_as_postgres([*argv, *extra, action]), check=True, capture_output=True)

    def restart(self) -> None:
        """Stop (disconnecting every client) and start again."""
        self._ctl("restart", "-m", "fast")

    def stop(self) -> None:
        subprocess.run(
            _as_postgres([binary("pg_ctl"), "-D", str(self.dir / "data"), "-m", "immediate", "stop"]),
            capture_output=True,
        )
        shutil.rmtree(self.dir, ignore_errors=True)


def server() -> Iterator[str]:
    """The admin URL (postgresql://...) of a running server, for the whole test session."""
    existing = os.environ.get(ENV)
    if existing:
        yield existing
        return
    cluster = Cluster()
    try:
        yield cluster.start()
    finally:
        cluster.stop()


def _admin(admin_url: str, statement: str) -> None:
    """One statement on the admin database, from sync fixture code (in a thread with its own loop)."""

    async def run() -> None:
        conn = await asyncpg.connect(admin_url)
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, run()).result()


def fresh_database(admin_url: str) -> tuple[str, str]:
    """A new empty database: (its postgresql+asyncpg URL, its name)."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    _admin(admin_url, f'CREATE DATABASE "{name}"')
    base = admin_url.rsplit("/", 1)[0]
    return f"{base.replace('postgresql://', 'postgresql+asyncpg://', 1)}/{name}", name


def drop_database(admin_url: str, name: str) -> None:
    _admin(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
