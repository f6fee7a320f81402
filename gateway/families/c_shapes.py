"""Family C (WebAgent "Run Agent") without I/O: the AgentRequest as WebAgent's server declares it,
its FastAPI-style 422 bodies, the RunRequest it becomes, and the task-run rendering GET serves."""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeVar

import grpc
from agentrun.v1 import run_pb2
from agentrun.v1 import run_service_pb2 as pb
from google.protobuf import json_format
from jsonschema import Draft7Validator, SchemaError
from pydantic import BaseModel, Field, TypeAdapter, ValidationError, field_validator

from common.shapes import TASK_ID, agent_response, answer_text
from gateway import codec, rules
from gateway.errors import ApiError, FieldViolation
from gateway.families import c_schema

R = run_pb2
Body = TypeVar("Body", bound=BaseModel)
# Server field paths -> AgentRequest fields, for server-side rejections of what the client sent.
_BODY_FIELDS = {
    "input.message": "prompt",
    "input.options.model": "model",
    "input.options.provider": "provider",
    "input.response_format": "response_format",
    "input.json_schema": "json_schema",
    "webhook_url": "webhook_url",
}
# Action ids are integers in WebAgent's store; ours are derived from the run number (see _steps).
_ACTIONS_PER_RUN = 1_000_000
# WebAgent's documented defaults, applied to the half of a model/provider override not sent.
DEFAULT_MODEL, DEFAULT_PROVIDER = "o3", "openai"
# What family C's runs carry in their metadata: a task's first run is NEW_TASK (the task's id is
# its number), its other runs name the task (TASK_ID).
FAMILY: dict[str, str] = {"family": "C"}
NEW_TASK: dict[str, str] = {"task": "new"}


class Provider(StrEnum):
    openai = "openai"
    deepseek = "deepseek"
    anthropic = "anthropic"
    google = "google"
    groq = "groq"
    mistral = "mistral"
    together = "together"


_WEBHOOK_URL: dict[str, Any] = {
    "anyOf": [{"maxLength": 0}, {"format": "uri", "pattern": rules.HTTP_URL}],
    **rules.text(rules.MAX_URL_CHARS),
}
_ANSWER_SCHEMA: dict[str, Any] = {k: v for k, v in rules.ANSWER_SCHEMA.items() if k != "description"}
_ANSWER_SCHEMA_TEXT: dict[str, Any] = {
    "type": "string",
    "contentMediaType": "application/json",
    "contentSchema": _ANSWER_SCHEMA,
}


# Field for field WebAgent's own model, so pydantic words the 422s exactly as WebAgent's server does.
class AgentRequest(BaseModel):
    """What to run; `prompt` is required, everything else overrides a default."""

    # json_schema_extra: what the server checks beyond WebAgent's model, documented (not validated
    # here: the server's refusals come back as 422s on the same fields, see rejected_fields).
    prompt: str = Field(
        min_length=3,
        description="The task to be performed by the agent",
        json_schema_extra={"maxLength": rules.MAX_MESSAGE_CHARS, "pattern": rules.NOT_BLANK},
    )
    model: str = Field("o3", json_schema_extra=rules.model_name())
    provider: Provider = Provider.openai
    wait_for_completion: bool | None = Field(
        True, description="false: run in the background and answer with the ids at once"
    )
    webhook_url: str | None = Field(
        None,
        description="a public http(s) URL the AgentResponse is POSTed to when the run ends",
        json_schema_extra={"anyOf": [_WEBHOOK_URL, {"type": "null"}]},
    )
    response_format: str | None = Field("text", description="text or json")
    json_schema: str | dict[Any, Any] | None = Field(
        None,
        description="Draft-7 JSON Schema of the result, or its JSON text; local $refs are written "
        "out, and a result that is not an object is asked for as {result: ...} and unwrapped",
        json_schema_extra={"anyOf": [_ANSWER_SCHEMA, _ANSWER_SCHEMA_TEXT, {"type": "null"}]},
    )
    # WebAgent's "internal" replay fields: accepted and ignored (REC C.6.2).
    use_cached_workflow: bool | None = None
    cached_workflow: dict[Any, Any] | None = None

    @field_validator("json_schema")
    @classmethod
    def _draft7(cls, value: str | dict[Any, Any] | None) -> Any:
        return draft7(value)

    @property
    def wants_json(self) -> bool:
        # WebAgent's engine shapes the answer by the schema whatever response_format says.
        return self.json_schema is not None or (self.response_format or "").lower() == "json"


