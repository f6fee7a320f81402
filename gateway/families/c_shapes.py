"""Family C (WebAgent "Run Agent") without I/O: the AgentRequest as WebAgent's server declares it,
its FastAPI-style 422 bodies, the RunRequest it becomes, and the task-run rendering GET serves."""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import grpc
from agentrun.v1 import run_pb2
from agentrun.v1 import run_service_pb2 as pb
from google.protobuf import json_format
from jsonschema import Draft7Validator, SchemaError
from pydantic import BaseModel, Field, ValidationError, field_validator

from common.shapes import agent_response
from gateway import codec, rules
from gateway.errors import ApiError, FieldViolation

R = run_pb2
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
        description="Draft-7 JSON Schema of the result (an object, or its JSON text)",
        json_schema_extra={"anyOf": [_ANSWER_SCHEMA, _ANSWER_SCHEMA_TEXT, {"type": "null"}]},
    )
    # WebAgent's "internal" replay fields: accepted and ignored (REC C.6.2).
    use_cached_workflow: bool | None = None
    cached_workflow: dict[Any, Any] | None = None

    @field_validator("json_schema")
    @classmethod
    def _draft7(cls, value: str | dict[Any, Any] | None) -> dict[Any, Any] | None:
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
        except SchemaError as exc:
            raise ValueError(f"Invalid JSON Schema: {exc.message}") from None
        if not isinstance(schema, dict):  # `true` is a Draft-7 schema, but answers are objects
            raise ValueError("Invalid JSON Schema: the schema must be a JSON object")
        return schema

    @property
    def wants_json(self) -> bool:
        # WebAgent's engine shapes the answer by the schema whatever response_format says.
        return self.json_schema is not None or (self.response_format or "").lower() == "json"


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
        return body, AgentRequest.model_validate(body, from_attributes=True)
    except ValidationError as exc:
        raise Unprocessable.of([_fastapi_error(e) for e in exc.errors(include_url=False)]) from None


def _fastapi_error(error: Any) -> dict[str, Any]:
    result = {**error, "loc": ["body", *error["loc"]]}
    if "ctx" in error:
        # FastAPI's encoder turns the exception a validator raised into {}.
        result["ctx"] = {k: {} if isinstance(v, BaseException) else v for k, v in error["ctx"].items()}
    return result


def run_request(req: AgentRequest, agent_id: str) -> pb.RunRequest:
    """Only what the client sent overrides the agent: WebAgent's own defaults ("o3" on openai)
    would make every run on a server without an OpenAI key fail."""
    options = R.RunOptions(
        model=req.model if "model" in req.model_fields_set else "",
        provider=req.provider.value if "provider" in req.model_fields_set else "",
    )
    run_input = R.RunInput(
        message=req.prompt,
        options=options,
        response_format=R.RESPONSE_FORMAT_JSON if req.wants_json else R.RESPONSE_FORMAT_TEXT,
    )
    if isinstance(req.json_schema, dict):
        run_input.json_schema.update(req.json_schema)
    message = pb.RunRequest(agent_id=agent_id, input=run_input, wait=req.wait_for_completion is not False)
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
    success, code, message = webhook_result(delivery)
    return {
        "id": run.number,
        "task_id": run.number,
        "prompt": run.input.message,
        "model": options.model or default_name or None,
        "provider": options.provider or default_provider or None,
        "webhook_url": run.webhook_url or None,
        "response_format": "json" if run.input.response_format == R.RESPONSE_FORMAT_JSON else "text",
        "json_schema": _schema_text(run.input),
        "result": run.output if run.state == R.RUN_STATE_COMPLETED else None,
        "is_done": response["is_done"],
        "is_successful": response["is_successful"],
        "webhook_result_success": success,
        "webhook_result_status_code": code,
        "webhook_result_message": message,
        "steps": _steps(run.number, response["history"]),
        "status": response["status"],
    }


def _schema_text(run_input: R.RunInput) -> str | None:
    if not run_input.HasField("json_schema"):
        return None
    return json.dumps(whole_numbers(json_format.MessageToDict(run_input.json_schema)))


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


# ---- documented shapes (components of /openapi.json, named "webagent.<name>") ----------------


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
