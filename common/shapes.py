"""Renderings of a run that the families document and that more than one transport sends: family B's
job result and family C's AgentResponse are both HTTP bodies (gateway) and webhook bodies (server)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from agentrun.v1 import run_pb2
from google.protobuf import json_format, timestamp_pb2

R = run_pb2
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
            return json.loads(run.output)
        except ValueError:
            return json_format.MessageToDict(run.output_json)
    return run.output


def job_result(run: run_pb2.Run) -> dict[str, Any]:
    """Family B's webhook body."""
    started = run.start_time if run.HasField("start_time") else run.create_time
    ended = seconds(run.complete_time) if run.HasField("complete_time") else None
    return {
        "job_id": run.id,
        "status": JOB_STATUS[run.state],
        "result": output_value(run) if run.state == R.RUN_STATE_COMPLETED else None,
        "error": run.error.message if run.state == R.RUN_STATE_FAILED else None,
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
                        "params": {"text": run.output},
                        "is_done": True,
                        "success": ok,
                        "extracted_content": run.output if ok else None,
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
    return {
        "task_id": run.number,
        "task_run_id": run.number,
        "history": history(run),
        "result": output_value(run) if ok else None,
        "is_done": done,
        "is_successful": ok if done else None,
        "status": ("success" if ok else "failure") if done else "in_progress",
    }
