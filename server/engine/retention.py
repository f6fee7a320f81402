"""Retention: the background task that deletes finished runs (with their events, webhook deliveries
and emptied sessions) once they are older than `--retention`, or an org's own `--retention-org` age.
It purges at startup and then every `--retention-interval`, in batches of `--retention-batch` runs,
each its own short transaction of the single writer, so other writes go on between batches. Off
unless an age is set. What a batch may delete, and how replicas take turns, is
server/store/retention.py's business; this module owns the schedule and the counters."""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from server import metrics, tasks
from server.store.contract import Purged, Store

log = logging.getLogger(__name__)
UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86_400.0, "w": 604_800.0}
_DURATION = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([smhdw]?)\s*", re.IGNORECASE)
MAX_BATCH = 10_000  # ids per statement stay well below SQLite's limit of bound parameters


def show(seconds: float) -> str:
    """A duration in the largest unit that divides it: 2592000 -> 30d."""
    for unit in ("w", "d", "h", "m"):
        if seconds >= UNITS[unit] and seconds % UNITS[unit] == 0:
            return f"{seconds / UNITS[unit]:g}{unit}"
    return f"{seconds:g}s"


class DurationError(argparse.ArgumentTypeError, ValueError):
    """Text that is not a duration. argparse shows its message after the flag's name; read from an
    environment variable it is a ValueError like any other bad setting."""


class Duration(float):
    """Seconds, written as a number of seconds or a number with a unit: 90, 90s, 15m, 12h, 30d, 2w."""

    def __new__(cls, value: str | float = 0.0) -> Duration:
        seconds = _seconds(value) if isinstance(value, str) else float(value)
        if not math.isfinite(seconds) or seconds < 0:
            raise DurationError(f"{value!r} is not a duration: it must be 0 or more")
        return super().__new__(cls, seconds)


def _seconds(text: str) -> float:
    found = _DURATION.fullmatch(text)
    if found is None:
        raise DurationError(
            f"{text!r} is not a duration: use seconds, or a number with s, m, h, d or w (e.g. 30d)"
        )
    return float(found[1]) * UNITS[found[2].lower()]


class OrgAges(tuple[tuple[str, float], ...]):
    """Per-org retention ages, written `org=age,org=age` (ages as for Duration; 0 keeps that org's
    runs forever)."""

    def __new__(cls, text: str = "") -> OrgAges:
        ages: dict[str, float] = {}
        for entry in filter(None, (part.strip() for part in text.split(","))):
            org, sep, age = entry.rpartition("=")
            if not sep or not org.strip():
                raise DurationError(f"{entry!r} is not org=age (e.g. acme=30d)")
            ages[org.strip()] = Duration(age)
        return super().__new__(cls, sorted(ages.items()))

    def __str__(self) -> str:
        return ",".join(f"{org}={show(age)}" for org, age in self) or "none"


@dataclass(frozen=True)
class RetentionSettings:
    max_age_s: float = 0.0  # finished runs older than this are deleted; 0 keeps them forever
    # Per-org ages instead of max_age_s; 0 keeps that org's runs forever.
    orgs: OrgAges = field(default_factory=OrgAges)
    interval_s: float = 3600.0  # between purges
    batch: int = 500  # runs deleted per transaction

    def __post_init__(self) -> None:
        if not 1 <= self.batch <= MAX_BATCH:
            raise ValueError(f"--retention-batch must be between 1 and {MAX_BATCH}, not {self.batch}")
        if not self.interval_s > 0:
            raise ValueError(f"--retention-interval must be more than 0, not {self.interval_s:g}")

    @property
    def enabled(self) -> bool:
        return self.max_age_s > 0 or any(age > 0 for _, age in self.orgs)

    def cutoffs(self, now: float) -> tuple[float | None, dict[str, float | None]]:
        """What the store's purge takes: the default cutoff and the per-org ones (None: keep)."""
        default = now - self.max_age_s if self.max_age_s > 0 else None
        return default, {org: now - age if age > 0 else None for org, age in self.orgs}

    def describe(self) -> str:
        ages = [show(self.max_age_s) if self.max_age_s > 0 else "forever"]
        ages += [f"{org}'s {show(age) if age > 0 else 'forever'}" for org, age in self.orgs]
        return f"finished runs kept {', '.join(ages)}; purged every {show(self.interval_s)}"


class Retention:
    """Purges on an interval while started. Counters (totals since this object was made) are for
    metrics: `deleted` rows of each kind, `passes`, `batches`, `skipped` (passes cut short because
    another replica was purging) and `failures`."""

    def __init__(self, settings: RetentionSettings, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self._clock = clock
        self.deleted = Purged()
        self.passes = 0
        self.batches = 0
        self.skipped = 0
        self.failures = 0
        self.last_pass_at: float | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self, store: Store) -> None:
        """Purge now and then every interval, if an age is set."""
        if self.settings.enabled and not self.running:
            log.info("retention: %s", self.settings.describe())
            self._task = asyncio.create_task(self._loop(store), name="retention")

    async def stop(self) -> None:
        """Stop between or inside a batch: a batch is one transaction, committed whole or not at all."""
        await tasks.stop(self._task)
        self._task = None

    async def purge(self, store: Store, now: float | None = None) -> Purged:
        """One pass: batches until one comes back short (nothing old is left) or another replica
        holds the purge lock; what this pass deleted."""
        before, orgs = self.settings.cutoffs(self._clock() if now is None else now)
        done = Purged()
        while True:
            batch = await store.purge(before, self.settings.batch, orgs)
            if batch is None:
                self.skipped += 1
                break
            self.batches += 1
            done.add(batch)
            self.deleted.add(batch)
            for kind in ("runs", "events", "deliveries", "sessions"):
                metrics.RETENTION_DELETED.labels(kind).inc(getattr(batch, kind))
            if batch.runs < self.settings.batch:
                break
        self.passes += 1
        self.last_pass_at = self._clock()
        return done

    async def _loop(self, store: Store) -> None:
        while True:
            try:
                done = await self.purge(store)
                if done.runs:
                    log.info(
                        "retention: deleted %d runs, %d events, %d deliveries, %d sessions",
                        done.runs,
                        done.events,
                        done.deliveries,
                        done.sessions,
                    )
            except Exception:  # the database may be down for a while; try again next time
                self.failures += 1
                log.exception("retention: purging failed")
            await asyncio.sleep(self.settings.interval_s)
