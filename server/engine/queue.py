"""The durable queue's worker side in one process: the worker slots, the runs executing in them,
and the background loops that claim queued runs, renew this process's leases and sweep expired
leases and deadlines. Admission, reads and cancel live in server.engine.engine, which starts runs
it admitted already leased here through `reserve` and `launch`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from server import metrics
from server.agents.base import Agent
from server.agents.registry import AgentRegistry
from server.agents.tools import SIDE_EFFECT_FREE
from server.auth.limits import LimitSettings
from server.engine.runner import Runner
from server.store.contract import Store
from server.store.records import ERROR, FAILED, PAUSED, QUEUED, RUNNING, STATUS, Outcome, RunRecord

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineSettings:
    """The engine's settings (defined here, beside the loops that read most of them)."""

    workers: int = 64  # runs executing at once in this process
    lease_s: float = 30.0  # a worker that stops renewing loses its runs after this long
    sweep_interval_s: float = 5.0  # how often expired leases and deadlines are checked
    # How often the store is re-read while notifications are down, or while queued runs wait (for
    # their session or their org's quota) on runs that may finish in another process.
    poll_interval_s: float = 0.5
    # While notifications work, waiters, streams and the queue re-read the store this seldom anyway.
    recheck_s: float = 300.0
    default_timeout_s: float = 3600.0
    cancel_grace_s: float = 5.0  # how long a cancelled agent gets to stop before it is abandoned
    # Attempts a run gets in all when its worker is lost and it is safe to run again (see sweep_once).
    max_attempts: int = 3