def draft7(value: str | dict[Any, Any] | None) -> Any:
    """A json_schema field: its JSON text parsed, checked as Draft 7 (ValueError if it is not)."""
    schema: Any = value
    if isinstance(value, str):
        try:
            schema = codec.loads(value)
        except codec.BadJson as exc:
            raise ValueError(f"Invalid JSON string: {exc.problem}") from None
        if not value.strip():
            raise ValueError("Invalid JSON string: Expecting value")
    if schema is None:
        return None
    try:
        Draft7Validator.check_schema(schema)
        c_schema.answer_schema(schema)  # every valid schema is usable, bar broken references
    except SchemaError as exc:
        raise ValueError(f"Invalid JSON Schema: {exc.message}") from None
    except ValueError as exc:
        raise ValueError(f"Unusable JSON Schema: {exc}") from None
    return schema  # a dict, or true / false


@dataclass(eq=False)
class Unprocessable(ApiError):
    """A 422 in FastAPI's shape: {"detail": [{type, loc, msg, input, ctx?}, ...]}."""

    errors: tuple[dict[str, Any], ...] = ()

    @classmethod
    def of(cls, errors: list[dict[str, Any]]) -> Unprocessable:
        return cls(
            422,
            grpc.StatusCode.INVALID_ARGUMENT,
            "validation error",
            "VALIDATION_ERROR",
            errors=tuple(errors),
        )


def parse_agent_request(raw: bytes) -> tuple[dict[str, Any], AgentRequest]:
    return parse_body(raw, AgentRequest)


def parse_body(raw: bytes, model: type[Body]) -> tuple[dict[str, Any], Body]:
    """The body (as sent) and the request, read as FastAPI reads them: malformed JSON and absent
    bodies are 422s too."""
    try:
        body = codec.loads(raw)
    except codec.BadJson as exc:
        if exc.not_text:
            message = "There was an error parsing the body"
            raise ApiError(400, grpc.StatusCode.INVALID_ARGUMENT, message) from None
        error = {"type": "json_invalid", "loc": ["body", exc.position], "msg": "JSON decode error"}
        raise Unprocessable.of([{**error, "input": {}, "ctx": {"error": exc.problem}}]) from None
    if body is None:
        raise Unprocessable.of([{"type": "missing", "loc": ["body"], "msg": "Field required", "input": None}])
    try:
        return body, model.model_validate(body, from_attributes=True)
    except ValidationError as exc:
        raise Unprocessable.of([_fastapi_error(e) for e in exc.errors(include_url=False)]) from None


_INT = TypeAdapter(int)


def path_int(raw: str, name: str) -> int:
    """A path parameter FastAPI declares `int`, parsed as pydantic parses it (422 if it is not)."""
    try:
        return _INT.validate_python(raw)
    except ValidationError as exc:
        raise Unprocessable.of(
            [{**e, "loc": ["path", name]} for e in exc.errors(include_url=False, include_context=False)]
        ) from None


def _fastapi_error(error: Any) -> dict[str, Any]:
    result = {**error, "loc": ["body", *error["loc"]]}
    if "ctx" in error:
        # FastAPI's encoder turns the exception a validator raised into {}.
        result["ctx"] = {k: {} if isinstance(v, BaseException) else v for k, v in error["ctx"].items()}
    return result


def model_options(req: AgentRequest) -> R.RunOptions:
    """Only what the client sent overrides the agent (WebAgent's defaults, "o3" on openai, would
    make every run on a server without an OpenAI key fail); the half of the pair not sent takes
    WebAgent's default. A model that names its provider ("anthropic:...") needs none."""
    model = req.model if "model" in req.model_fields_set else ""
    provider = req.provider.value if "provider" in req.model_fields_set else ""
    if model and not provider and ":" not in model:
        provider = DEFAULT_PROVIDER
    if provider and not model:
        model = DEFAULT_MODEL
    return R.RunOptions(model=model, provider=provider)


def run_request(req: AgentRequest, agent_id: str, task_id: int | None = None) -> pb.RunRequest:
    """A new task's first run, or (`task_id`) another run of a task."""
    run_input = R.RunInput(
        message=req.prompt,
        options=model_options(req),
        response_format=R.RESPONSE_FORMAT_JSON if req.wants_json else R.RESPONSE_FORMAT_TEXT,
    )
    metadata: dict[str, Any] = {**FAMILY, **({TASK_ID: str(task_id)} if task_id else NEW_TASK)}
    if req.json_schema is not None:
        schema, wrap = c_schema.answer_schema(req.json_schema)
        run_input.json_schema.update(schema)
        if wrap or schema != req.json_schema:  # shown as the client wrote it
            metadata[c_schema.ORIGINAL] = json.dumps(req.json_schema)
        if wrap:
            metadata[c_schema.WRAPPED] = True
    message = pb.RunRequest(agent_id=agent_id, input=run_input, wait=req.wait_for_completion is not False)
    message.metadata.update(metadata)
    if req.webhook_url:
        message.webhook_url = req.webhook_url
        message.webhook_format = R.WEBHOOK_FORMAT_AGENT_RESPONSE
    return message


