"""What a run has produced so far (output, tool calls, reasoning, usage), carried across a pause
in the run's `result`; and its events on their way to the store (Appends)."""

from __future__ import annotations

import asyncio
from asyncio import Future
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from server.store.contract import Store
from server.store.records import EventRecord


@dataclass
class Transcript:
    """What a run has produced so far: carried across a pause in the run's `result`."""

    output: list[str] = field(default_factory=list)
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    reasoning_steps: list[str] = field(default_factory=list)
    usage: dict[str, int] = field(default_factory=dict)
    reasoning: list[str] = field(default_factory=list)
    open_calls: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def resume(cls, result: dict[str, Any] | None) -> Transcript:
        result = result or {}
        return cls(
            output=[result["output"]] if result.get("output") else [],
            tool_calls=list(result.get("tool_calls", [])),
            reasoning_steps=list(result.get("reasoning_steps", [])),
            usage=dict(result.get("usage", {})),
        )

    def close_reasoning(self) -> None:
        if self.reasoning:
            self.reasoning_steps.append("".join(self.reasoning))
            self.reasoning = []

    def add_usage(self, **counts: int) -> None:
        for name, value in counts.items():
            self.usage[name] = self.usage.get(name, 0) + value

    def result(self, **extra: Any) -> dict[str, Any]:
        self.close_reasoning()
        return {
            "output": "".join(self.output),
            "tool_calls": self.tool_calls,
            "reasoning_steps": self.reasoning_steps,
            "usage": self.usage,
            **extra,
        }


# Events kept back at most while the run's previous append is being committed.
MAX_WAITING = 256


class Appends:
    """A run's events on their way to the store, in seq order. While an append of the run is being
    committed, the events after it wait and then go in one append: pydantic-ai awaits between the
    events of a run, so appended as they come each would be an op, and often a commit, of its own.
    Order holds as one coroutine at a time queues: the runner waits for the flusher first."""

    def __init__(self, store: Store, run_id: str, owner: str, check: Callable[[Future[bool]], None]) -> None:
        self.store, self.run_id, self.owner, self.check = store, run_id, owner, check
        self.waiting: list[EventRecord] = []
        self.busy = False  # an append of the run is being queued or committed: events wait for it
        self.flusher: asyncio.Task[None] | None = None  # queues the waiting events once it is done

    async def add(self, event: EventRecord) -> None:
        if self.busy and len(self.waiting) < MAX_WAITING:
            self.waiting.append(event)
        elif not self.waiting and (self.flusher is None or self.flusher.done()):
            await self._send([event])  # what `now` does when nothing waits: two awaits fewer
        else:
            await self.now(event)

    async def now(self, event: EventRecord) -> Awaitable[bool]:
        """Queue what waits and `event` at once; the awaitable says whether they were stored."""
        return await self._send(await self._take() + [event])

    async def flush(self) -> None:
        """Queue what waits at once."""
        if events := await self._take():
            await self._send(events)

    async def _take(self) -> list[EventRecord]:
        if self.flusher is not None and not self.flusher.done():
            await asyncio.wait([self.flusher])  # it queues earlier events; not cancelled with us
        events, self.waiting = self.waiting, []
        return events

    async def _send(self, events: list[EventRecord]) -> Awaitable[bool]:
        self.busy = True
        try:
            stored = await self.store.append(self.run_id, self.owner, events)
        except BaseException:
            # Not queued (cancelled waiting for room in the writer's queue): they go with the next
            # append, at the latest the runner's flush before the run's end.
            self.waiting[:0] = events
            raise
        if isinstance(stored, Future):
            stored.add_done_callback(self._stored)  # one callback: each is a turn of the loop
        else:
            self.busy = False
        return stored

    def _stored(self, stored: Future[bool]) -> None:
        try:
            self.check(stored)
        finally:
            self._committed()

    def _committed(self) -> None:
        if not self.waiting:
            self.busy = False
        elif self.flusher is None or self.flusher.done():
            self.flusher = asyncio.create_task(self._flush(), name=f"flush {self.run_id}")

    async def _flush(self) -> None:
        events, self.waiting = self.waiting, []
        if events:
            await self._send(events)
        else:  # cannot be (only this task takes them while it is scheduled), but idle is safe
            self.busy = False
