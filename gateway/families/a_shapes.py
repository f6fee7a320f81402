"""Family A (Operativus Agent Manager) JSON shapes, both ways and without HTTP: a RunRequest body in
the canonical ProtoJSON form of pb.RunRequest, and a Run or RunEvent as the documented RunResponse,
AgentRun, AgentDefinition and AgentStreamEvent (API_FAMILIES.md §A.2, A.3, A.5)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from agentrun.v1 import run_pb2
from google.protobuf import timestamp_pb2

from common.shapes import iso
from gateway import rules

R = run_pb2
JsonObject = dict[str, Any]

STATUS: dict[int, str] = {
    R.RUN_STATE_QUEUED: "QUEUED",
    R.RUN_STATE_RUNNING: "RUNNING",
    R.RUN_STATE_PAUSED: "PAUSED",
    R.RUN_STATE_COMPLETED: "COMPLETED",
    R.RUN_STATE_FAILED: "FAILED",
    R.RUN_STATE_CANCELLED: "CANCELLED",
}


# ---- out ------------------------------------------------------------------------------------


def agent_definition(agent: run_pb2.Agent) -> JsonObject:
    return {"id": agent.id, "name": agent.name, "description": agent.description, "is_team": agent.is_team}


def model_of(run: run_pb2.Run, agent_model: str) -> str:
    """The model the run used: its override (with the provider, when one was named), else the agent's."""
    options = run.input.options
    if not options.model:
        return agent_model
    if options.provider and ":" not in options.model:
        return f"{options.provider}:{options.model}"
    return options.model


def required_action(pending: run_pb2.PendingAction) -> JsonObject:
    """What needs approval, in the product's TOOL_APPROVAL shape (args stay a JSON string)."""
    return {
        "type": "TOOL_APPROVAL",
        "tool": pending.tool_name,
        "args": pending.arguments_json,
        "approvalId": pending.tool_call_id,
    }


def tool(call: run_pb2.ToolCall) -> JsonObject:
    return {
        "toolName": call.name,
        "toolInput": call.arguments_json or "{}",
        "toolOutput": call.result,
        "durationMs": call.duration_ms,
        "isError": call.is_error,
    }


def run_response(run: run_pb2.Run, model: str) -> JsonObject:
    """RunResponse of a sync run or a continue: the answer only when COMPLETED."""
    usage = run.usage
    metadata: JsonObject = {
        "model": model,
        "usage": {
            "inputTokens": usage.input_tokens,
            "outputTokens": usage.output_tokens,
            "totalTokens": usage.input_tokens + usage.output_tokens,
        },
    }
    if run.input.generate_followups:
        metadata["followUpSuggestions"] = json.dumps(list(run.followups))  # a string, as documented
    if run.state == R.RUN_STATE_PAUSED and run.HasField("pending_action"):
        metadata["requiredAction"] = required_action(run.pending_action)
    return {
        "runId": run.id,
        "sessionId": run.session_id,
        "content": run.output if run.state == R.RUN_STATE_COMPLETED else "",
        "metadata": metadata,
        "tools": [tool(call) for call in run.tool_calls],
        "reasoningSteps": list(run.reasoning_steps),
        "status": STATUS.get(run.state, "RUNNING"),
        "metrics": metrics(run, model),
    }


def metrics(run: run_pb2.Run, model: str) -> JsonObject:
    failed = run.state == R.RUN_STATE_FAILED
    return {
        "inputTokens": run.usage.input_tokens,
        "outputTokens": run.usage.output_tokens,
        "reasoningTokens": run.usage.reasoning_tokens,
        "llmCallCount": run.usage.model_calls,
        "errorCount": sum(call.is_error for call in run.tool_calls) + int(failed),
        "durationMs": _duration_ms(run),
        "model": model,
        "errorType": run.error.reason or None,
        "errorMessage": run.error.message or None,
    }


def _duration_ms(run: run_pb2.Run) -> int:
    if run.usage.duration_ms:
        return run.usage.duration_ms
    if run.HasField("start_time") and run.HasField("complete_time"):
        return max(0, _ms(run.complete_time) - _ms(run.start_time))
    return 0


def agent_run(run: run_pb2.Run) -> JsonObject:
    """AgentRun (single and batch status): `id` and `runId` both, for the UI and the docs."""
    result: JsonObject = {
        "id": run.id,
        "runId": run.id,
        "agentId": run.agent_id,
        "sessionId": run.session_id,
        "userId": run.user_id or None,
        "orgId": run.org_id or None,
        "status": STATUS.get(run.state, "RUNNING"),
        "input": run.input.message,
        "output": run.output if run.state == R.RUN_STATE_COMPLETED else None,
        "createdAt": iso(run.create_time),
        "updatedAt": iso(run.update_time),
        "completedAt": iso(run.complete_time),
        "errorType": run.error.reason or None,
        "errorMessage": run.error.message or None,
        "inputTokens": run.usage.input_tokens,
        "outputTokens": run.usage.output_tokens,
        "reasoningTokens": run.usage.reasoning_tokens,
        "durationMs": _duration_ms(run),
        "requiredAction": None,
    }
    if run.state == R.RUN_STATE_PAUSED and run.HasField("pending_action"):
        result["requiredAction"] = required_action(run.pending_action)
    return result


