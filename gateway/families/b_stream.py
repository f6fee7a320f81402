"""Family B's (PraisonAI async jobs) job stream without HTTP: a run's events followed as the
stream's named events, and the data each frame carries. Frames are built in gateway.families.b."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any, Final

from agentrun.v1 import run_pb2

from common.shapes import JOB_STATUS, TERMINAL, output_value, timed_out
from gateway.families.b_responses import (
    CANCEL_MESSAGE,
    INITIALIZING,
    PAUSED_STEP,
    QUEUED,
    WORKING,
    Progress,
)

R = run_pb2
Json = dict[str, Any]
Named = tuple[str, Json]  # (SSE event name, payload)
# Every `event:` name a job stream sends (and, last, the unnamed `data: [DONE]`).
EVENT_NAMES: Final = ("status", "progress", "heartbeat", "result", "error", "cancelled", "complete")


def envelope(name: str, payload: Json) -> Json:
    """Stream data for both documented client styles: the router's flat fields and the docs'
    {"event", "data"} wrapper (whose progress spells the step `current_step`)."""
    if name == "progress":
        flat = {"percentage": payload["percentage"], "step": payload["current_step"]}
        return {"event": name, "data": payload, **flat}
    return {"event": name, "data": payload, **payload}


def _now_iso() -> str:
    return datetime.now(UTC).isoformat()


class JobStream:
    """Follows one run's events as the job stream's named events: `status` on each change,
    `progress` on each change of percentage or step, the terminal `result`/`error`/`cancelled`,
    and `heartbeat` when nothing was sent for `heartbeat_s` (also while events arrive that show
    the client nothing). Frames for events up to a resume point are computed and dropped."""

    def __init__(self, run: R.Run, heartbeat_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.job_id = run.id
        self._timeout = run.timeout
        self._started = run.HasField("start_time")
        self._finished = run if run.state in TERMINAL else None
        self._heartbeat_s = heartbeat_s
        self._clock = clock
        self._last_sent = clock()
        self._status: str | None = None
        self._progress: Progress | None = None
        self._produced = False
        self._text: list[str] = []
        self.final_status: str | None = None

    def seed(self, events: Iterable[R.RunEvent]) -> None:
        for event in events:
            self._observe(event)

    def frames(self, event: R.RunEvent) -> list[Named]:
        out = self._observe(event)
        if out:
            self._last_sent = self._clock()
        elif self._clock() - self._last_sent >= self._heartbeat_s:
            out = [self.heartbeat()]
        return out

    def heartbeat(self) -> Named:
        self._last_sent = self._clock()
        return ("heartbeat", {"timestamp": _now_iso()})

    def end(self) -> list[Named]:
        """`complete` once the job is finished (also when a resumed stream had nothing left)."""
        if self.final_status is None:
            return []
        return [("complete", {"status": self.final_status, "job_id": self.job_id})]

    def _observe(self, event: R.RunEvent) -> list[Named]:
        kind = event.type
        if kind == R.EVENT_TYPE_START:
            return self._move("running", INITIALIZING) if self._started else self._move("queued", QUEUED)
        if kind == R.EVENT_TYPE_STATUS:
            status = JOB_STATUS[event.status.state]
            return self._move(status, self._running() if status == "running" else self._progress)
        if kind == R.EVENT_TYPE_PAUSED:
            now = self._progress or self._running()
            return self._move("running", Progress(now.percentage, PAUSED_STEP))
        if kind == R.EVENT_TYPE_STOP:
            return [
                *self._finish("succeeded", Progress(100.0, "Completed")),
                ("result", {"result": self._result()}),
            ]
        if kind == R.EVENT_TYPE_ERROR:
            if event.error.reason == "CANCELLED":
                return [
                    *self._finish("cancelled", self._progress),
                    ("cancelled", {"message": CANCEL_MESSAGE}),
                ]
            error = (
                timed_out(self._timeout) if event.error.reason == "DEADLINE_EXCEEDED" else event.error.message
            )
            return [*self._finish("failed", self._progress), ("error", {"error": error})]
        if kind == R.EVENT_TYPE_CONTENT_DELTA:
            self._text.append(event.text)
        self._produced = True  # reasoning, content, tool calls
        return self._move("running", WORKING)

    def _running(self) -> Progress:
        return WORKING if self._produced else INITIALIZING

    def _finish(self, status: str, now: Progress | None) -> list[Named]:
        self.final_status = status
        return self._move(status, now)

    def _move(self, status: str, now: Progress | None) -> list[Named]:
        out: list[Named] = []
        if status != self._status:
            self._status = status
            out.append(("status", {"status": status, "job_id": self.job_id}))
        if now is not None and now != self._progress:
            self._progress = now
            out.append(("progress", {"percentage": now.percentage, "current_step": now.current_step}))
        return out

    def _result(self) -> Any:
        # A run that had finished before the client attached has its answer at hand; otherwise
        # the answer is the concatenated content deltas (the server's output is built the same way).
        if self._finished is not None and self._finished.state == R.RUN_STATE_COMPLETED:
            return output_value(self._finished)
        return "".join(self._text)
