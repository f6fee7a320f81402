"""Family C: WebAgent's self-hosted "Run Agent" API (API_FAMILIES.md §C). POST /api/runs runs the
configured family-C agent (waiting, or in the background), GET /api/runs/{run_id} polls a run by its
integer number. Errors are FastAPI's: {"detail": "..."}, and 422 {"detail": [...]} for bad bodies."""

from __future__ import annotations

import asyncio
import logging
from http import HTTPStatus
from typing import Any

import grpc
from agentrun.v1 import run_pb2
from agentrun.v1 import run_service_pb2 as pb
from aiohttp import web

from common.limits import MAX_RUN_NUMBER
from common.shapes import agent_response
from gateway import keys, openapi
from gateway.errors import ApiError, ErrorRenderer
from gateway.families import c_docs, c_task_update, c_tasks
from gateway.families import c_shapes as shapes
from gateway.registry import Registry
from gateway.upstream import upstream

log = logging.getLogger(__name__)

TAG = "webagent"
# Upstream failures a client can act on keep their status; anything else on a route is its
# documented 500 (WebAgent hides the cause, and so do we: it is logged).
_PASSED_ON = frozenset({401, 403, 413, 429})
_SETTLED = (run_pb2.WEBHOOK_DELIVERY_STATE_DELIVERED, run_pb2.WEBHOOK_DELIVERY_STATE_FAILED)


# ---- errors ---------------------------------------------------------------------------------


def renderer(server_error: str) -> ErrorRenderer:
    """A route's error shape; `server_error` is its fixed 500 detail."""

    def render(error: ApiError) -> web.Response:
        if isinstance(error, shapes.Unprocessable):
            return web.json_response({"detail": list(error.errors)}, status=422)
        if error.status >= 500:
            return web.json_response({"detail": server_error}, status=500)
        return web.json_response({"detail": error.message}, status=error.status, headers=error.headers)

    return render


def render_unknown(error: ApiError) -> web.Response:
    """Unknown routes and methods under family C's paths, worded as Starlette words them."""
    return web.json_response(
        {"detail": HTTPStatus(error.status).phrase}, status=error.status, headers=error.headers
    )


def run_not_found(run_id: str) -> ApiError:
    return ApiError(404, grpc.StatusCode.NOT_FOUND, f"Task run with ID {run_id} not found", "RUN_NOT_FOUND")


# ---- routes ---------------------------------------------------------------------------------


async def create_run(request: web.Request) -> web.Response:
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise ApiError.too_large(request.app[keys.SETTINGS].max_body_bytes) from None
    body, agent_request = shapes.parse_agent_request(raw)
    message = shapes.run_request(agent_request, request.app[keys.SETTINGS].family_c_agent)
    up = upstream(request)
    try:
        run = (await up.call(up.runs.Run, message, request)).run
    except ApiError as exc:
        raise _submit_error(exc, body) from None
    if not message.wait:
        return web.json_response({"task_id": run.number, "task_run_id": run.number})
    # A run that failed is still an answer (status "failure"), not an HTTP error.
    return web.json_response(shapes.sync_response(run))


def _submit_error(error: ApiError, body: dict[str, Any]) -> ApiError:
    if error.code == grpc.StatusCode.INVALID_ARGUMENT:
        rejected = shapes.rejected_fields(error.violations, body)
        if rejected is not None:
            return rejected
    if error.status not in _PASSED_ON:
        log.warning("family C run failed upstream: %s", error)
        return ApiError(500, grpc.StatusCode.INTERNAL, "Error while executing agent", error.reason)
    return error


async def get_run(request: web.Request) -> web.Response:
    run = await _run(request)
    agent_model, delivery = await asyncio.gather(_agent_model(request, run), _delivery(request, run))
    return web.json_response(shapes.task_run(run, agent_model, delivery))


async def set_cached_workflow(request: web.Request) -> web.Response:
    """Optional route (REC C.6.2): cached workflows are accepted and never replayed, so there is
    nothing to build; the run must exist all the same."""
    run = await _run(request)
    workflow: dict[str, list[Any]] = {"parameters": [], "steps": []}
    message = "Cached workflows are not replayed by this server; runs always use the agent"
    task_id = agent_response(run)["task_id"]
    return web.json_response({"success": True, "workflow": workflow, "message": message, "task_id": task_id})


async def _run(request: web.Request) -> run_pb2.Run:
    """The run named by the path's integer; anything else, or no such run, is WebAgent's 404."""
    number = shapes.path_int(request.match_info["run_id"], "run_id")
    run_id = str(number)
    if not 0 < number <= MAX_RUN_NUMBER:  # no run has such a number
        raise run_not_found(run_id)
    up = upstream(request)
    try:
        response = await up.call(up.runs.GetRun, pb.GetRunRequest(run_id=run_id), request)
    except ApiError as exc:
        if exc.code in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
            raise run_not_found(run_id) from None
        raise
    run: run_pb2.Run = response.run
    return run


async def _agent_model(request: web.Request, run: run_pb2.Run) -> str:
    """The agent's default model, to show for runs that did not name one; "" if unknown."""
    if run.input.options.model:
        return ""
    up = upstream(request)
    try:
        response = await up.call(up.runs.GetAgent, pb.GetAgentRequest(agent_id=run.agent_id), request)
    except ApiError:
        return ""  # the agent left the configuration since; the run is still worth showing
    model: str = response.agent.model
    return model


