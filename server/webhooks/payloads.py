"""The webhook body of a run that just ended, in the format its request chose."""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format

from common.shapes import agent_response, job_result
from server.convert import run_to_proto
from server.store.records import RunRecord


def render(run: RunRecord) -> dict[str, Any]:
    message = run_to_proto(run)
    if run.webhook_format == "JOB":
        return job_result(message)
    if run.webhook_format == "AGENT_RESPONSE":
        return agent_response(message)
    return json_format.MessageToDict(message)