def rejected_fields(violations: tuple[FieldViolation, ...], body: dict[str, Any]) -> Unprocessable | None:
    """The server's field rejections as a 422 on the body fields the client sent; None when one
    of them is not about the client's input (then it is the gateway's or the server's fault)."""
    fields = [_BODY_FIELDS.get(v.field, "") for v in violations]
    if not violations or "" in fields:
        return None
    errors: list[dict[str, Any]] = [
        {
            "type": "value_error",
            "loc": ["body", name],
            "msg": f"Value error, {v.description}",
            "input": body.get(name),
            "ctx": {"error": {}},
        }
        for name, v in zip(fields, violations, strict=True)
    ]
    return Unprocessable.of(errors)


def sync_response(run: R.Run) -> dict[str, Any]:
    body = agent_response(run)
    body["result"] = whole_numbers(body["result"])
    return body


def whole_numbers(value: Any) -> Any:
    """JSON values that went through a protobuf Struct hold every number as a double: 3 comes back
    as 3.0, which integer-typed clients refuse. Same JSON value, written as an integer."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: whole_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [whole_numbers(v) for v in value]
    return value


def task_run(run: R.Run, agent_model: str, delivery: R.WebhookDelivery | None) -> dict[str, Any]:
    """GET /api/runs/{run_id}: WebAgent's stored task run, plus the computed `status` (REC C.6.3).
    `agent_model` is the agent's default "provider:model", shown when the run did not override it."""
    response = agent_response(run)
    options = run.input.options
    default_provider, _, default_name = agent_model.rpartition(":")
    model, provider = options.model, options.provider
    if ":" in model and not provider:  # "provider:model" names both
        provider, _, model = model.partition(":")
    success, code, message = webhook_result(delivery)
    return {
        "id": run.number,
        "task_id": response["task_id"],
        "prompt": run.input.message,
        "model": model or default_name or None,
        "provider": provider or default_provider or None,
        "webhook_url": run.webhook_url or None,
        "response_format": "json" if run.input.response_format == R.RESPONSE_FORMAT_JSON else "text",
        "json_schema": _schema_text(run),
        "result": answer_text(run) if run.state == R.RUN_STATE_COMPLETED else None,
        "is_done": response["is_done"],
        "is_successful": response["is_successful"],
        "webhook_result_success": success,
        "webhook_result_status_code": code,
        "webhook_result_message": message,
        "steps": _steps(run.number, response["history"]),
        "status": response["status"],
    }


def _schema_text(run: R.Run) -> str | None:
    original = run.metadata.fields.get(c_schema.ORIGINAL)
    if original is not None and original.string_value:
        return original.string_value
    if not run.input.HasField("json_schema"):
        return None
    return json.dumps(whole_numbers(json_format.MessageToDict(run.input.json_schema)))


def _steps(number: int, history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    steps = []
    action_index = 0
    for step_number, item in enumerate(history, start=1):
        actions = []
        for action_number, action in enumerate(item["actions"], start=1):
            action_index += 1
            actions.append(
                {
                    "id": number * _ACTIONS_PER_RUN + action_index,
                    "task_run_id": number,
                    "step_number": step_number,
                    "action_number": action_number,
                    **action,
                }
            )
        steps.append(
            {
                "task_run_id": number,
                "step_number": step_number,
                "description": item["description"],
                "screenshot": None,
                "actions": actions,
            }
        )
    return steps


def webhook_result(delivery: R.WebhookDelivery | None) -> tuple[bool | None, int | None, str | None]:
    """(success, status code, message) once the delivery is settled; WebAgent reports a receiver
    that never answered as status 500."""
    if delivery is None or delivery.state not in (
        R.WEBHOOK_DELIVERY_STATE_DELIVERED,
        R.WEBHOOK_DELIVERY_STATE_FAILED,
    ):
        return None, None, None
    delivered = delivery.state == R.WEBHOOK_DELIVERY_STATE_DELIVERED
    last = delivery.attempts[-1] if delivery.attempts else R.WebhookAttempt()
    message = last.error or ("delivered" if delivered else "not delivered")
    return delivered, last.status_code or (200 if delivered else 500), message
