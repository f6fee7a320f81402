"""Family C's tasks (API_FAMILIES.md §C.1, optional): every POST /api/runs makes a task whose id is
its first run's number; POST /api/tasks/{task_id}/runs runs it again with overrides (those runs
name their task in their metadata). PUT /api/tasks/{task_id} changes a task: the change is kept in
its first run's metadata (UpdateRun; the shape is gateway.families.c_task_update's), and every read
and run of the task applies it."""

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

from common.limits import MAX_RUN_NUMBER
from common.shapes import TASK_ID, TERMINAL
from gateway import keys
from gateway.errors import ApiError
from gateway.families import c_schema
from gateway.families import c_shapes as shapes
from gateway.families import c_task_update as updates
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
    if not 0 < number <= MAX_RUN_NUMBER:
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


def task(first: run_pb2.Run, agent_model: str) -> Json:
    """Task: what its first run was asked, updated (the agent's model where it names none)."""
    run = _as_updated(first)
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
    """The task as it stands, with the overrides given (null: not overridden)."""
    given = overrides.model_dump(exclude_unset=True, exclude={"use_cached_workflow"}, mode="json")
    fields = {**_definition(first), **{k: v for k, v in given.items() if v is not None}}
    fields["wait_for_completion"] = overrides.wait_for_completion is not False
    return _agent_request(fields)


def _as_updated(first: run_pb2.Run) -> run_pb2.Run:
    """The task's first run as the task now stands: what a run of it would be asked (the first
    run itself while the task was never changed, or when its change no longer passes)."""
    if not updates.stored(first):
        return first
    try:
        fields = shapes.AgentRequest.model_validate(_definition(first))
    except ValidationError:
        return first
    message = shapes.run_request(fields, first.agent_id)
    run = run_pb2.Run(number=first.number, agent_id=first.agent_id, input=message.input)
    run.webhook_url = message.webhook_url
    run.metadata.CopyFrom(message.metadata)
    return run


def _definition(first: run_pb2.Run) -> Json:
    """The task's AgentRequest fields: its first run's, with the task's update."""
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
    return updates.apply(stored, updates.stored(first))


def _agent_request(fields: Json) -> shapes.AgentRequest:
    try:
        return shapes.AgentRequest.model_validate(fields)
    except ValidationError as exc:  # the stored task no longer passes (e.g. a schema since refused)
        errors = [
            {**e, "loc": ["body", *e["loc"]]} for e in exc.errors(include_url=False, include_context=False)
        ]
        raise shapes.Unprocessable.of(errors) from None


async def update_task(request: web.Request) -> web.Response:
    """Change the fields the body gives (a partial update) and answer the Task as it now stands."""
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise ApiError.too_large(request.app[keys.SETTINGS].max_body_bytes) from None
    body, update = shapes.parse_body(raw or b"{}", updates.TaskUpdate)
    first = await _task_run(request)
    models = await _agent_models(request, [first])
    changed = updates.changes(update, task(first, models[first.agent_id]))
    if changed:
        first = await _store_update(request, first, {**updates.stored(first), **changed}, body)
    return web.json_response(task(first, models[first.agent_id]))


async def _store_update(
    request: web.Request, first: run_pb2.Run, update: dict[str, str], body: Json
) -> run_pb2.Run:
    """Keep the task's new update on its first run, once the task it makes still passes as a run
    request would (422 on the body otherwise, as for a run)."""
    candidate = run_pb2.Run()
    candidate.CopyFrom(first)
    candidate.metadata.update({updates.TASK_UPDATE: update})
    _agent_request(_definition(candidate))
    message = pb.UpdateRunRequest(run=run_pb2.Run(id=first.id, metadata=candidate.metadata))
    message.update_mask.paths.append("metadata")
    up = upstream(request)
    try:
        updated: run_pb2.Run = (await up.call(up.runs.UpdateRun, message, request)).run
    except ApiError as exc:
        if exc.code == grpc.StatusCode.NOT_FOUND:  # deleted meanwhile
            raise _detail(404, f"Task with ID {first.number} not found") from None
        if exc.code == grpc.StatusCode.INVALID_ARGUMENT and exc.violations:  # e.g. over 64 KiB
            raise _refused(exc, body) from None
        raise
    return updated


def _refused(error: ApiError, body: Json) -> shapes.Unprocessable:
    """The server's refusal of the task's new metadata (its size, mostly) as a 422 on the body."""
    problems = "; ".join(v.description for v in error.violations)
    item = {"type": "value_error", "loc": ["body"], "msg": f"Value error, the task's fields are {problems}"}
    return shapes.Unprocessable.of([{**item, "input": body, "ctx": {"error": {}}}])
