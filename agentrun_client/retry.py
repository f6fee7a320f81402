"""When and how calls are tried again: after the server could not be reached (UNAVAILABLE) or went away
mid-call (CANCELLED by the server), with exponential backoff and jitter, a bounded number of times in
a row. Every call the client retries is safe to repeat: reads, Cancel, Continue (the same decision
applies once) and submissions (each carries one idempotency key over all its attempts)."""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass

import grpc

log = logging.getLogger("agentrun_client")

RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED})


@dataclass(frozen=True)
class RetryPolicy:
    """`max_attempts` retries in a row (a stream that delivers an event starts counting anew), waiting
    `initial_backoff` seconds before the first, times `multiplier` before each next one, at most
    `max_backoff`, each wait jittered by up to 20 %. The defaults ride out about 15 s without a server,
    enough for a restart. `RetryPolicy(max_attempts=0)` never retries."""

    max_attempts: int = 12
    initial_backoff: float = 0.05
    max_backoff: float = 2.0
    multiplier: float = 2.0

    def __post_init__(self) -> None:
        if self.max_attempts < 0 or self.initial_backoff < 0 or self.max_backoff < 0 or self.multiplier < 1:
            raise ValueError(f"invalid retry policy: {self}")


class Backoff:
    """The retries of one call: `await backoff.wait(what, cause)` logs what failed and sleeps before
    the next attempt, or returns False when the attempts ran out; `reset()` after progress."""

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy
        self.attempts = 0

    def reset(self) -> None:
        self.attempts = 0

    async def wait(self, what: str, cause: object) -> bool:
        if self.attempts >= self.policy.max_attempts:
            return False
        p = self.policy
        delay = min(p.max_backoff, p.initial_backoff * p.multiplier**self.attempts)
        delay *= 1 + random.uniform(-0.2, 0.2)
        self.attempts += 1
        log.info("%s (%s); retry %d/%d in %.2fs", what, cause, self.attempts, p.max_attempts, delay)
        await asyncio.sleep(delay)
        return True


def retryable(error: grpc.RpcError) -> bool:
    return error.code() in RETRYABLE
