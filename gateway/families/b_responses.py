"""Family B (PraisonAI async jobs) responses without HTTP: a run rendered as the documented job
bodies (status, submitted, result, list) and the job's progress derived from the run."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

from agentrun.v1 import run_pb2

from common.shapes import JOB_STATUS, TERMINAL, iso, job_error, job_result

R = run_pb2
Json = dict[str, Any]

RETRY_AFTER: Final = {"queued": 2, "running": 5}
CANCEL_MESSAGE: Final = "Job was cancelled"


@dataclass(frozen=True)
class Progress:
    percentage: float
    current_step: str | None
    steps_completed: int = 0


QUEUED = Progress(0.0, "Queued")
INITIALIZING = Progress(10.0, "Initializing agent")
WORKING = Progress(30.0, "Running agent workflow")
PAUSED_STEP = "Waiting for approval"


def progress(run: R.Run) -> Progress:
    """Derived from the run: queued 0, started 10, producing output 30, succeeded 100; a paused
    run waits for approval; failed and cancelled runs keep where they got to."""
    tools = sum(1 for call in run.tool_calls if call.result or call.is_error)
    if run.state == R.RUN_STATE_COMPLETED:
        return Progress(100.0, "Completed", tools)
    if run.state == R.RUN_STATE_QUEUED:
        return Progress(QUEUED.percentage, QUEUED.current_step, tools)
    # Events besides START (and the terminal one) mean the agent produced something.
    produced = run.last_seq - 1 - (1 if run.state in TERMINAL else 0) > 0
    reached = WORKING if produced else INITIALIZING if run.HasField("start_time") else QUEUED
    step = PAUSED_STEP if run.state == R.RUN_STATE_PAUSED else reached.current_step
    return Progress(reached.percentage, step, tools)


def job_status(run: R.Run) -> Json:
    """JobStatusResponse: nested progress (router) and flat progress_* (jobs-api.mdx) both."""
    status = JOB_STATUS[run.state]
    now = progress(run)
    return {
        "job_id": run.id,
        "status": status,
        "progress": {
            "percentage": now.percentage,
            "current_step": now.current_step,
            "steps_completed": now.steps_completed,
            "steps_total": None,
        },
        "progress_percentage": now.percentage,
        "progress_step": now.current_step,
        "created_at": iso(run.create_time),
        "started_at": iso(run.start_time),
        "completed_at": iso(run.complete_time),
        "agent_id": run.agent_id or None,
        "run_id": run.id,
        "session_id": run.session_id or None,
        "error": job_error(run),
        "retry_after": RETRY_AFTER.get(status),
    }


def job_submitted(run: R.Run, poll_url: str) -> Json:
    return {
        "job_id": run.id,
        "status": JOB_STATUS[run.state],
        "created_at": iso(run.create_time),
        "poll_url": poll_url,
        "stream_url": f"{poll_url}/stream",
    }


def metrics(run: R.Run) -> Json:
    usage = run.usage
    return {
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "reasoning_tokens": usage.reasoning_tokens,
        "total_tokens": usage.input_tokens + usage.output_tokens,
        "model_calls": usage.model_calls,
        "tool_calls": len(run.tool_calls),
        "tool_ms": usage.tool_ms,
        "duration_ms": usage.duration_ms,
    }


def job_result_response(run: R.Run) -> Json:
    """JobResultResponse of a finished run (the webhook body's fields plus timing and metrics)."""
    base = job_result(run)
    return {
        "job_id": run.id,
        "status": base["status"],
        "result": base["result"],
        "result_url": None,
        "metrics": metrics(run),
        "created_at": iso(run.create_time),
        "started_at": iso(run.start_time),
        "completed_at": base["completed_at"],
        "duration_seconds": base["duration_seconds"],
        "error": job_error(run),
    }


def job_list(runs: Iterable[R.Run], total: int, page: int, page_size: int) -> Json:
    return {"jobs": [job_status(r) for r in runs], "total": total, "page": page, "page_size": page_size}
