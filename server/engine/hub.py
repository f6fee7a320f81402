"""In-process fan-out of committed events to stream subscribers. Bounded: a subscriber that falls
behind is marked lagged and catches up from the store, so it never blocks the writer.

The hub also knows whether news of other processes' commits reaches this one (on PostgreSQL, while
the LISTEN connection is up; on SQLite, where the store watches the file for other processes'
commits, always). While it does, a waiter re-reads the store only as a rare safety net
(`recheck_s`); while it does not, every `poll_s`."""

from __future__ import annotations

import asyncio
import random

from server.store.records import EventRecord

QUEUE_BATCHES = 256


class Subscription:
    """One follower's live events: a short list of batches and, while it waits, one future. Ten
    thousand idle streams hold ten thousand of these, so no asyncio.Queue (four deques, ~3 KB)."""

    __slots__ = ("_batches", "_hub", "_waiter", "lagged", "run_id", "runs_only")

    def __init__(self, run_id: str, runs_only: bool = False, hub: Hub | None = None) -> None:
        self.run_id = run_id
        self._hub = hub  # subscribed to while in a `with` block (Hub.subscribe)
        # Only batches with an event that carries the run (a state change) are kept: a waiter reads
        # nothing else, and every batch kept wakes it.
        self.runs_only = runs_only
        self._batches: list[list[EventRecord]] = []
        self._waiter: asyncio.Future[bool] | None = None
        self.lagged = False

    # A context manager of its own rather than a @contextmanager generator: one object per waiter
    # and stream, not three.
    def __enter__(self) -> Subscription:
        if self._hub is not None:
            self._hub.add(self)
        return self

    def __exit__(self, *_: object) -> None:
        if self._hub is not None:
            self._hub.discard(self)

    def reset(self) -> None:
        """Forget queued events; call before re-reading the store."""
        self.lagged = False
        self._batches.clear()

    def offer(self, events: list[EventRecord]) -> None:
        if self.lagged:
            return
        if self.runs_only and all(e.run is None for e in events):
            return
        if len(self._batches) >= QUEUE_BATCHES:
            self._lag()
        else:
            self._batches.append(events)
            self._notify()

    def wake(self) -> None:
        """Events were committed elsewhere: make the follower read the store now."""
        if not self.lagged:
            self._lag()

    def _lag(self) -> None:
        # A lagged follower re-reads the store and drops what is queued: free it now, and leave
        # the empty batch that tells it so.
        self.lagged = True
        self._batches.clear()
        self._batches.append([])
        self._notify()

    def _notify(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(True)

    async def get(self, timeout: float) -> list[EventRecord] | None:
        """Next batch of live events; None on timeout. An empty batch means "lagged"."""
        if not self._batches:
            loop = asyncio.get_running_loop()
            waiter = self._waiter = loop.create_future()
            timer = loop.call_later(timeout, _expire, waiter)
            try:
                if not await waiter:
                    return None
            finally:
                timer.cancel()
                self._waiter = None
        return self._batches.pop(0) if self._batches else []


def _expire(waiter: asyncio.Future[bool]) -> None:
    if not waiter.done():
        waiter.set_result(False)


class Hub:
    def __init__(self, poll_s: float = 0.5, recheck_s: float = 300.0) -> None:
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

    def subscribe(self, run_id: str, runs_only: bool = False) -> Subscription:
        """The run's live events while in a `with` block (`runs_only`: the subscriber reads only the
        run that events of state changes carry)."""
        return Subscription(run_id, runs_only, self)

    def add(self, subscription: Subscription) -> None:
        subscribers = self._subscribers.get(subscription.run_id)
        if subscribers is None:
            subscribers = self._subscribers[subscription.run_id] = set()
        subscribers.add(subscription)

    def discard(self, subscription: Subscription) -> None:
        subscribers = self._subscribers.get(subscription.run_id)
        if subscribers is not None:
            subscribers.discard(subscription)
            if not subscribers:
                del self._subscribers[subscription.run_id]
