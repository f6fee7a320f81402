"""Following a run's event log: replay from the store, then tail live events from the hub, with no
gap and no repeat. An idle follower costs no database work: it re-reads the store only when the
hub says so (it lagged, or another process committed) or after `quiet_s()` without news (the
hub's safety net, short only while notifications are down)."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable

from server.engine.hub import Subscription
from server.store.contract import Store
from server.store.records import PAUSED, PAUSED_EVENT, TERMINAL, EventRecord

PAGE = 500


async def follow(
    store: Store,
    live: Subscription,
    after_seq: int,
    *,
    quiet_s: Callable[[], float],
    replay: bool = True,
) -> AsyncGenerator[EventRecord, None]:
    """Yield the run's events with seq > after_seq until a STOP/ERROR event, or a PAUSED event that
    is the latest one (the stream of a paused run ends; re-attach after Continue). `live` must have
    been subscribed before the store is read; `replay=False` skips the first read when it was
    subscribed before the run existed."""
    cursor = after_seq
    run_id = live.run_id
    while True:
        if replay:
            live.reset()
            while True:  # what is committed
                page = await store.list_events(run_id, cursor, PAGE)
                for event in page:
                    yield event
                    cursor = event.seq
                    if event.final:
                        return
                if len(page) < PAGE:
                    break
            run = await store.get_run(run_id)
            if run is None or ((run.state in TERMINAL or run.state == PAUSED) and cursor >= run.last_seq):
                return
        replay = True
        async for event in _tail(live, cursor, quiet_s):
            yield event
            cursor = event.seq
            if event.final:
                return


async def _tail(
    live: Subscription, cursor: int, quiet_s: Callable[[], float]
) -> AsyncGenerator[EventRecord, None]:
    """Live events in seq order; stops on a timeout, a lag, a gap or a PAUSED event (the caller
    re-reads the store, which also tells whether the run is still paused)."""
    while True:
        batch = await live.get(quiet_s())
        if not batch or live.lagged:
            return
        for event in batch:
            if event.seq <= cursor:
                continue
            if event.seq != cursor + 1:
                return
            yield event
            cursor = event.seq
            if event.final or event.type == PAUSED_EVENT:
                return
