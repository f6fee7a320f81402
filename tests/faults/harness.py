"""One fault run: each scenario (SQLite with one server; PostgreSQL with one, then two replicas)
starts its servers on a fresh database, drives submissions and streams while the injector strikes,
brings every server back up, lets the leases expire and the sweeps end what the faults left
behind, then checks the stored history and the streams."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from tests import postgres
from tests.faults import checker
from tests.faults.inject import Injector
from tests.faults.report import Figures, Report
from tests.faults.servers import Cluster, Database, HarnessError, Pool, Replica, Timing, postgres_cluster
from tests.faults.traffic import Traffic

log = logging.getLogger(__name__)
QUIET_PROBE_S = 5.0  # a 3-token run streamed on a quiet system: well under a second when nothing is lost


@dataclass(frozen=True)
class Scenario:
    name: str
    postgres: bool
    replicas: int


SCENARIOS = {
    s.name: s
    for s in (
        Scenario("sqlite", postgres=False, replicas=1),
        Scenario("pg1", postgres=True, replicas=1),
        Scenario("pg2", postgres=True, replicas=2),
    )
}


@dataclass(frozen=True)
class Config:
    seed: int
    seconds: float = 60.0  # of faults, in all: split evenly between the scenarios
    scenarios: tuple[str, ...] = tuple(SCENARIOS)
    quick: bool = False
    submitters: int = 3
    settle_s: float = 20.0  # how long after the faults every run must be at rest
    timing: Timing = field(default_factory=Timing)
    work: Path | None = None  # server logs and SQLite files; a temporary directory when None

    @classmethod
    def quick_run(cls, seed: int, **overrides: object) -> Config:
        """The CI form: a few seconds of faults per scenario, fewer clients."""
        settings: dict[str, object] = {"seconds": 9.0, "quick": True, "submitters": 2, "settle_s": 15.0}
        return cls(seed=seed, **(settings | overrides))  # type: ignore[arg-type]


def new_seed() -> int:
    return random.SystemRandom().randrange(1, 2**31)


async def run(config: Config) -> Report:
    report = Report(config.seed, config.seconds, config.quick)
    unknown = set(config.scenarios) - SCENARIOS.keys()
    if unknown:
        raise ValueError(f"unknown scenarios {sorted(unknown)}; known: {', '.join(SCENARIOS)}")
    seconds = config.seconds / max(len(config.scenarios), 1)
    with contextlib.ExitStack() as files:
        work = config.work or Path(files.enter_context(tempfile.TemporaryDirectory(prefix="agentrun-fault-")))
        files.enter_context(_journal(work / "harness.log"))
        async with contextlib.AsyncExitStack() as stack:
            cluster: tuple[Cluster, str] | None = None
            for name in config.scenarios:
                scenario = SCENARIOS[name]
                if scenario.postgres and cluster is None:
                    cluster = await stack.enter_async_context(postgres_cluster())
                database = await _database(scenario, work, cluster)
                report.scenarios.append(await run_scenario(scenario, config, seconds, work, database))
    return report


@contextlib.contextmanager
def _journal(path: Path) -> Iterator[None]:
    """What the harness did and when (faults, refusals, broken streams), beside the servers' logs."""
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s"))
    package = logging.getLogger("tests.faults")
    level = package.level
    package.addHandler(handler)
    package.setLevel(logging.INFO)
    try:
        yield
    finally:
        package.removeHandler(handler)
        package.setLevel(level)
        handler.close()


async def _database(scenario: Scenario, work: Path, cluster: tuple[Cluster, str] | None) -> Database:
    if not scenario.postgres:
        return Database(f"sqlite:///{work / f'{scenario.name}.db'}")
    assert cluster is not None
    url, _ = await asyncio.to_thread(postgres.fresh_database, cluster[1])
    return Database(url, cluster[0])


async def run_scenario(
    scenario: Scenario, config: Config, seconds: float, work: Path, database: Database
) -> Figures:
    figures = Figures(scenario.name, scenario.replicas, seconds)
    loop = asyncio.get_running_loop()
    started = loop.time()
    replicas = [
        Replica(f"{scenario.name}-{i}", database.url, work / f"{scenario.name}-{i}.log", config.timing)
        for i in range(scenario.replicas)
    ]
    pool = Pool(replicas)
    log.info("scenario %s on %s", scenario.name, database.url)
    try:
        await pool.start_all()
        await _chaos_and_check(scenario, config, seconds, pool, database, figures)
    except HarnessError as exc:
        figures.errors.append(str(exc))
    finally:
        database.thaw()
        await pool.close()
        figures.elapsed_s = loop.time() - started
    return figures


async def _chaos_and_check(
    scenario: Scenario, config: Config, seconds: float, pool: Pool, database: Database, figures: Figures
) -> None:
    traffic = Traffic(pool, figures, f"{config.seed}:{scenario.name}")
    ended = await _chaos(scenario, config, seconds, pool, database, traffic)
    try:
        await _check(scenario, config, ended, pool, traffic)
    except grpc.RpcError as exc:
        raise HarnessError(f"reading the history back failed: {exc.code().name}: {exc.details()}") from exc


async def _chaos(
    scenario: Scenario, config: Config, seconds: float, pool: Pool, database: Database, traffic: Traffic
) -> float:
    """Load and faults together until the injector is done; when that was (event-loop time)."""
    loop = asyncio.get_running_loop()
    rng = random.Random(f"{config.seed}:{scenario.name}:faults")
    injector = Injector(pool, database, traffic, traffic.figures, rng, until=loop.time() + seconds)
    if config.quick:
        injector.gaps, injector.kills_per_round = (0.2, 0.8), 1
    try:
        async with asyncio.TaskGroup() as group:
            for i in range(config.submitters):
                group.create_task(traffic.submitter(f"submitter{i}"))
            try:
                await injector.run()
            finally:
                traffic.finish(loop.time() + config.settle_s)  # the load lasts as long as the faults
    except* HarnessError as errors:
        traffic.errors += [str(e) for e in errors.exceptions]
    log.info("faults over")
    return loop.time()


async def _check(scenario: Scenario, config: Config, ended: float, pool: Pool, traffic: Traffic) -> None:
    """Every server up again, every follower done, every run at rest: probe, then check."""
    loop = asyncio.get_running_loop()
    figures = traffic.figures
    await pool.start_all()
    await traffic.drain()
    stub = pool.live()[0].stub
    await checker.settle(stub, max(ended + config.settle_s - loop.time(), 0.0))
    figures.settle_s = loop.time() - ended
    log.info("at rest after %.1fs; quiet probes", figures.settle_s)
    for submit_on in pool.replicas:
        for follow_on in pool.replicas:
            await traffic.quiet_probe(submit_on, follow_on, QUIET_PROBE_S)
    figures.errors += traffic.errors
    figures.violations = await checker.check(
        stub, scenario.name, traffic.acknowledged, traffic.observed.values(), figures
    )
    log.info("checked: %d runs, %d violations", figures.stored_runs, len(figures.violations))
