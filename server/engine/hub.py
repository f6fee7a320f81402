"""In-process fan-out of committed events to stream subscribers. Bounded: a subscriber that falls
behind is marked lagged and catches up from the store, so it never blocks the writer.

The hub also knows whether news of other processes' commits reaches this one (always on SQLite's
single process; on PostgreSQL while the LISTEN connection is up). While it does, a waiter re-reads
the store only as a rare safety net (`recheck_s`); while it does not, every `poll_s`."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Iterator

from server.store.records import EventRecord

QUEUE_BATCHES = 256


class Subscription:
    __slots__ = ("_queue", "lagged", "run_id")

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self._queue: asyncio.Queue[list[EventRecord]] = asyncio.Queue(QUEUE_BATCHES)
        self.lagged = False

    def reset(self) -> None:
        """Forget queued events; call before re-reading the store."""
        self.lagged = False
        while not self._queue.empty():
            self._queue.get_nowait()

    def offer(self, events: list[EventRecord]) -> None:
        if self.lagged:
            return
        try:
            self._queue.put_nowait(events)
        except asyncio.QueueFull:
            self.lagged = True
            self._queue.get_nowait()  # make room for the wake-up below
            self._queue.put_nowait([])

    def wake(self) -> None:
        """Events were committed elsewhere: make the follower read the store now."""
        if not self.lagged:
            self.lagged = True
            with contextlib.suppress(asyncio.QueueFull):
                self._queue.put_nowait([])

    async def get(self, timeout: float) -> list[EventRecord] | None:
        """Next batch of live events; None on timeout. An empty batch means "lagged"."""
        if not self._queue.empty():
            return self._queue.get_nowait()
        try:
            async with asyncio.timeout(timeout):
                return await self._queue.get()
        except TimeoutError:
            return None


class Hub:
    def __init__(self, poll_s: float = 0.5, recheck_s: float = 60.0) -> None:
        self._subscribers: dict[str, set[Subscription]] = {}
        self.poll_s = poll_s
        self.recheck_s = recheck_s
        self.notified = True

    def quiet_s(self) -> float:
        """How long a waiter may hear nothing before it re-reads the store itself. Jittered, so
        thousands of streams opened together do not re-read together."""
        if not self.notified:
            return self.poll_s
        return self.recheck_s * random.uniform(0.8, 1.2)

    def notifications(self, up: bool) -> None:
        """News of other processes' commits started or stopped reaching this process. Every
        subscriber re-reads the store now: it may have missed a commit while the news was down, and
        it must re-arm its wait with the new timeout."""
        self.notified = up
        for subscriptions in list(self._subscribers.values()):
            for subscription in subscriptions:
                subscription.wake()

    def publish(self, events: list[EventRecord]) -> None:
        if not self._subscribers or not events:
            return
        by_run: dict[str, list[EventRecord]] = {}
        for event in events:
            if event.run_id in self._subscribers:
                by_run.setdefault(event.run_id, []).append(event)
        for run_id, batch in by_run.items():
            for subscription in self._subscribers.get(run_id, ()):
                subscription.offer(batch)

    def poke(self, run_id: str) -> None:
        for subscription in self._subscribers.get(run_id, ()):
            subscription.wake()

    @contextlib.contextmanager
    def subscribe(self, run_id: str) -> Iterator[Subscription]:
        subscription = Subscription(run_id)
        self._subscribers.setdefault(run_id, set()).add(subscription)
        try:
            yield subscription
        finally:
            subscribers = self._subscribers.get(run_id)
            if subscribers is not None:
                subscribers.discard(subscription)
                if not subscribers:
                    del self._subscribers[run_id]
