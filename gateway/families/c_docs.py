"""OpenAPI documentation of family C's bodies (components of /openapi.json, named "webagent.<name>");
the request models are pydantic's own schemas (gateway.families.c_shapes, c_tasks)."""

from __future__ import annotations

from typing import Any


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/webagent.{name}"}


def _nullable(kind: str) -> dict[str, Any]:
    return {"type": [kind, "null"]}


def _object(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    return {"type": "object", "required": required or list(properties), "properties": properties}


_ACTION_FIELDS = {
    "name": {"type": "string"},
    "params": _nullable("object"),
    "is_done": _nullable("boolean"),
    "success": _nullable("boolean"),
    "extracted_content": _nullable("string"),
    "error": _nullable("string"),
    "include_in_memory": _nullable("boolean"),
}
_NUMBERS = {name: {"type": "integer"} for name in ("id", "task_run_id", "step_number", "action_number")}
_STATUS = {"type": "string", "enum": ["success", "failure", "in_progress"]}
_VALIDATION_ERROR = _object(
    {
        "type": {"type": "string"},
        "loc": {"type": "array", "items": {"type": ["string", "integer"]}},
        "msg": {"type": "string"},
        "input": {},
        "ctx": {"type": "object"},
    },
    ["type", "loc", "msg"],
)
RESPONSE_SCHEMAS: dict[str, dict[str, Any]] = {
    "Action": _object(_ACTION_FIELDS, ["name"]),
    "HistoryItem": _object(
        {"description": _nullable("string"), "actions": {**_nullable("array"), "items": _ref("Action")}}
    ),
    "AgentResponse": _object(
        {
            "task_id": _nullable("integer"),
            "task_run_id": _nullable("integer"),
            "history": {**_nullable("array"), "items": _ref("HistoryItem")},
            "result": {"description": "the answer: text, or a JSON value for json answers"},
            "is_done": _nullable("boolean"),
            "is_successful": _nullable("boolean"),
            "status": _STATUS,
        }
    ),
    "AsyncAgentResponse": _object({"task_id": {"type": "integer"}, "task_run_id": {"type": "integer"}}),
    "RunAction": _object({**_NUMBERS, **_ACTION_FIELDS}),
    "RunStep": _object(
        {
            "task_run_id": {"type": "integer"},
            "step_number": {"type": "integer"},
            "description": _nullable("string"),
            "screenshot": _nullable("string"),
            "actions": {"type": "array", "items": _ref("RunAction")},
        }
    ),
    "TaskRun": _object(
        {
            "id": {"type": "integer"},
            "task_id": {"type": "integer"},
            "prompt": {"type": "string"},
            "model": _nullable("string"),
            "provider": _nullable("string"),
            "webhook_url": _nullable("string"),
            "response_format": {"type": "string", "enum": ["text", "json"]},
            "json_schema": {**_nullable("string"), "description": "the schema as JSON text"},
            "result": {**_nullable("string"), "description": "the answer; JSON text for json answers"},
            "is_done": {"type": "boolean"},
            "is_successful": _nullable("boolean"),
            "webhook_result_success": _nullable("boolean"),
            "webhook_result_status_code": _nullable("integer"),
            "webhook_result_message": _nullable("string"),
            "steps": {"type": "array", "items": _ref("RunStep")},
            "status": _STATUS,
        }
    ),
    "CachedWorkflow": _object(
        {
            "success": {"type": "boolean"},
            "workflow": {"type": "object"},
            "message": {"type": "string"},
            "task_id": {"type": "integer"},
        }
    ),
    "ValidationError": _VALIDATION_ERROR,
    "HTTPValidationError": _object({"detail": {"type": "array", "items": _ref("ValidationError")}}),
    "Error": _object(
        {"detail": {"anyOf": [{"type": "string"}, {"type": "array", "items": _ref("ValidationError")}]}}
    ),
}

_TASK_FIELDS = {
    "id": {"type": "integer"},
    "prompt": {"type": "string"},
    "model": _nullable("string"),
    "provider": _nullable("string"),
    "webhook_url": _nullable("string"),
    "response_format": {"type": "string", "enum": ["text", "json"]},
    "json_schema": {**_nullable("string"), "description": "the schema as JSON text"},
    "cached_workflow": _nullable("object"),
    "use_cached_workflow": _nullable("boolean"),
}
RESPONSE_SCHEMAS.update(
    {
        "Task": _object(_TASK_FIELDS),
        "TaskList": _object({"tasks": {"type": "array", "items": _ref("Task")}}),
        "LightTaskRuns": {
            "type": "array",
            "items": _object(
                {
                    "id": {"type": "integer"},
                    "description": {"type": "string"},
                    "is_done": {"type": "boolean"},
                    "is_successful": _nullable("boolean"),
                }
            ),
        },
    }
)