# ---- stream ---------------------------------------------------------------------------------


@dataclass
class StreamShaper:
    """AgentStreamEvents of one stream. STOP names the session, which only START carries, so the
    shaper remembers it."""

    followups: bool  # the request asked for follow-ups: STOP lists them (maybe empty)
    session_id: str = ""

    def event(self, event: run_pb2.RunEvent) -> JsonObject | None:
        """The AgentStreamEvent of a run event; None for kinds the family does not document."""
        kind = event.type
        data: str
        if kind == R.EVENT_TYPE_START:
            self.session_id = event.start.session_id
            data = _dumps({"runId": event.run_id, "sessionId": self.session_id})
        elif kind in (R.EVENT_TYPE_REASONING_DELTA, R.EVENT_TYPE_CONTENT_DELTA):
            data = event.text
        elif kind == R.EVENT_TYPE_TOOL_START:
            data = _dumps(
                {"toolName": event.tool_call.name, "toolInput": _json_or_text(event.tool_call.arguments_json)}
            )
        elif kind == R.EVENT_TYPE_TOOL_END:
            call = event.tool_call
            data = _dumps(
                {"toolName": call.name, "toolOutput": _json_or_text(call.result), "isError": call.is_error}
            )
        elif kind == R.EVENT_TYPE_PAUSED:
            data = _dumps(
                {
                    **self._ids(event, R.RUN_STATE_PAUSED),
                    "requiredAction": required_action(event.pending_action),
                }
            )
        elif kind == R.EVENT_TYPE_STOP:
            stop = self._ids(event, event.stop.state or R.RUN_STATE_COMPLETED)
            if self.followups:
                stop["followUpSuggestions"] = list(event.stop.followups)
            data = _dumps(stop)
        elif kind == R.EVENT_TYPE_ERROR:
            data = event.error.message or event.error.reason
        else:
            return None
        return stream_event(_KINDS[kind], data, event.create_time)

    def _ids(self, event: run_pb2.RunEvent, state: int) -> JsonObject:
        return {"runId": event.run_id, "sessionId": self.session_id, "status": STATUS[state]}


_KINDS = {
    R.EVENT_TYPE_START: "START",
    R.EVENT_TYPE_REASONING_DELTA: "REASONING_DELTA",
    R.EVENT_TYPE_CONTENT_DELTA: "CONTENT_DELTA",
    R.EVENT_TYPE_TOOL_START: "TOOL_START",
    R.EVENT_TYPE_TOOL_END: "TOOL_END",
    R.EVENT_TYPE_PAUSED: "PAUSED",
    R.EVENT_TYPE_STOP: "STOP",
    R.EVENT_TYPE_ERROR: "ERROR",
}


def stream_event(kind: str, data: str, when: timestamp_pb2.Timestamp | None = None) -> JsonObject:
    """{event, data, timestamp}: epoch milliseconds of the event (now, when it has no time)."""
    stamp = _ms(when) if when is not None and (when.seconds or when.nanos) else int(time.time() * 1000)
    return {"event": kind, "data": data, "timestamp": stamp}


def _json_or_text(text: str) -> Any:
    """Tool arguments and structured results as JSON inside the event; anything else as text."""
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return value if isinstance(value, dict | list) else text


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _ms(ts: timestamp_pb2.Timestamp) -> int:
    return ts.seconds * 1000 + ts.nanos // 1_000_000


# ---- OpenAPI schemas of the shapes above ----------------------------------------------------


def _object(properties: JsonObject, required: tuple[str, ...] = ()) -> JsonObject:
    schema: JsonObject = {"type": "object", "properties": properties}
    if required:
        schema["required"] = list(required)
    return schema


_STR, _INT, _BOOL, _NUM = {"type": "string"}, {"type": "integer"}, {"type": "boolean"}, {"type": "number"}
_OPT_STR: JsonObject = {"type": ["string", "null"]}
_TIME: JsonObject = {"type": ["string", "null"], "format": "date-time"}
_STATUS: JsonObject = {"type": "string", "enum": list(STATUS.values())}
_DECISION: JsonObject = {
    "type": "string",
    "enum": ["APPROVE", "REJECT", "APPROVED", "REJECTED"],
    "description": "case and surrounding blanks do not matter",
}


def _nullable(schema: JsonObject) -> JsonObject:
    """An optional body field: null is the same as leaving it out."""
    return {"anyOf": [schema, {"type": "null"}]}


_REQUIRED_ACTION = _object({"type": _STR, "tool": _STR, "args": _STR, "approvalId": _STR})

