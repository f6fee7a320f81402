"""The run engine: admission, reads and waiting, event streams, cancel, continue and delete. The
worker side of the durable queue (claim, lease renewal, sweeper) is server.engine.queue's
Dispatcher, which the engine owns. Every state change is a conditional write in the store."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncGenerator, Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client import Gauge

from common.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, Unavailable
from server import metrics
from server.agents.base import Agent
from server.agents.registry import AgentRegistry
from server.auth.limits import LimitSettings, queue_full
from server.engine.hub import Hub, Subscription
from server.engine.queue import Dispatcher
from server.engine.queue import EngineSettings as EngineSettings  # re-exported: settings, tests
from server.engine.streams import follow
from server.ids import new_id as _new_id
from server.store.contract import Store
from server.store.quota import QueueFull
from server.store.records import (
    CANCELLED,
    ERROR,
    PAUSED,
    QUEUED,
    RUNNING,
    EventRecord,
    NewRun,
    Outcome,
    RunRecord,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Submission:
    agent_id: str
    input: dict[str, Any]
    session_id: str = ""
    user_id: str = ""
    org_id: str = ""
    timeout_s: float | None = None
    idempotency_key: str = ""
    request_hash: str = ""
    webhook_url: str = ""
    webhook_format: str = ""
    extras: dict[str, Any] | None = None
    trace: str = ""  # the submitting call's `traceparent`: the run's span continues its trace


class Engine:
    """Runs as the API sees them: admits them, reads and follows them, cancels, continues and
    deletes them. Executing them is the dispatcher's (self._dispatcher)."""

    def __init__(
        self,
        store: Store,
        hub: Hub,
        agents: AgentRegistry,
        settings: EngineSettings,
        limits: LimitSettings | None = None,
    ) -> None:
        self.store = store
        self.hub = hub
        self.agents = agents
        self.settings = settings
        self.limits = limits or LimitSettings()
        self.owner = uuid.uuid4().hex
        self._dispatcher = Dispatcher(store, agents, settings, self.limits, self.owner, hub.quiet_s)

    # ---- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        self._dispatcher.start()

    def wake(self) -> None:
        """Runs were queued elsewhere (another replica): claim now rather than at the next poll."""
        self._dispatcher.wake()

    def notifications(self, up: bool) -> None:
        """News of other processes' commits started or stopped reaching this process: every waiter,
        stream and the queue re-reads the store now and waits with the timeout that now applies."""
        self.hub.notifications(up)
        self._dispatcher.wake()

    async def shutdown(self, grace_s: float) -> None:
        """Stop claiming, give running runs `grace_s` to finish, then release the rest to the queue."""
        await self._dispatcher.shutdown(grace_s)

    def cancel_here(self, run_id: str) -> None:
        """Another replica was asked to cancel a run: stop it if this process executes it (its end
        is then stored as CANCELLED by its runner)."""
        self._dispatcher.stop(run_id)

    def executing(self, run_id: str) -> bool:
        """Whether this process executes the run now."""
        return self._dispatcher.executing(run_id)

    async def sweep_once(self) -> None:
        """Fail overdue runs no local worker executes, and runs whose worker was lost."""
        await self._dispatcher.sweep_once()

    # ---- admission ----------------------------------------------------------------------

    async def submit(self, sub: Submission, run_id: str = "", start: bool = False) -> tuple[RunRecord, bool]:
        """Store a QUEUED run (committed before this returns). An idempotency key already used for the
        same request returns that run; for another request it is ALREADY_EXISTS. With `start`, for
        callers that wait for the outcome anyway, a run this process has room for is stored already
        leased to it and starts at once, without a trip through the queue."""
        agent = self.agent(sub.agent_id)
        new = self._new_run(sub, run_id)
        # A slot taken and given back in try/finally, not an async context manager: that is a
        # generator and two more frames on every submission.
        lease = await self._dispatcher.take_slot() if start else None
        try:
            run, created = await self.store.create_run(
                new, lease, max_running=self.limits.max_running, max_queued=self.limits.max_queued
            )
        except QueueFull:
            raise queue_full(new.org_id, self.limits.max_queued) from None
        finally:
            if lease is not None:
                self._dispatcher.give_back_slot()
        if not created and run.request_hash != new.request_hash:
            raise AlreadyExists(
                "idempotency key already used for a different request",
                reason="IDEMPOTENCY_KEY_REUSED",
                metadata={"run_id": run.id, "idempotency_key": sub.idempotency_key},
            )
        if created:
            metrics.submitted(run.agent_id).inc()
        if created and run.state == RUNNING:
            # A session the engine named just now has no earlier turns to read.
            self._dispatcher.launch(run, agent, new_session=not sub.session_id)
        elif created:
            self._dispatcher.wake()
        return run, created

    def _new_run(self, sub: Submission, run_id: str) -> NewRun:
        """The submission as a run to store, once its model options check out."""
        options = sub.input.get("options", {})
        problems = self.agents.check(sub.agent_id, options.get("model", ""), options.get("provider", ""))
        if problems:
            raise InvalidArgument.fields(problems)
        return NewRun(
            id=run_id or _new_id(),
            agent_id=sub.agent_id,
            org_id=sub.org_id,
            user_id=sub.user_id,
            session_id=sub.session_id or _new_id(),
            input=sub.input,
            timeout_s=sub.timeout_s or self.settings.default_timeout_s,
            idempotency_key=sub.idempotency_key or None,
            request_hash=sub.request_hash or None,
            webhook_url=sub.webhook_url or None,
            webhook_format=sub.webhook_format or None,
            extras=sub.extras,
            trace_context=sub.trace or None,
        )

    # ---- reads and waiting --------------------------------------------------------------

    def agent(self, agent_id: str) -> Agent:
        agent = self.agents.get(agent_id)
        if agent is None:
            raise NotFound(
                f"agent {agent_id!r} not found", reason="AGENT_NOT_FOUND", metadata={"agent_id": agent_id}
            )
        return agent

    async def get(self, ref: str, org: str | None = None) -> RunRecord:
        """A run by id or number; with `org`, only that org's: another org's run is NOT_FOUND in
        exactly the way a missing one is."""
        run = await self.store.get_run(ref, org)
        if run is None:
            raise NotFound(f"run {ref!r} not found", reason="RUN_NOT_FOUND", metadata={"run_id": ref})
        return run

    async def events(self, run: RunRecord, after_seq: int) -> AsyncGenerator[EventRecord, None]:
        """Stored events after `after_seq`, then live ones, until the run ends or pauses."""
        with self.hub.subscribe(run.id) as live, _open(metrics.open_streams("stream")):
            async with contextlib.aclosing(
                follow(self.store, live, after_seq, quiet_s=self.hub.quiet_s)
            ) as events:
                async for event in events:
                    yield event

    async def submit_and_follow(self, sub: Submission) -> AsyncGenerator[EventRecord, None]:
        """Submit, then stream the run's events from START (subscribed before the run exists, so
        nothing needs to be read back)."""
        run_id = _new_id()
        with self.hub.subscribe(run_id) as live, _open(metrics.open_streams("stream")):
            run, created = await self.submit(sub, run_id, start=True)
            if created:
                stream = follow(self.store, live, 0, quiet_s=self.hub.quiet_s, replay=False)
                async with contextlib.aclosing(stream) as events:
                    async for event in events:
                        yield event
                return
        async with contextlib.aclosing(self.events(run, 0)) as events:  # idempotent replay
            async for event in events:
                yield event

    async def submit_and_wait(self, sub: Submission) -> RunRecord:
        """Submit, then return the run once it is terminal or PAUSED."""
        run_id = _new_id()
        # Only events that carry the run can settle it: the others would wake this waiter for nothing.
        with self.hub.subscribe(run_id, runs_only=True) as live:
            run, created = await self.submit(sub, run_id, start=True)
            if created:
                return await self._settle(live, run)
        return await self.wait(run)

    async def wait(self, run: RunRecord) -> RunRecord:
        """Return the run once it is terminal or PAUSED."""
        if run.state not in (QUEUED, RUNNING):
            return run
        with self.hub.subscribe(run.id, runs_only=True) as live:
            return await self._settle(live, await self.get(run.id))

    async def _settle(self, live: Subscription, run: RunRecord) -> RunRecord:
        """Follow `live` (subscribed with runs_only) until the run is terminal or PAUSED."""
        gauge = metrics.open_streams("waiter")
        gauge.inc()
        try:
            while run.state in (QUEUED, RUNNING):
                batch = await live.get(self.hub.quiet_s())
                if batch is None or live.lagged:  # quiet (another process runs it) or fell behind
                    live.reset()
                    run = await self.get(run.id)
                    continue
                for event in batch:
                    if event.run is not None:
                        run = event.run
            return run
        finally:
            gauge.dec()

    # ---- cancel, continue, delete -------------------------------------------------------

    async def cancel(self, ref: str, message: str = "", org: str | None = None) -> RunRecord:
        run = await self.get(ref, org)
        message = message or "the run was cancelled"
        outcome = Outcome(
            CANCELLED,
            ERROR,
            {"reason": "CANCELLED", "message": message},
            error_reason="CANCELLED",
            error_message=message,
        )
        # The worker confirms within a lease renewal, or is lost and swept within lease + sweep; past
        # twice that the caller hears so (the cancel stays requested and applies when it can).
        bound = 2 * (self.settings.lease_s + self.settings.sweep_interval_s + self.settings.cancel_grace_s)
        try:
            async with asyncio.timeout(bound):
                while not run.terminal:
                    if run.state in (QUEUED, PAUSED):
                        done = await self.store.transition(run.id, outcome, states=[QUEUED, PAUSED])
                        if done is not None:
                            return done
                    elif run.state == RUNNING:
                        await self._cancel_running(run, outcome)
                    run = await self.get(run.id)
        except TimeoutError:
            raise Unavailable(
                f"run {run.id} did not stop within {bound:g}s; its cancel stays requested",
                reason="CANCEL_PENDING",
                metadata={"run_id": run.id},
            ) from None
        return run

    async def _cancel_running(self, run: RunRecord, outcome: Outcome) -> None:
        task = self._dispatcher.stop(run.id, outcome.error_message or "")
        if task is None:
            # Another process holds the lease: flag it (NOTIFY tells that worker at once; it also sees
            # the flag when it renews) and wait for its end. Subscribed first: the end may be
            # committed, and announced, before request_cancel even returns.
            with self.hub.subscribe(run.id) as live:
                await self.store.request_cancel(run.id)
                await self._wait_until(
                    live,
                    run,
                    lambda r: r.state != RUNNING,
                    self.settings.lease_s + self.settings.sweep_interval_s,
                )
            return
        finished, _ = await asyncio.wait([task], timeout=self.settings.cancel_grace_s)
        if not finished:
            log.warning(
                "run %s: agent ignored cancellation for %ss; abandoning it",
                run.id,
                self.settings.cancel_grace_s,
            )
            await self.store.transition(run.id, outcome, states=[RUNNING])

    async def _wait_until(self, live: Subscription, run: RunRecord, done: Any, timeout: float) -> None:
        """Until `done(run)` holds for the stored run (re-read after each wake-up), or `timeout`."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while not done(run := await self.get(run.id)):
                    await live.get(self.hub.quiet_s())
                    live.reset()

    async def decide(
        self, ref: str, tool_call_id: str, approve: bool, reason: str, user_id: str, org: str | None = None
    ) -> RunRecord:
        """Record a decision on a PAUSED run's pending tool call and queue the run to go on."""
        run = await self.get(ref, org)
        pending = run.pending_action or {}
        call_id = tool_call_id or pending.get("tool_call_id", "")
        action = "APPROVE" if approve else "REJECT"
        decision = {
            "tool_call_id": call_id,
            "decision": action,
            "reason": reason,
            "decided_by": user_id,
            "decided_at": time.time(),
        }
        if run.state == PAUSED:
            decided = await self.store.decide(run.id, call_id, decision)
            if decided is not None:
                self._dispatcher.wake()
                return decided
            run = await self.get(run.id)
        if _decided_already(run, tool_call_id or call_id, action):
            return run  # the same decision again: applied once, answered the same
        if run.state == PAUSED:
            raise FailedPrecondition(
                f"tool call {call_id!r} is not the pending action of run {run.id}",
                reason="STALE_TOOL_CALL",
                metadata={"run_id": run.id, "pending_tool_call_id": pending.get("tool_call_id", "")},
            )
        raise FailedPrecondition(
            f"run {run.id} is {run.state}, not PAUSED",
            reason="RUN_NOT_PAUSED",
            metadata={"run_id": run.id, "state": run.state},
        )

    async def update_metadata(
        self, ref: str, metadata: dict[str, Any] | None, org: str | None = None
    ) -> RunRecord:
        """Replace a run's metadata, whatever its state; another org's run is NOT_FOUND as for `get`."""
        run = await self.get(ref, org)
        updated = await self.store.update_metadata(run.id, metadata, org)
        return updated if updated is not None else await self.get(run.id, org)  # deleted meanwhile: 404

    async def delete(self, ref: str, org: str | None = None) -> None:
        run = await self.get(ref, org)
        if not run.terminal or not await self.store.delete_run(run.id):
            raise FailedPrecondition(
                f"run {run.id} is {run.state}; only finished runs can be deleted",
                reason="RUN_NOT_FINISHED",
                metadata={"run_id": run.id, "state": run.state},
            )


@contextlib.contextmanager
def _open(gauge: Gauge) -> Iterator[None]:
    gauge.inc()
    try:
        yield
    finally:
        gauge.dec()


def _decided_already(run: RunRecord, tool_call_id: str, action: str) -> bool:
    """Whether `action` was already applied to the call: the named one, or, when the caller named
    none (meaning "the pending call") and the run has gone on since, the latest decision."""
    past = run.decisions or []
    if tool_call_id:
        return any(p["tool_call_id"] == tool_call_id and p["decision"] == action for p in past)
    return bool(past) and run.state != PAUSED and past[-1]["decision"] == action
