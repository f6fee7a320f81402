"""Fair use between tenants: the same limits for every org (0 = unlimited). Running and queued runs
are counted in the database (the queue claim and the submission's transaction, see
server/store/quota.py); the submission rate is a token bucket per org in this process."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from common.errors import ResourceExhausted

# Tracked orgs before idle (full) buckets are dropped: a stream of made-up org ids (auth off) must
# not grow the table forever.
MAX_TRACKED_ORGS = 10_000
# A full queue drains as runs finish; there is no better estimate of when than "soon".
QUEUE_FULL_RETRY_AFTER_S = 1


@dataclass(frozen=True)
class LimitSettings:
    max_running: int = 0  # runs of one org RUNNING at once; more wait QUEUED, other orgs go on
    max_queued: int = 0  # runs of one org QUEUED at once; a submission past it is RESOURCE_EXHAUSTED
    submit_rate: float = 0.0  # submissions (Run, StreamRun start) per second per org
    submit_burst: int = 0  # submissions allowed at once after a quiet time; 0: the rate, at least 1


def queue_full(org_id: str, limit: int) -> ResourceExhausted:
    return ResourceExhausted(
        f"org {org_id!r} already has {limit} queued runs; try again later",
        reason="QUEUE_FULL",
        retry_after_s=QUEUE_FULL_RETRY_AFTER_S,
        metadata={"limit": str(limit)},
    )


class RateLimiter:
    """Token bucket per org: `burst` tokens, refilled at `rate` per second; a submission takes one."""

    def __init__(self, settings: LimitSettings, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = settings.submit_rate
        self.burst = float(settings.submit_burst or max(1, math.ceil(self.rate)))
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # org -> (tokens, when counted)

    def admit(self, org_id: str) -> None:
        """Take a token for `org_id`, or raise RESOURCE_EXHAUSTED saying when one will be there."""
        if self.rate <= 0:
            return
        now = self._clock()
        tokens = self._tokens(org_id, now)
        if tokens < 1:
            self._buckets[org_id] = (tokens, now)
            raise ResourceExhausted(
                f"org {org_id!r} submits more than {self.rate:g} runs per second; slow down",
                reason="RATE_LIMITED",
                retry_after_s=math.ceil((1 - tokens) / self.rate),
                metadata={"limit": f"{self.rate:g}"},
            )
        self._buckets[org_id] = (tokens - 1, now)
        if len(self._buckets) > MAX_TRACKED_ORGS:
            self._forget_idle(now)

    def _tokens(self, org_id: str, now: float) -> float:
        tokens, stamp = self._buckets.get(org_id, (self.burst, now))
        return min(self.burst, tokens + (now - stamp) * self.rate)

    def _forget_idle(self, now: float) -> None:
        # A bucket that has refilled completely is the same as no bucket.
        for org_id in [o for o in self._buckets if self._tokens(o, now) >= self.burst]:
            del self._buckets[org_id]
