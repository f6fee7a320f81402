"""Renderings of a run that the families document and that more than one transport sends: family B's
job result and family C's AgentResponse are both HTTP bodies (gateway) and webhook bodies (server)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from agentrun.v1 import run_pb2
from google.protobuf import duration_pb2, json_format, timestamp_pb2

R = run_pb2
# Run metadata flag: the answer is {"result": <answer>} (family C wraps schemas that do not describe
# an object, since models answer structured output as an object) and is shown unwrapped.
WRAPPED_ANSWER = "wrapped_answer"
# Run metadata of a family C run made from an existing task: the task's id (its first run's number).
TASK_ID = "task_id"
TERMINAL = (R.RUN_STATE_COMPLETED, R.RUN_STATE_FAILED, R.RUN_STATE_CANCELLED)
JOB_STATUS = {
    R.RUN_STATE_QUEUED: "queued",
    R.RUN_STATE_RUNNING: "running",
    R.RUN_STATE_PAUSED: "running",  # family B has no human-in-the-loop state
    R.RUN_STATE_COMPLETED: "succeeded",
    R.RUN_STATE_FAILED: "failed",
    R.RUN_STATE_CANCELLED: "cancelled",
}


def iso(ts: timestamp_pb2.Timestamp) -> str | None:
    """ISO-8601 UTC, or None for an unset timestamp."""
    if not ts.seconds and not ts.nanos:
        return None
    return datetime.fromtimestamp(ts.seconds + ts.nanos / 1e9, UTC).isoformat()


def seconds(ts: timestamp_pb2.Timestamp) -> float:
    return ts.seconds + ts.nanos / 1e9


def output_value(run: run_pb2.Run) -> Any:
    """The answer: the JSON value for JSON answers, else the text."""
    if run.HasField("output_json"):
        # From the stored text, not the Struct: a Struct turns every integer into a double.
        try:
            value = json.loads(run.output)
        except ValueError:
            value = json_format.MessageToDict(run.output_json)
        return value.get("result") if wrapped(run) and isinstance(value, dict) else value
    return run.output


def answer_text(run: run_pb2.Run) -> str:
    """The answer as text: the output, or the JSON text of a wrapped answer's inner value."""
    return json.dumps(output_value(run)) if wrapped(run) and run.HasField("output_json") else run.output


def wrapped(run: run_pb2.Run) -> bool:
    flag = run.metadata.fields.get(WRAPPED_ANSWER)
    return flag is not None and flag.bool_value


def timed_out(timeout: duration_pb2.Duration) -> str:
    """Family B's error text of a job that ran out of time."""
    limit = timeout.seconds + timeout.nanos / 1e9
    return f"Job timed out after {int(limit) if limit.is_integer() else limit}s"


def job_error(run: run_pb2.Run, *, cancelled: bool = True) -> str | None:
    """Family B's `error` of a failed (or, with `cancelled`, cancelled) job; None otherwise."""
    states = (R.RUN_STATE_FAILED, R.RUN_STATE_CANCELLED) if cancelled else (R.RUN_STATE_FAILED,)
    if run.state not in states:
        return None
    if run.error.reason == "DEADLINE_EXCEEDED":
        return timed_out(run.timeout)
    return run.error.message or None


def job_result(run: run_pb2.Run) -> dict[str, Any]:
    """Family B's webhook body."""
    started = run.start_time if run.HasField("start_time") else run.create_time
    ended = seconds(run.complete_time) if run.HasField("complete_time") else None
    return {
        "job_id": run.id,
        "status": JOB_STATUS[run.state],
        "result": output_value(run) if run.state == R.RUN_STATE_COMPLETED else None,
        "error": job_error(run, cancelled=False),
        "completed_at": iso(run.complete_time),
        "duration_seconds": round(ended - seconds(started), 3) if ended is not None else None,
    }


def _params(arguments_json: str) -> Any:
    try:
        return json.loads(arguments_json) if arguments_json else {}
    except ValueError:
        return {"raw": arguments_json}


def history(run: run_pb2.Run) -> list[dict[str, Any]]:
    """Family C's steps: one per tool call, then the final answer once the run ended."""
    steps = [
        {
            "description": f"Called {call.name}",
            "actions": [
                {
                    "name": call.name,
                    "params": _params(call.arguments_json),
                    "is_done": False,
                    "success": not call.is_error,
                    "extracted_content": call.result,
                    "error": call.result if call.is_error else None,
                    "include_in_memory": True,
                }
            ],
        }
        for call in run.tool_calls
    ]
    if run.state in TERMINAL:
        ok = run.state == R.RUN_STATE_COMPLETED
        steps.append(
            {
                "description": "Final answer" if ok else "Stopped",
                "actions": [
                    {
                        "name": "done",
                        "params": {"text": answer_text(run)},
                        "is_done": True,
                        "success": ok,
                        "extracted_content": answer_text(run) if ok else None,
                        "error": None if ok else run.error.message,
                        "include_in_memory": True,
                    }
                ],
            }
        )
    return steps


def agent_response(run: run_pb2.Run) -> dict[str, Any]:
    """Family C's AgentResponse (the sync reply and the webhook body)."""
    done = run.state in TERMINAL
    ok = run.state == R.RUN_STATE_COMPLETED
    task = run.metadata.fields.get(TASK_ID)
    return {
        "task_id": int(task.string_value) if task is not None and task.string_value.isdigit() else run.number,
        "task_run_id": run.number,
        "history": history(run),
        "result": output_value(run) if ok else None,
        "is_done": done,
        "is_successful": ok if done else None,
        "status": ("success" if ok else "failure") if done else "in_progress",
    }
