"""Family C's task updates without I/O (PUT /api/tasks/{task_id}, see gateway.families.c_tasks): the
request, which of its fields change the task as GET shows it, and where the change is kept.

A task is its first run, so its update is kept in that run's metadata (UpdateRun), under TASK_UPDATE:
an object holding only the task fields that were changed, each a string — `prompt`, `model`,
`provider`, `webhook_url` ("" for none), `response_format` and `json_schema` (the schema's JSON
text, "" for none). The first run itself is not changed: GET /api/runs/{its number} still shows
what it ran. Like all metadata it is bounded by the server (64 KiB, see common/limits.py)."""

from __future__ import annotations

import json
from typing import Any, Final

from agentrun.v1 import run_pb2
from pydantic import BaseModel, Field, field_validator

from gateway.families import c_shapes as shapes

TASK_UPDATE: Final = "task_update"
FIELDS: Final = ("prompt", "model", "provider", "webhook_url", "response_format", "json_schema")
_CLEARABLE: Final = ("webhook_url", "json_schema")  # "" removes them from the task
Json = dict[str, Any]


class TaskUpdate(BaseModel):
    """WebAgent's partial update of a task: the fields given change (absent or null: unchanged);
    "" clears webhook_url and json_schema. cached_workflow and use_cached_workflow are accepted and
    ignored (REC C.6.2), as WebAgent's editor sends them with every save."""

    prompt: str | None = Field(None, min_length=3)
    model: str | None = None
    provider: shapes.Provider | None = None
    webhook_url: str | None = None
    response_format: str | None = None
    json_schema: str | dict[Any, Any] | None = Field(
        None, description='a Draft-7 schema, its JSON text, or ""'
    )
    use_cached_workflow: bool | None = None
    cached_workflow: dict[Any, Any] | None = None

    @field_validator("json_schema")
    @classmethod
    def _draft7(cls, value: str | dict[Any, Any] | None) -> Any:
        return value if value == "" else shapes.draft7(value)


def stored(first: run_pb2.Run) -> dict[str, str]:
    """The update kept on a task's first run (string fields of FIELDS only: metadata is anyone's to
    write through UpdateRun, so anything else there is not ours and is left out)."""
    value = first.metadata.fields.get(TASK_UPDATE)
    if value is None or value.WhichOneof("kind") != "struct_value":
        return {}
    fields = value.struct_value.fields
    return {name: fields[name].string_value for name in FIELDS if name in fields and _is_text(fields[name])}


def _is_text(value: Any) -> bool:
    return bool(value.WhichOneof("kind") == "string_value")


def apply(fields: Json, update: dict[str, str]) -> Json:
    """A task's AgentRequest fields with its update applied."""
    result = dict(fields)
    for name, value in update.items():
        if name in _CLEARABLE and value == "":
            result.pop(name, None)
        else:
            result[name] = value
    return result


def changes(request: TaskUpdate, shown: Json) -> dict[str, str]:
    """The fields of `request` that change the task as GET shows it (`shown`). The model and the
    provider change as a pair: the half not given keeps its shown value, so that "provider only"
    does not fall back to WebAgent's default model as a new run would."""
    ignored = {"use_cached_workflow", "cached_workflow"}
    given = request.model_dump(mode="json", exclude_none=True, exclude=ignored)
    result: dict[str, str] = {}
    if "model" in given or "provider" in given:
        pair = (given.get("model", shown["model"]), given.get("provider", shown["provider"]))
        if pair != (shown["model"], shown["provider"]):
            result.update(
                {name: value for name, value in zip(("model", "provider"), pair, strict=True) if value}
            )
    for name in ("prompt", "webhook_url", "response_format"):
        if name in given and given[name] != (shown[name] or ""):
            result[name] = given[name]
    if "json_schema" in given:
        schema = given["json_schema"]
        now = json.loads(shown["json_schema"]) if shown["json_schema"] else ""
        if schema != now:
            result["json_schema"] = schema if schema == "" else json.dumps(schema)
    return result
