"""Family C's tasks (API_FAMILIES.md §C.1, optional): every POST /api/runs makes a task whose id is
its first run's number; POST /api/tasks/{task_id}/runs runs it again with overrides (those runs
name their task in their metadata). Tasks are read from their runs, so they cannot be edited in
place: PUT /api/tasks/{task_id} is not served (405; it needs the store to keep task definitions
apart from runs)."""

from __future__ import annotations

import asyncio
import json
from typing import Any, Final

import grpc
from agentrun.v1 import run_pb2
from agentrun.v1 import run_service_pb2 as pb
from aiohttp import web
from google.protobuf import json_format
from pydantic import BaseModel, Field, ValidationError, field_validator

from common.limits import MAX_INTEGER
from common.shapes import TASK_ID, TERMINAL
from gateway import keys
from gateway.errors import ApiError
from gateway.families import c_schema
from gateway.families import c_shapes as shapes
from gateway.upstream import upstream

MAX_LISTED: Final = 1000  # the newest tasks (and runs of a task) a list shows
Json = dict[str, Any]


class TaskRunRequest(BaseModel):
    """WebAgent's overrides of a stored task for one more run: every field optional."""

    prompt: str | None = Field(None, min_length=3)
    model: str | None = None
    provider: shapes.Provider | None = None
    wait_for_completion: bool | None = True
    webhook_url: str | None = None
    response_format: str | None = None
    json_schema: str | dict[Any, Any] | None = None
    use_cached_workflow: bool | None = None

    @field_validator("json_schema")
    @classmethod
    def _draft7(cls, value: str | dict[Any, Any] | None) -> Any:
        return shapes.draft7(value)


def _detail(status: int, detail: str) -> ApiError:
    code = grpc.StatusCode.NOT_FOUND if status == 404 else grpc.StatusCode.FAILED_PRECONDITION
    return ApiError(status, code, detail, code.name)


async def _task_run(request: web.Request) -> run_pb2.Run:
    """The first run of the task the path names (404 for anything else)."""
    number = shapes.path_int(request.match_info["task_id"], "task_id")
    missing = _detail(404, f"Task with ID {number} not found")
    if not 0 < number <= MAX_INTEGER:
        raise missing
    up = upstream(request)
    try:
        run: run_pb2.Run = (await up.call(up.runs.GetRun, pb.GetRunRequest(run_id=str(number)), request)).run
    except ApiError as exc:
        if exc.code in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
            raise missing from None
        raise
    family = run.metadata.fields.get("family")
    if family is None or family.string_value != "C" or TASK_ID in run.metadata.fields:
        raise missing
    return run


def task(run: run_pb2.Run, agent_model: str) -> Json:
    """Task: what its first run was asked (the agent's model where it named none)."""
    shown = shapes.task_run(run, agent_model, None)
    fields = ("model", "provider", "webhook_url", "response_format", "json_schema")
    return {
        "id": run.number,
        "prompt": run.input.message,
        **{name: shown[name] for name in fields},
        "cached_workflow": None,
        "use_cached_workflow": False,
    }


async def _agent_models(request: web.Request, runs: list[run_pb2.Run]) -> dict[str, str]:
    up = upstream(request)

    async def model(agent_id: str) -> str:
        try:
            agent = (await up.call(up.runs.GetAgent, pb.GetAgentRequest(agent_id=agent_id), request)).agent
        except ApiError:
            return ""  # the agent left the configuration since
        return str(agent.model)

    ids = sorted({run.agent_id for run in runs})
    return dict(zip(ids, await asyncio.gather(*(model(i) for i in ids)), strict=True))


async def list_tasks(request: web.Request) -> web.Response:
    up = upstream(request)
    message = pb.ListRunsRequest(metadata={**shapes.FAMILY, **shapes.NEW_TASK}, page_size=MAX_LISTED)
    runs = list((await up.call(up.runs.ListRuns, message, request)).runs)
    models = await _agent_models(request, runs)
    return web.json_response({"tasks": [task(run, models[run.agent_id]) for run in runs]})


async def get_task(request: web.Request) -> web.Response:
    run = await _task_run(request)
    models = await _agent_models(request, [run])
    return web.json_response(task(run, models[run.agent_id]))


async def task_runs(request: web.Request) -> web.Response:
    """LightTaskRun[] of the task, newest first."""
    first = await _task_run(request)
    up = upstream(request)
    message = pb.ListRunsRequest(
        metadata={**shapes.FAMILY, TASK_ID: str(first.number)}, page_size=MAX_LISTED - 1
    )
    runs = [*(await up.call(up.runs.ListRuns, message, request)).runs, first]
    return web.json_response([_light(run) for run in runs])


def _light(run: run_pb2.Run) -> Json:
    done = run.state in TERMINAL
    successful = run.state == run_pb2.RUN_STATE_COMPLETED if done else None
    return {"id": run.number, "description": run.input.message, "is_done": done, "is_successful": successful}


async def run_task(request: web.Request) -> web.Response:
    """One more run of the task, its fields overridden by the body's."""
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise ApiError.too_large(request.app[keys.SETTINGS].max_body_bytes) from None
    body, overrides = shapes.parse_body(raw or b"{}", TaskRunRequest)
    first = await _task_run(request)
    if overrides.use_cached_workflow:
        raise _detail(400, f"Task {first.number} has no cached workflow")
    agent_request = _merged(first, overrides)
    message = shapes.run_request(agent_request, first.agent_id, task_id=first.number)
    up = upstream(request)
    try:
        run = (await up.call(up.runs.Run, message, request)).run
    except ApiError as exc:
        rejected = shapes.rejected_fields(exc.violations, body) if exc.violations else None
        if rejected is not None:
            raise rejected from None
        raise
    if not message.wait:
        return web.json_response({"task_id": first.number, "task_run_id": run.number})
    return web.json_response(shapes.sync_response(run))


def _merged(first: run_pb2.Run, overrides: TaskRunRequest) -> shapes.AgentRequest:
    """The task as its first run asked it, with the overrides given (null: not overridden)."""
    stored: Json = {"prompt": first.input.message}
    options = first.input.options
    if options.model:
        stored["model"] = options.model
    if options.provider:
        stored["provider"] = options.provider
    if first.webhook_url:
        stored["webhook_url"] = first.webhook_url
    if first.input.response_format == run_pb2.RESPONSE_FORMAT_JSON:
        stored["response_format"] = "json"
    original = first.metadata.fields.get(c_schema.ORIGINAL)
    if original is not None and original.string_value:
        stored["json_schema"] = json.loads(original.string_value)
    elif first.input.HasField("json_schema"):
        stored["json_schema"] = shapes.whole_numbers(json_format.MessageToDict(first.input.json_schema))
    given = overrides.model_dump(exclude_unset=True, exclude={"use_cached_workflow"}, mode="json")
    fields = {**stored, **{k: v for k, v in given.items() if v is not None}}
    fields["wait_for_completion"] = overrides.wait_for_completion is not False
    try:
        return shapes.AgentRequest.model_validate(fields)
    except ValidationError as exc:  # the stored task no longer passes (e.g. a schema since refused)
        errors = [
            {**e, "loc": ["body", *e["loc"]]} for e in exc.errors(include_url=False, include_context=False)
        ]
        raise shapes.Unprocessable.of(errors) from None
