"""The faults of one scenario, one at a time at random moments: a server killed with SIGKILL (and
started again on the same database), PostgreSQL stopped and started again, and PostgreSQL frozen
(SIGSTOP) just as a watched run writes its end. Every kind present happens at least once: the
faults come in rounds, each a shuffle of every kind, and the first round always completes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from agentrun.v1 import run_pb2
from agentrun.v1 import run_service_pb2 as pb

from tests.faults.report import Figures
from tests.faults.servers import Database, Pool
from tests.faults.traffic import Traffic

PAUSE_S = 0.6
WATCHED_TOKENS = 4
WATCHED_DELAY_MS = 150  # the database is frozen in the gap before the last token and the run's end
log = logging.getLogger(__name__)


@dataclass
class Injector:
    pool: Pool
    database: Database
    traffic: Traffic
    figures: Figures
    rng: random.Random
    until: float  # event-loop time after which no new round starts
    gaps: tuple[float, float] = (0.5, 2.0)  # seconds between faults
    kills_per_round: int = 2

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        first = True
        while first or loop.time() < self.until:
            for fault in self._round():
                gap = self.rng.uniform(*self.gaps)
                if not first and loop.time() + gap >= self.until:
                    return
                await asyncio.sleep(gap)  # when the next fault strikes: the schedule, not a synchronisation
                await fault()
            first = False

    def _round(self) -> list[Callable[[], Awaitable[None]]]:
        faults: list[Callable[[], Awaitable[None]]] = [self.kill]
        if self.database.cluster is not None:
            faults += [self.restart_database, self.pause_at_run_end]
            faults += [self.kill] * (self.kills_per_round - 1)
        self.rng.shuffle(faults)
        return faults

    async def kill(self) -> None:
        """SIGKILL a running replica; with others to take over, leave it down a moment (they sweep
        its runs), then start it again on the same database."""
        live = self.pool.live()
        if not live:
            return
        victim = self.rng.choice(live)
        log.info("kill -9 %s", victim.name)
        await victim.kill()
        self.figures.kills += 1
        if len(self.pool.replicas) > 1:
            await asyncio.sleep(self.rng.uniform(0.0, 1.5))  # how long it stays down: part of the fault
        await victim.start()
        log.info("%s up again", victim.name)
        self.figures.restarts += 1

    async def restart_database(self) -> None:
        downtime = self.rng.uniform(0.2, 1.0)
        log.info("PostgreSQL stopped for %.2fs", downtime)
        await self.database.restart(downtime)
        log.info("PostgreSQL up again")
        self.figures.db_restarts += 1

    async def pause_at_run_end(self) -> None:
        """Freeze PostgreSQL for PAUSE_S just before a watched run's last token and end are written:
        when the token before the last one reaches its stream."""
        near_end = asyncio.Event()
        tokens = 0

        def on_event(event: run_pb2.RunEvent) -> None:
            nonlocal tokens
            if event.type == run_pb2.EVENT_TYPE_CONTENT_DELTA:
                tokens += 1
                if tokens == WATCHED_TOKENS - 1:
                    near_end.set()

        message = f"tokens={WATCHED_TOKENS} delay_ms={WATCHED_DELAY_MS}"
        request = pb.RunRequest(agent_id="slow", input=run_pb2.RunInput(message=message))
        at_end = False
        watched = await self.traffic.stream(request, self.rng, on_event)
        if watched is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):
                    await near_end.wait()
                    at_end = True
        log.info("PostgreSQL frozen for %gs (watched run %s, at its end: %s)", PAUSE_S, watched, at_end)
        await self.database.pause(PAUSE_S)  # at a random moment when the watched run did not get there
        log.info("PostgreSQL thawed")
        self.figures.db_pauses += 1
        self.figures.pauses_at_run_end += at_end
