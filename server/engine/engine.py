"""The run engine: admission, the durable queue (claim, lease renewal, sweeper), cancel,
continue, waiting and event streams. Every state change is a conditional write in the store."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncGenerator, Coroutine
from dataclasses import dataclass
from typing import Any

from common.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from server.agents.base import Agent
from server.agents.registry import AgentRegistry
from server.auth.limits import LimitSettings, queue_full
from server.engine.hub import Hub, Subscription
from server.engine.runner import Runner
from server.engine.streams import follow
from server.store.quota import QueueFull
from server.store.records import (
    CANCELLED,
    ERROR,
    FAILED,
    PAUSED,
    QUEUED,
    RUNNING,
    EventRecord,
    NewRun,
    Outcome,
    RunRecord,
)
from server.store.sql import SqlStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineSettings:
    workers: int = 64  # runs executing at once in this process
    lease_s: float = 30.0  # a worker that stops renewing loses its runs after this long
    sweep_interval_s: float = 5.0  # how often expired leases and deadlines are checked
    poll_interval_s: float = 0.5  # how often the queue is polled for runs submitted elsewhere
    default_timeout_s: float = 3600.0
    cancel_grace_s: float = 5.0  # how long a cancelled agent gets to stop before it is abandoned


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


class Engine:
    def __init__(
        self,
        store: SqlStore,
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
        self._runners: dict[str, tuple[Runner, asyncio.Task[Any]]] = {}
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._chores: set[asyncio.Task[None]] = set()
        self._accepting = True
        self._poll_s = settings.poll_interval_s
        # True when the last claim may have left runs in the queue: a finished run then wakes the
        # dispatcher at once instead of at the next poll.
        self._backlog = False
        # Worker slots promised to submissions that start their run themselves (see submit) and to
        # the claim in flight, which may fill every free slot.
        self._reserved = 0
        # Set while a claim holds its reservation; cleared when the claimed runs have their slots.
        self._claim_done: asyncio.Event | None = None

    # ---- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        loops: list[Coroutine[Any, Any, None]] = [self._dispatch(), self._renew(), self._sweep()]
        self._tasks = [asyncio.create_task(c) for c in loops]

    def wake(self) -> None:
        """Runs were queued elsewhere (another replica): claim now rather than at the next poll."""
        self._wake.set()

    async def shutdown(self, grace_s: float) -> None:
        """Stop claiming, give running runs `grace_s` to finish, then release the rest to the queue."""
        self._accepting = False
        if self._runners and grace_s > 0:
            await asyncio.wait([t for _, t in self._runners.values()], timeout=grace_s)
        for runner, task in list(self._runners.values()):
            if not runner.finalizing:
                runner.stop_reason = "release"
                task.cancel()
        if self._runners:
            await asyncio.wait([t for _, t in self._runners.values()], timeout=self.settings.cancel_grace_s)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # ---- admission ----------------------------------------------------------------------

    async def submit(self, sub: Submission, run_id: str = "", start: bool = False) -> tuple[RunRecord, bool]:
        """Store a QUEUED run (committed before this returns). An idempotency key already used for the
        same request returns that run; for another request it is ALREADY_EXISTS. With `start`, for
        callers that wait for the outcome anyway, a run this process has room for is stored already
        leased to it and starts at once, without a trip through the queue."""
        agent = self.agent(sub.agent_id)
        options = sub.input.get("options", {})
        problems = self.agents.check(sub.agent_id, options.get("model", ""), options.get("provider", ""))
        if problems:
            raise InvalidArgument.fields(problems)
        new = NewRun(
            id=run_id or str(uuid.uuid4()),
            agent_id=sub.agent_id,
            org_id=sub.org_id,
            user_id=sub.user_id,
            session_id=sub.session_id or str(uuid.uuid4()),
            input=sub.input,
            timeout_s=sub.timeout_s or self.settings.default_timeout_s,
            idempotency_key=sub.idempotency_key or None,
            request_hash=sub.request_hash or None,
            webhook_url=sub.webhook_url or None,
            webhook_format=sub.webhook_format or None,
            extras=sub.extras,
        )
        lease = await self._take_slot() if start else None
        try:
            run, created = await self.store.create_run(
                new, lease, max_running=self.limits.max_running, max_queued=self.limits.max_queued
            )
        except QueueFull:
            raise queue_full(new.org_id, self.limits.max_queued) from None
        finally:
            if lease is not None:
                self._reserved -= 1
        if not created and run.request_hash != new.request_hash:
            raise AlreadyExists(
                "idempotency key already used for a different request",
                reason="IDEMPOTENCY_KEY_REUSED",
                metadata={"run_id": run.id, "idempotency_key": sub.idempotency_key},
            )
        if created and run.state == RUNNING:
            self._start(run, agent)
        elif created:
            self._wake.set()
        return run, created

    async def _take_slot(self) -> tuple[str, float] | None:
        """A worker slot for a run that starts at once, or None to go through the queue. A claim in
        flight reserves every free slot though it may fill none: wait for it rather than queue."""
        while self._accepting:
            if len(self._runners) + self._reserved < self.settings.workers:
                self._reserved += 1
                return self.owner, self.settings.lease_s
            if self._claim_done is None:
                return None
            await self._claim_done.wait()
        return None

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
        with self.hub.subscribe(run.id) as live:
            async with contextlib.aclosing(
                follow(self.store, live, after_seq, poll_s=self._poll_s)
            ) as events:
                async for event in events:
                    yield event

    async def submit_and_follow(self, sub: Submission) -> AsyncGenerator[EventRecord, None]:
        """Submit, then stream the run's events from START (subscribed before the run exists, so
        nothing needs to be read back)."""
        run_id = str(uuid.uuid4())
        with self.hub.subscribe(run_id) as live:
            run, created = await self.submit(sub, run_id, start=True)
            if created:
                stream = follow(self.store, live, 0, poll_s=self._poll_s, replay=False)
                async with contextlib.aclosing(stream) as events:
                    async for event in events:
                        yield event
                return
        async with contextlib.aclosing(self.events(run, 0)) as events:  # idempotent replay
            async for event in events:
                yield event

    async def submit_and_wait(self, sub: Submission) -> RunRecord:
        """Submit, then return the run once it is terminal or PAUSED."""
        run_id = str(uuid.uuid4())
        with self.hub.subscribe(run_id) as live:
            run, created = await self.submit(sub, run_id, start=True)
            if created:
                return await self._settle(live, run)
        return await self.wait(run)

    async def wait(self, run: RunRecord) -> RunRecord:
        """Return the run once it is terminal or PAUSED."""
        if run.state not in (QUEUED, RUNNING):
            return run
        with self.hub.subscribe(run.id) as live:
            return await self._settle(live, await self.get(run.id))

    async def _settle(self, live: Subscription, run: RunRecord) -> RunRecord:
        while run.state in (QUEUED, RUNNING):
            batch = await live.get(self._poll_s)
            if batch is None or live.lagged:  # quiet (another process runs it) or fell behind
                live.reset()
                run = await self.get(run.id)
                continue
            for event in batch:
                if event.run is not None:
                    run = event.run
        return run

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
        while not run.terminal:
            if run.state in (QUEUED, PAUSED):
                done = await self.store.transition(run.id, outcome, states=[QUEUED, PAUSED])
                if done is not None:
                    return done
            elif run.state == RUNNING:
                await self._cancel_running(run, outcome)
            run = await self.get(run.id)
        return run

    async def _cancel_running(self, run: RunRecord, outcome: Outcome) -> None:
        local = self._runners.get(run.id)
        if local is None:
            # Another process holds the lease: flag it; that worker sees the flag when it renews.
            await self.store.request_cancel(run.id)
            await self._wait_until(
                run, lambda r: r.state != RUNNING, self.settings.lease_s + self.settings.sweep_interval_s
            )
            return
        runner, task = local
        if not runner.finalizing and runner.stop_reason is None:
            runner.stop_reason, runner.stop_message = "cancel", outcome.error_message or ""
            task.cancel()
        finished, _ = await asyncio.wait([task], timeout=self.settings.cancel_grace_s)
        if not finished:
            log.warning(
                "run %s: agent ignored cancellation for %ss; abandoning it",
                run.id,
                self.settings.cancel_grace_s,
            )
            await self.store.transition(run.id, outcome, states=[RUNNING])

    async def _wait_until(self, run: RunRecord, done: Any, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                with self.hub.subscribe(run.id) as live:
                    while not done(run):
                        await live.get(self._poll_s)
                        live.reset()
                        run = await self.get(run.id)

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
                self._wake.set()
                return decided
            run = await self.get(run.id)
        for past in run.decisions or []:
            if past["tool_call_id"] == call_id and past["decision"] == action:
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

    async def delete(self, ref: str, org: str | None = None) -> None:
        run = await self.get(ref, org)
        if not run.terminal or not await self.store.delete_run(run.id):
            raise FailedPrecondition(
                f"run {run.id} is {run.state}; only finished runs can be deleted",
                reason="RUN_NOT_FINISHED",
                metadata={"run_id": run.id, "state": run.state},
            )

    # ---- background loops ---------------------------------------------------------------

    async def _dispatch(self) -> None:
        while True:
            self._wake.clear()
            free = self.settings.workers - len(self._runners) - self._reserved if self._accepting else 0
            claimed: list[RunRecord] = []
            waiting = False
            if free > 0:
                self._reserved += free  # a submission must not take a slot this claim may fill
                self._claim_done = done = asyncio.Event()
                try:
                    claimed, waiting = await self.store.claim(
                        self.owner, free, self.settings.lease_s, self.limits.max_running
                    )
                except Exception:
                    log.exception("claiming runs failed")
                finally:
                    # No await until the claimed runs hold their slots and the rest are free again.
                    self._reserved -= free
                    for run in claimed:
                        self._launch(run)
                    self._claim_done = None
                    done.set()
            # With a backlog (or runs waiting for their session) a finishing run wakes this loop.
            self._backlog = free <= 0 or len(claimed) == free or waiting
            if free > 0 and len(claimed) == free:
                continue
            # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancel that races a wake-up.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.poll_interval_s):
                    await self._wake.wait()

    def _launch(self, run: RunRecord) -> None:
        agent = self.agents.get(run.agent_id)
        if agent is None:  # queued by a server with another agents.yaml
            message = f"agent {run.agent_id!r} is not configured here"
            failing = asyncio.create_task(self._fail_claimed(run, "AGENT_NOT_FOUND", message))
            self._chores.add(failing)  # a reference, so the task is not collected mid-way
            failing.add_done_callback(self._chores.discard)
            return
        self._start(run, agent)

    def _start(self, run: RunRecord, agent: Agent) -> None:
        runner = Runner(self.store, self.owner, agent, run)
        task = asyncio.create_task(self._execute(runner), name=f"run-{run.id}")
        self._runners[run.id] = (runner, task)

    async def _execute(self, runner: Runner) -> None:
        try:
            await runner.execute()
        except Exception:
            log.exception("run %s: runner crashed", runner.run.id)
            await self._fail_claimed(runner.run, "INTERNAL", "the run failed inside the server")
        finally:
            self._runners.pop(runner.run.id, None)
            if self._backlog:
                self._wake.set()

    async def _fail_claimed(self, run: RunRecord, reason: str, message: str) -> None:
        outcome = _failure(reason, message)
        await self.store.transition(run.id, outcome, states=[RUNNING], owner=self.owner)

    async def _renew(self) -> None:
        while True:
            await asyncio.sleep(self.settings.lease_s / 3)
            try:
                for run_id in await self.store.renew(self.owner, self.settings.lease_s):
                    local = self._runners.get(run_id)
                    if local is not None and local[0].stop_reason is None and not local[0].finalizing:
                        local[0].stop_reason = "cancel"
                        local[1].cancel()
            except Exception:
                log.exception("renewing leases failed")

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(self.settings.sweep_interval_s)
            try:
                await self.sweep_once()
            except Exception:
                log.exception("sweeping failed")

    async def sweep_once(self) -> None:
        """Fail runs past their deadline that no local worker is executing, and runs whose worker
        stopped renewing its lease (WORKER_LOST)."""
        now = time.time()
        for run in await self.store.overdue(now):
            if run.id in self._runners:
                continue  # its own timeout ends it
            if run.state == RUNNING and run.lease_expires_at is not None and run.lease_expires_at < now:
                outcome = _failure("WORKER_LOST", "the worker executing the run stopped responding")
                await self.store.transition(run.id, outcome, states=[RUNNING], lease_before=now)
            elif run.deadline < now and run.state in (QUEUED, PAUSED):
                outcome = _failure("DEADLINE_EXCEEDED", f"run exceeded its timeout of {run.timeout_s:g}s")
                await self.store.transition(run.id, outcome, states=[QUEUED, PAUSED], deadline_before=now)


def _failure(reason: str, message: str) -> Outcome:
    return Outcome(
        FAILED,
        ERROR,
        {"reason": reason, "message": message},
        error_reason=reason,
        error_message=message,
    )
