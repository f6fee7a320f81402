"""Executes one claimed run: drives the agent, stores each event in order, and ends the run
(COMPLETED / PAUSED / FAILED / CANCELLED, or back to QUEUED when the server releases it) in one
conditional transaction that also checks this worker still holds the lease."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from common import logs
from common.tracing import TRACER, parent_of
from server import metrics, tracing
from server.agents.base import (
    Agent,
    AgentContext,
    AgentEvent,
    AgentFailure,
    ApprovalRequired,
    ContentDelta,
    Decision,
    Finished,
    PriorTurn,
    ReasoningDelta,
    ToolEnd,
    ToolStart,
)
from server.engine.inputs import run_input_from_dict
from server.engine.transcript import Appends, Transcript
from server.store.contract import Store
from server.store.records import (
    CANCELLED,
    COMPLETED,
    CONTENT_DELTA,
    ERROR,
    FAILED,
    PAUSED,
    PAUSED_EVENT,
    QUEUED,
    REASONING_DELTA,
    RUNNING,
    STATUS,
    STOP,
    TOOL_END,
    TOOL_START,
    EventRecord,
    Outcome,
    RunRecord,
)

log = logging.getLogger(__name__)

# Yield to the event loop at least this often, so an agent that never awaits cannot starve others.
YIELD_EVERY = 64
# How long a run that ended keeps trying to store its end while the database is unreachable.
FINAL_WRITE_RETRY_S = 20.0


class Runner:
    def __init__(
        self, store: Store, owner: str, agent: Agent, run: RunRecord, *, new_session: bool = False
    ) -> None:
        self.store = store
        self.owner = owner
        self.agent = agent
        self.run = run
        # The engine made the run's session for it (the caller named none): it has no earlier turns,
        # so the agent's history needs no read (a read and a thread hop per pydantic-ai run).
        self.new_session = new_session
        # Why this task was cancelled: "cancel" (CancelRun), "release" (shutdown) or "lost" (its
        # events stopped being stored).
        self.stop_reason: str | None = None
        self.stop_message = ""
        self.finalizing = False
        self._task: asyncio.Task[Any] | None = None
        self._seq = run.last_seq  # the last event's, stored or on its way (Appends)
        self._appends = Appends(store, run.id, owner, self._check_stored)
        self._transcript = Transcript.resume(run.result)
        self._started = time.perf_counter()
        self._heard = False  # whether the agent produced an event yet
        self._tool_spans: dict[str, Span] = {}

    def interrupt(self, reason: str, message: str = "") -> bool:
        """Stop the run: "cancel" (CancelRun), "release" (shutdown) or "lost" (its events stopped
        being stored); False when it is already stopping or finishing. A runner whose task has not
        started only records why: cancelling a task before it runs would skip all of its code, the
        run's end included, so execute() ends the run at once instead."""
        if self.finalizing or self.stop_reason is not None:
            return False
        self.stop_reason, self.stop_message = reason, message
        if self._task is not None:
            self._task.cancel()
        return True

    async def execute(self) -> RunRecord | None:
        self._task = asyncio.current_task()
        run = self.run
        # Every line this task logs names the run (its own task: the fields go with it).
        logs.bind_run(run_id=run.id, org_id=run.org_id, agent_id=run.agent_id, attempt=run.attempt)
        if self.stop_reason is not None:  # stopped before it began
            outcome = self._released() if self.stop_reason == "release" else self._cancelled()
        else:
            metrics.started(run)
            outcome = await self._traced()
        self.finalizing = True
        # Queued right behind the run's last events (same group commit): the seq condition makes it
        # apply only if every one of them was stored.
        await self._appends.flush()
        record = await self._end(outcome, seq=self._seq)
        if record is None:
            lost = self._failed("EVENTS_LOST", "some of the run's events could not be stored")
            record = await self._end(lost)
        if record is None:
            log.warning("run %s: this worker lost its lease; another one ended the run", run.id)
        else:
            log.debug("run %s: %s %s", run.id, record.state, record.error_reason or "")
        return record

    async def _traced(self) -> Outcome:
        """Drive the agent inside the run's span, which continues the submitting call's trace (the
        model and tool calls are its children)."""
        run = self.run
        if not run.trace_context and tracing.idle():  # the span would be a no-op with no parent
            return await self._started_drive()
        attributes: dict[str, str | int] = {
            "agentrun.run_id": run.id,
            "agentrun.agent_id": run.agent_id,
            "agentrun.attempt": run.attempt,
        }
        with TRACER.start_as_current_span(
            f"run {run.agent_id}",
            context=parent_of(run.trace_context),
            kind=SpanKind.CONSUMER,
            attributes=attributes,
        ) as span:
            outcome = await self._started_drive()
            span.set_attribute("agentrun.state", outcome.state)
            if outcome.error_reason:
                span.set_status(Status(StatusCode.ERROR, outcome.error_reason))
            return outcome

    async def _started_drive(self) -> Outcome:
        run = self.run
        if run.resume or run.attempt > 1:
            reason = "RESUMED" if run.resume else "RETRIED"
            await self._emit(STATUS, {"state": RUNNING, "reason": reason})
        return await self._drive()

    async def _end(self, outcome: Outcome, seq: int | None = None) -> RunRecord | None:
        """The final transition, tried again while the database is unreachable (the run keeps its
        worker slot, so its lease is renewed meanwhile). Past FINAL_WRITE_RETRY_S the error goes up:
        the lease is then left to expire and the sweeper ends the run (WORKER_LOST)."""
        loop = asyncio.get_running_loop()
        give_up = loop.time() + FINAL_WRITE_RETRY_S
        delay = 0.05
        while True:
            try:
                return await self.store.transition(
                    self.run.id, outcome, states=[RUNNING], owner=self.owner, seq=seq
                )
            except Exception as exc:
                if loop.time() + delay > give_up:
                    raise
                log.warning("run %s: storing its end failed (%r); retrying in %.2fs", self.run.id, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def _drive(self) -> Outcome:
        try:
            async with asyncio.timeout(self.run.deadline - time.time()):
                return await self._consume()
        except TimeoutError:
            await self._close_open_calls("the run's deadline passed")
            return self._failed("DEADLINE_EXCEEDED", f"run exceeded its timeout of {self.run.timeout_s:g}s")
        except asyncio.CancelledError:
            if self.stop_reason is None:
                raise
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            if self.stop_reason == "lost":
                return self._failed("EVENTS_LOST", "some of the run's events could not be stored")
            await self._close_open_calls("the run was cancelled")
            if self.stop_reason == "release":
                return self._released()
            return self._cancelled()
        except AgentFailure as exc:
            log.info(
                "run %s: agent %s failed: %s %s",
                self.run.id,
                self.agent.info.id,
                exc.reason,
                exc,
                extra={"reason": exc.reason},
            )
            await self._close_open_calls(f"the agent failed: {exc.message}")
            return self._failed(exc.reason, exc.message)
        except Exception as exc:
            log.info(
                "run %s: agent %s failed: %r",
                self.run.id,
                self.agent.info.id,
                exc,
                extra={"reason": "AGENT_ERROR"},
            )
            await self._close_open_calls(f"the agent failed: {exc}")
            return self._failed("AGENT_ERROR", f"{type(exc).__name__}: {exc}")

    async def _consume(self) -> Outcome:
        count = 0
        async with contextlib.aclosing(self.agent.run(self._context())) as events:
            async for event in events:
                if isinstance(event, Finished | ApprovalRequired):
                    return self._ending(event)
                await self._record(event)
                count += 1
                if count % YIELD_EVERY == 0:
                    await asyncio.sleep(0)
        return self._failed("AGENT_ERROR", "the agent ended without a result")

    def _context(self) -> AgentContext:
        run = self.run
        decision = None
        if run.resume:
            decision = Decision(
                tool_call_id=run.resume["tool_call_id"],
                approved=run.resume["decision"] == "APPROVE",
                reason=run.resume.get("reason", ""),
            )
        return AgentContext(
            run_id=run.id,
            session_id=run.session_id,
            user_id=run.user_id,
            input=run_input_from_dict(run.input),
            attempt=run.attempt,
            state=run.agent_state,
            decision=decision,
            history=self._history,
        )

    async def _history(self) -> list[PriorTurn]:
        if self.new_session:
            return []
        prior = await self.store.session_history(self.run.session_id, self.run.org_id, self.run.number)
        return [
            PriorTurn(p.input.get("message", ""), (p.result or {}).get("output", ""), p.messages)
            for p in prior
        ]

    async def _record(self, event: AgentEvent) -> None:
        if not self._heard:
            self._heard = True
            metrics.first_event(self.run)
        t = self._transcript
        if isinstance(event, ReasoningDelta):
            t.reasoning.append(event.text)
            await self._emit(REASONING_DELTA, {"text": event.text})
            return
        t.close_reasoning()
        if isinstance(event, ContentDelta):
            t.output.append(event.text)
            await self._emit(CONTENT_DELTA, {"text": event.text})
        elif isinstance(event, ToolStart):
            call = {"id": event.tool_call_id, "name": event.name, "arguments_json": event.arguments_json}
            t.open_calls[event.tool_call_id] = call
            self._tool_spans[event.tool_call_id] = TRACER.start_span(
                f"tool {event.name}", attributes={"agentrun.tool_call_id": event.tool_call_id}
            )
            # The tool ledger: the call is stored before the agent gets to run it, so a run whose
            # worker is lost can be judged safe to run again (no side-effecting call began) or not.
            await (await self._appends.now(self._event(TOOL_START, dict(call))))
        elif isinstance(event, ToolEnd):
            await self._end_call(
                event.tool_call_id, event.name, event.result, event.duration_ms, event.is_error
            )

    async def _end_call(self, call_id: str, name: str, result: str, duration_ms: int, is_error: bool) -> None:
        t = self._transcript
        call = t.open_calls.pop(call_id, {"id": call_id, "name": name, "arguments_json": "{}"})
        call |= {"result": result, "duration_ms": duration_ms, "is_error": is_error}
        span = self._tool_spans.pop(call_id, None)
        if span is not None:
            if is_error:
                span.set_status(Status(StatusCode.ERROR, result[:200]))
            span.end()
        t.tool_calls.append(call)
        t.add_usage(tool_ms=duration_ms)
        await self._emit(TOOL_END, call)

    async def _close_open_calls(self, why: str) -> None:
        """Record what happened to tool calls still in flight when the agent stopped."""
        for call_id, call in list(self._transcript.open_calls.items()):
            await self._end_call(call_id, call["name"], f"not completed: {why}", 0, True)

    def _event(self, type_: str, data: dict[str, Any]) -> EventRecord:
        self._seq += 1
        return EventRecord(self.run.id, self._seq, type_, data, time.time())

    async def _emit(self, type_: str, data: dict[str, Any]) -> None:
        """Queue an event (or keep it for the run's next append: Appends)."""
        await self._appends.add(self._event(type_, data))

    def _check_stored(self, stored: asyncio.Future[bool]) -> None:
        """An event was not stored: this worker lost its lease (another process ended the run) or
        the database refused it. Stop the agent now rather than let it run (and call its model) to
        the end for nothing."""
        if stored.cancelled() or stored.exception() is not None or stored.result():
            return
        self.interrupt("lost")

    def _elapsed_ms(self) -> int:
        return int((time.perf_counter() - self._started) * 1000)

    def _ending(self, event: Finished | ApprovalRequired) -> Outcome:
        t = self._transcript
        t.add_usage(duration_ms=self._elapsed_ms())
        if isinstance(event, ApprovalRequired):
            pending = {
                "tool_call_id": event.tool_call_id,
                "tool_name": event.name,
                "arguments_json": event.arguments_json,
            }
            return Outcome(
                PAUSED,
                PAUSED_EVENT,
                pending,
                result=t.result(),
                pending_action=pending,
                agent_state=event.state,
            )
        u = event.usage
        t.add_usage(
            input_tokens=u.input_tokens,
            output_tokens=u.output_tokens,
            reasoning_tokens=u.reasoning_tokens,
            model_calls=u.model_calls,
        )
        if event.output and not t.output:
            t.output.append(event.output)
        result = t.result(output_json=event.output_json, followups=list(event.followups))
        if event.output:
            result["output"] = event.output
        return Outcome(
            COMPLETED,
            STOP,
            {"state": COMPLETED, "followups": list(event.followups)},
            result=result,
            messages=event.messages,
        )

    def _failed(self, reason: str, message: str) -> Outcome:
        return self._error_outcome(FAILED, reason, message)

    def _cancelled(self) -> Outcome:
        return self._error_outcome(CANCELLED, "CANCELLED", self.stop_message or "the run was cancelled")

    def _error_outcome(self, state: str, reason: str, message: str) -> Outcome:
        self._transcript.add_usage(duration_ms=self._elapsed_ms())
        return Outcome(
            state,
            ERROR,
            {"reason": reason, "message": message},
            result=self._transcript.result(),
            error_reason=reason,
            error_message=message,
        )

    def _released(self) -> Outcome:
        return Outcome(
            QUEUED,
            STATUS,
            {"state": QUEUED, "reason": "RELEASED"},
            release=True,
        )