SCHEMAS: dict[str, JsonObject] = {
    "AgentDefinition": _object(
        {"id": _STR, "name": _STR, "description": _STR, "is_team": _BOOL}, ("id", "name")
    ),
    "RunRequest": _object(
        {
            "message": {
                **rules.text(rules.MAX_MESSAGE_CHARS, rules.NOT_BLANK, min_chars=1),
                "description": "the prompt; not blank",
            },
            "sessionId": _nullable(rules.text(rules.MAX_ID_CHARS)),
            "userId": _nullable(rules.text(rules.MAX_ID_CHARS)),
            "orgId": _nullable(rules.text(rules.MAX_ID_CHARS)),
            "generateFollowups": _nullable(_BOOL),
            "media": _nullable(
                {
                    "type": "array",
                    "maxItems": rules.MAX_MEDIA_ITEMS,
                    "items": _object(
                        {
                            "type": rules.text(rules.MAX_CHARS["type"], rules.MIME_TYPE),
                            "data": {
                                **rules.text(rules.MAX_CHARS["data"]),
                                "anyOf": [
                                    {"pattern": rules.BASE64, "contentEncoding": "base64"},
                                    {"format": "uri", "pattern": rules.HTTP_URL},
                                ],
                                "description": "base64 content, or a public http(s) URL",
                            },
                        },
                        ("type", "data"),
                    ),
                }
            ),
            "options": _nullable(
                _object(
                    {
                        "model": _nullable(rules.model_name()),
                        "provider": _nullable(rules.text(rules.MAX_CHARS["provider"])),
                        "temperature": _nullable({"type": "number", "minimum": 0, "maximum": 2}),
                        "maxTokens": _nullable({"type": "integer", "minimum": 1, "maximum": rules.MAX_INT32}),
                        "systemPrompt": _nullable(rules.text(rules.MAX_CHARS["system_prompt"])),
                    }
                )
            ),
            "stream": {"description": "ignored"},
        },
        ("message",),
    ),
    "RunResponse": _object(
        {
            "runId": _STR,
            "sessionId": _STR,
            "content": _STR,
            "metadata": _object(
                {
                    "model": _STR,
                    "followUpSuggestions": {"type": "string", "description": "a JSON array, as text"},
                    "requiredAction": _REQUIRED_ACTION,
                    "usage": _object({"inputTokens": _INT, "outputTokens": _INT, "totalTokens": _INT}),
                }
            ),
            "tools": {
                "type": "array",
                "items": _object(
                    {
                        "toolName": _STR,
                        "toolInput": _STR,
                        "toolOutput": _STR,
                        "durationMs": _INT,
                        "isError": _BOOL,
                    }
                ),
            },
            "reasoningSteps": {"type": "array", "items": _STR},
            "status": _STATUS,
            "metrics": _object(
                {
                    **dict.fromkeys(("inputTokens", "outputTokens", "reasoningTokens"), _INT),
                    **dict.fromkeys(("llmCallCount", "errorCount", "durationMs"), _INT),
                    "model": _STR,
                    "errorType": _OPT_STR,
                    "errorMessage": _OPT_STR,
                }
            ),
        },
        ("runId", "sessionId", "content", "status"),
    ),
    "AgentRun": _object(
        {
            **dict.fromkeys(("id", "runId", "agentId", "sessionId"), _STR),
            "status": _STATUS,
            "createdAt": _TIME,
            "updatedAt": _TIME,
            "completedAt": _TIME,
            "output": _OPT_STR,
            "errorMessage": _OPT_STR,
        },
        ("id", "runId", "agentId", "status", "createdAt"),
    ),
    "BackgroundRun": _object({"runId": _STR, "status": {"const": "QUEUED"}}, ("runId", "status")),
    "ContinueRequest": {
        **_object(
            {
                "action": _DECISION,
                "decision": {**_DECISION, "description": "read when `action` is absent"},
                "approvalId": _nullable(rules.text(rules.MAX_CHARS["tool_call_id"])),
                "toolCallId": _nullable(rules.text(rules.MAX_CHARS["tool_call_id"])),
                "reason": _nullable(rules.text(rules.MAX_CHARS["reason"])),
            }
        ),
        "anyOf": [{"required": ["action"]}, {"required": ["decision"]}],
    },
    "StreamEvent": _object(
        {
            "event": {"type": "string", "enum": list(_KINDS.values())},
            "data": _STR,
            "timestamp": {"type": "integer", "description": "Unix epoch milliseconds"},
        },
        ("event", "data", "timestamp"),
    ),
    "Problem": _object(
        {
            "type": _STR,
            "title": _STR,
            "status": _INT,
            "detail": _STR,
            "instance": _OPT_STR,
            "invalidParams": {"type": "array", "items": _object({"name": _STR, "reason": _STR})},
        },
        ("type", "title", "status"),
    ),
}