async def _delivery(request: web.Request, run: run_pb2.Run) -> run_pb2.WebhookDelivery | None:
    """The run's webhook delivery, with its attempts once settled (their status codes are shown)."""
    if not run.HasField("webhook_delivery"):
        return None
    delivery = run.webhook_delivery
    if delivery.state not in _SETTLED:
        return delivery
    up = upstream(request)
    listed = await up.call(
        up.runs.ListWebhookDeliveries, pb.ListWebhookDeliveriesRequest(run_id=run.id), request
    )
    return next((d for d in listed.deliveries if d.id == delivery.id), delivery)


# ---- setup ----------------------------------------------------------------------------------


def setup(app: web.Application) -> None:
    registry = app[keys.REGISTRY]
    refs = _schemas(registry)
    # Family C's namespaces only: the rest of /api/ is family A's (its own error shape).
    for prefix in ("/api/runs", "/api/tasks"):
        registry.errors_under(prefix, render_unknown)
    run_id = openapi.parameter(
        "run_id", "path", {"type": "integer", "minimum": 1}, description="the task run id"
    )
    registry.add(
        "POST",
        "/api/runs",
        create_run,
        errors=renderer("Error while executing agent"),
        rpc="Run",
        operation=_operation(
            "webagent_run_agent",
            "Run the agent: wait for the AgentResponse, or get the ids at once",
            {"anyOf": [refs["AgentResponse"], refs["AsyncAgentResponse"]]},
            refs,
            body=refs["AgentRequest"],
        ),
    )
    registry.add(
        "GET",
        "/api/runs/{run_id}",
        get_run,
        errors=renderer("Error while fetching run"),
        rpc="GetRun",
        operation=_operation(
            "webagent_get_run", "A task run with its steps", refs["TaskRun"], refs, [run_id]
        ),
    )
    registry.add(
        "POST",
        "/api/runs/{run_id}/set-as-cached-workflow",
        set_cached_workflow,
        errors=renderer("Error while building workflow"),
        rpc="GetRun",
        operation=_operation(
            "webagent_set_cached_workflow",
            "Accepted; cached workflows are not replayed",
            refs["CachedWorkflow"],
            refs,
            [run_id],
        ),
    )

    _task_routes(registry, refs)


def _task_routes(registry: Registry, refs: dict[str, openapi.Schema]) -> None:
    """The optional /api/tasks routes (see gateway.families.c_tasks)."""
    task_id = openapi.parameter(
        "task_id", "path", {"type": "integer", "minimum": 1}, description="the task id"
    )
    tasks = "/api/tasks"
    for method, path, handler, rpc, failure, name, summary, response, body in (
        (
            "GET",
            tasks,
            c_tasks.list_tasks,
            "ListRuns",
            "Error while fetching tasks",
            "list_tasks",
            "All tasks, newest first",
            refs["TaskList"],
            None,
        ),
        (
            "GET",
            tasks + "/{task_id}",
            c_tasks.get_task,
            "GetRun",
            "Error while fetching task",
            "get_task",
            "A task",
            refs["Task"],
            None,
        ),
        (
            "PUT",
            tasks + "/{task_id}",
            c_tasks.update_task,
            "UpdateRun",
            "Error while updating task",
            "update_task",
            "Change the task's fields the body gives; answers the updated Task",
            refs["Task"],
            refs["TaskUpdateRequest"],
        ),
        (
            "GET",
            tasks + "/{task_id}/runs",
            c_tasks.task_runs,
            "ListRuns",
            "Error while fetching task runs",
            "task_runs",
            "The task's runs, newest first",
            refs["LightTaskRuns"],
            None,
        ),
        (
            "POST",
            tasks + "/{task_id}/runs",
            c_tasks.run_task,
            "Run",
            "Error while running task",
            "run_task",
            "Run the task again with overrides",
            {"anyOf": [refs["AgentResponse"], refs["AsyncAgentResponse"]]},
            refs["TaskRunRequest"],
        ),
    ):
        operation = _operation(
            f"webagent_{name}", summary, response, refs, [] if path == tasks else [task_id], body
        )
        if body is not None:
            operation["requestBody"]["required"] = False
        registry.add(method, path, handler, errors=renderer(failure), rpc=rpc, operation=operation)


def _operation(
    operation_id: str,
    summary: str,
    response: openapi.Schema,
    refs: dict[str, openapi.Schema],
    parameters: list[openapi.Schema] | None = None,
    body: openapi.Schema | None = None,
) -> openapi.Operation:
    result = openapi.operation(
        operation_id,
        summary,
        response=response,
        tags=[TAG],
        parameters=parameters or (),
        body=body,
        errors=refs["Error"],
    )
    responses = result["responses"]
    if body is not None:
        result["requestBody"]["required"] = True
        responses["422"] = {
            "description": "Validation Error",
            "content": openapi.json_content(refs["HTTPValidationError"]),
        }
    if parameters:
        responses["404"] = {
            "description": "Task run not found",
            "content": openapi.json_content(refs["Error"]),
        }
    return result


def _schemas(registry: Registry) -> dict[str, openapi.Schema]:
    template = "#/components/schemas/" + TAG + ".{model}"
    request = shapes.AgentRequest.model_json_schema(ref_template=template)
    for name, schema in request.pop("$defs", {}).items():
        registry.schemas.add(f"{TAG}.{name}", schema)
    task_request = c_tasks.TaskRunRequest.model_json_schema(ref_template=template)
    task_update = c_task_update.TaskUpdate.model_json_schema(ref_template=template)
    for model_schema in (task_request, task_update):
        for name, schema in model_schema.pop("$defs", {}).items():
            registry.schemas.add(f"{TAG}.{name}", schema)
    schemas = {
        "AgentRequest": request,
        "TaskRunRequest": task_request,
        "TaskUpdateRequest": task_update,
        **c_docs.RESPONSE_SCHEMAS,
    }
    return {name: registry.schemas.add(f"{TAG}.{name}", schema) for name, schema in schemas.items()}