class Dispatcher:
    """Owns this process's worker slots: the runners executing in them, the slots reserved for a
    claim in flight or for a run about to start at once, the wake event, and the claim, renew and
    sweep loops."""

    def __init__(
        self,
        store: Store,
        agents: AgentRegistry,
        settings: EngineSettings,
        limits: LimitSettings,
        owner: str,
        quiet_s: Callable[[], float],
    ) -> None:
        self.store = store
        self._quiet_s = quiet_s
        self.agents = agents
        self.settings = settings
        self.limits = limits
        self.owner = owner
        self._runners: dict[str, tuple[Runner, asyncio.Task[Any]]] = {}
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._chores: set[asyncio.Task[None]] = set()
        self._accepting = True
        # True when the last claim may have left runs in the queue: a finished run then wakes the
        # dispatcher at once instead of at the next poll.
        self._backlog = False
        # Worker slots promised to submissions that start their run themselves (see reserve) and to
        # the claim in flight, which may fill every free slot.
        self._reserved = 0
        # Set while a claim holds its reservation; cleared when the claimed runs have their slots.
        self._claim_done: asyncio.Event | None = None

    # ---- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        loops: list[Coroutine[Any, Any, None]] = [self._dispatch(), self._renew(), self._sweep()]
        self._tasks = [asyncio.create_task(c) for c in loops]

    def wake(self) -> None:
        """Runs were queued (here or elsewhere): claim now rather than at the next poll."""
        self._wake.set()

    async def shutdown(self, grace_s: float) -> None:
        """Stop claiming, give running runs `grace_s` to finish, then release the rest to the queue."""
        self._accepting = False
        if self._runners and grace_s > 0:
            await asyncio.wait([t for _, t in self._runners.values()], timeout=grace_s)
        for runner, _ in list(self._runners.values()):
            runner.interrupt("release")
        if self._runners:
            await asyncio.wait([t for _, t in self._runners.values()], timeout=self.settings.cancel_grace_s)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # ---- runs started at once -----------------------------------------------------------

    async def take_slot(self) -> tuple[str, float] | None:
        """Hold a worker slot for a run stored already leased to this process: the lease (owner,
        seconds) to store the run with, or None to send it through the queue. A slot taken is held
        until `give_back_slot`, called once the run is stored; `launch` the run right after, with no
        await between. A claim in flight reserves every free slot though it may fill none: wait for
        it rather than queue."""
        while self._accepting:
            if len(self._runners) + self._reserved < self.settings.workers:
                self._reserved += 1
                return self.owner, self.settings.lease_s
            if self._claim_done is None:
                return None
            await self._claim_done.wait()
        return None

    def give_back_slot(self) -> None:
        """Release the slot `take_slot` held (the run, if it started, now holds one of its own)."""
        self._reserved -= 1

    def executing(self, run_id: str) -> bool:
        """Whether a worker of this process executes the run now."""
        return run_id in self._runners

    def launch(self, run: RunRecord, agent: Agent, *, new_session: bool = False) -> None:
        """Execute a run this process holds the lease of, in a worker slot (`new_session`: its
        session has no earlier runs)."""
        runner = Runner(self.store, self.owner, agent, run, new_session=new_session)
        task = asyncio.create_task(self._execute(runner), name=f"run-{run.id}")
        self._runners[run.id] = (runner, task)
        # However the task ends, its slot is freed (a task cancelled before it ran runs no finally).
        task.add_done_callback(lambda done: self._forget(run.id, done))

    def _forget(self, run_id: str, task: asyncio.Task[Any]) -> None:
        if run_id in self._runners and self._runners[run_id][1] is task:
            del self._runners[run_id]

    def stop(self, run_id: str, message: str = "") -> asyncio.Task[Any] | None:
        """Cancel the run if it executes here (unless it is already stopping or finishing): its task,
        to wait for, or None when no local worker executes it."""
        local = self._runners.get(run_id)
        if local is None:
            return None
        runner, task = local
        runner.interrupt("cancel", message)
        return task

    # ---- claiming -----------------------------------------------------------------------

    async def _dispatch(self) -> None:
        while True:
            self._wake.clear()
            free = self.settings.workers - len(self._runners) - self._reserved if self._accepting else 0
            claimed: list[RunRecord] = []
            waiting = False
            if free > 0:
                claimed, waiting = await self._claim(free)
            # With a backlog (or runs waiting for their session) a finishing run wakes this loop.
            self._backlog = free <= 0 or len(claimed) == free or waiting
            if free > 0 and len(claimed) == free:
                continue
            # New runs wake this loop (a local submit, or NOTIFY from another replica). Runs left
            # queued behind others may be freed by a commit elsewhere that announces nothing: poll.
            quiet = self.settings.poll_interval_s if waiting else self._quiet_s()
            # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancel that races a wake-up.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(quiet):
                    await self._wake.wait()

    async def _claim(self, free: int) -> tuple[list[RunRecord], bool]:
        """Claim up to `free` queued runs and launch them; also whether runs wait for their session.
        The free slots stay reserved while the claim is in flight: a submission must not take a slot
        this claim may fill (it waits for `_claim_done` instead)."""
        claimed: list[RunRecord] = []
        waiting = False
        self._reserved += free
        self._claim_done = done = asyncio.Event()
        try:
            claimed, waiting = await self.store.claim(
                self.owner, free, self.settings.lease_s, self.limits.max_running
            )
        except Exception:
            log.exception("claiming runs failed")
            waiting = True  # try again at the next poll, not at the next recheck
        finally:
            # No await until the claimed runs hold their slots and the rest are free again.
            self._reserved -= free
            for run in claimed:
                self._launch_claimed(run)
            self._claim_done = None
            done.set()
        return claimed, waiting

    def _launch_claimed(self, run: RunRecord) -> None:
        agent = self.agents.get(run.agent_id)
        if agent is None:  # queued by a server with another agents.yaml
            message = f"agent {run.agent_id!r} is not configured here"
            failing = asyncio.create_task(self._fail_claimed(run, "AGENT_NOT_FOUND", message))
            self._chores.add(failing)  # a reference, so the task is not collected mid-way
            failing.add_done_callback(self._chores.discard)
            return
        self.launch(run, agent)

    async def _execute(self, runner: Runner) -> None:
        try:
            await runner.execute()
        except Exception:
            log.exception("run %s: runner crashed", runner.run.id)
            await self._fail_claimed(runner.run, "INTERNAL", "the run failed inside the server")
        finally:
            self._forget(runner.run.id, asyncio.current_task())  # type: ignore[arg-type]
            if self._backlog:
                self._wake.set()

    async def _fail_claimed(self, run: RunRecord, reason: str, message: str) -> None:
        outcome = _failure(reason, message)
        await self.store.transition(run.id, outcome, states=[RUNNING], owner=self.owner)

    # ---- leases and deadlines -----------------------------------------------------------

    async def _renew(self) -> None:
        """Extend this process's leases; a run flagged for cancellation elsewhere is cancelled."""
        while True:
            await asyncio.sleep(self.settings.lease_s / 3)
            try:
                executing = list(self._runners)
                for run_id in await self.store.renew(self.owner, self.settings.lease_s, executing):
                    self.stop(run_id)
                metrics.LEASE_RENEWALS.inc(len(executing))
            except Exception:
                log.exception("renewing leases failed")

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(self.settings.sweep_interval_s)
            try:
                await self.sweep_once()
            except Exception:
                log.exception("sweeping failed")

    async def _may_run_again(self, run: RunRecord) -> bool:
        """A lost run may run again from the start while it has attempts left, was not resumed after
        a decision, and its tool ledger shows no call of a tool that may have acted (the runner
        stores each tool call before the tool runs)."""
        if run.attempt >= self.settings.max_attempts or run.resume or run.decisions or run.cancel_requested:
            return False
        return all(name in SIDE_EFFECT_FREE for name in await self.store.started_tools(run.id))

    async def _requeue_lost(self, run: RunRecord, now: float) -> None:
        requeued = await self.store.transition(
            run.id, _lost_and_requeued(), states=[RUNNING], lease_before=now
        )
        if requeued is not None:
            log.warning(
                "run %s: its worker stopped renewing the lease; queued for attempt %d",
                run.id,
                requeued.attempt,
                extra={
                    "run_id": run.id,
                    "org_id": run.org_id,
                    "agent_id": run.agent_id,
                    "reason": "WORKER_LOST",
                },
            )
            self.wake()

    async def sweep_once(self) -> None:
        """Fail runs past their deadline that no local worker is executing, and runs whose worker
        stopped renewing its lease (WORKER_LOST)."""
        metrics.SWEEPS.inc()
        now = time.time()
        for run in await self.store.overdue(now):
            if run.id in self._runners:
                continue  # its own timeout ends it
            if run.state == RUNNING and run.lease_expires_at is not None and run.lease_expires_at < now:
                if await self._may_run_again(run):
                    await self._requeue_lost(run, now)
                    continue
                outcome = _failure("WORKER_LOST", "the worker executing the run stopped responding")
                log.warning(
                    "run %s: its worker stopped renewing the lease",
                    run.id,
                    extra={
                        "run_id": run.id,
                        "org_id": run.org_id,
                        "agent_id": run.agent_id,
                        "reason": "WORKER_LOST",
                    },
                )
                await self.store.transition(run.id, outcome, states=[RUNNING], lease_before=now)
            elif run.deadline < now and run.state in (QUEUED, PAUSED):
                outcome = _failure("DEADLINE_EXCEEDED", f"run exceeded its timeout of {run.timeout_s:g}s")
                await self.store.transition(run.id, outcome, states=[QUEUED, PAUSED], deadline_before=now)


def _lost_and_requeued() -> Outcome:
    message = "the worker executing the run stopped responding; it runs again"
    return Outcome(
        QUEUED, STATUS, {"state": QUEUED, "reason": "WORKER_LOST", "message": message}, release=True
    )


def _failure(reason: str, message: str) -> Outcome:
    return Outcome(
        FAILED,
        ERROR,
        {"reason": reason, "message": message},
        error_reason=reason,
        error_message=message,
    )
