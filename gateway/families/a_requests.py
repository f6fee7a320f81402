"""Family A (Operativus Agent Manager) requests without HTTP responses: the body of a run route as
pb.RunRequest ProtoJSON, the continue decision, batch ids, and field paths in the body's names."""

from __future__ import annotations

import re
from typing import Any

from agentrun.v1 import run_pb2
from agentrun.v1 import run_service_pb2 as pb
from aiohttp import web

from gateway import codec
from gateway.errors import ApiError, FieldViolation

DECISIONS: dict[str, run_pb2.Decision] = {
    "APPROVE": run_pb2.DECISION_APPROVE,
    "APPROVED": run_pb2.DECISION_APPROVE,
    "REJECT": run_pb2.DECISION_REJECT,
    "REJECTED": run_pb2.DECISION_REJECT,
}
# Body names -> proto field names, with the snake_case spellings some doc pages use.
_TOP_LEVEL = {"sessionId": "session_id", "userId": "user_id", "orgId": "org_id"}
_OPTIONS = {
    "model": "model",
    "provider": "provider",
    "temperature": "temperature",
    "maxTokens": "max_tokens",
    "systemPrompt": "system_prompt",
}
_SNAKE = re.compile(r"_([a-z0-9])")
BOOLEANS = frozenset({"true", "false", "on", "off", "yes", "no", "1", "0", ""})


async def read_body(request: web.Request, *, required: bool) -> dict[str, Any]:
    body = await codec.read_json(request)
    if (body is not None or required) and not isinstance(body, dict):
        raise ApiError.invalid("request body must be a JSON object", reason="MALFORMED_JSON")
    return body or {}


async def run_request(request: web.Request, *, wait: bool) -> pb.RunRequest:
    body = await read_body(request, required=True)
    message, violations = codec.parse(
        run_request_json(request.match_info["agentId"], body, wait), pb.RunRequest
    )
    text = body.get("message")
    if (text is None or isinstance(text, str)) and not (text or "").strip():
        violations.insert(0, FieldViolation("message", "must not be blank"))
    if violations:
        raise ApiError.invalid("invalid request", violations)
    return message


def run_request_json(agent_id: str, body: dict[str, Any], wait: bool) -> dict[str, Any]:
    """The body as pb.RunRequest ProtoJSON. Unknown fields are dropped (the product's JSON binding
    ignores them); values pass unchecked so the codec reports bad types under their paths."""
    run_input: dict[str, Any] = {name: body[name] for name in ("message", "media") if name in body}
    if isinstance(run_input.get("media"), list):
        run_input["media"] = [_known(item, {"type": "type", "data": "data"}) for item in run_input["media"]]
    followups = _pick(body, "generateFollowups")
    if followups is not None:
        run_input["generate_followups"] = followups
    if "options" in body:
        run_input["options"] = _known(body["options"], _OPTIONS)
    result: dict[str, Any] = {
        "agent_id": agent_id,
        "input": run_input,
        "wait": wait,
        "metadata": {"family": "A"},
    }
    for name, field in _TOP_LEVEL.items():
        value = _pick(body, name)
        if value is not None:
            result[field] = value
    return result


def _pick(body: dict[str, Any], name: str) -> Any:
    """`name` or its snake_case spelling (the auth and sessions doc pages write `session_id`)."""
    return body.get(name, body.get(re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), name)))


def _known(value: Any, names: dict[str, str]) -> Any:
    if not isinstance(value, dict):
        return value  # left for the codec to report
    picked = {field: _pick(value, name) for name, field in names.items()}
    return {field: v for field, v in picked.items() if v is not None}


def field_name(path: str) -> str:
    """A server or codec field path in the body's names: `run.input.options.max_tokens` ->
    `options.maxTokens`, `session_id` -> `sessionId`."""
    for prefix in ("run.", "input."):
        path = path.removeprefix(prefix)
    return _SNAKE.sub(lambda m: m.group(1).upper(), path)


def decision(body: dict[str, Any]) -> run_pb2.Decision | None:
    value = body.get("action", body.get("decision"))
    return DECISIONS.get(value.strip().upper()) if isinstance(value, str) else None


def run_ids(values: list[str]) -> list[str]:
    """`runIds` comma-separated and/or repeated: the ids in request order, once each."""
    ids = (part.strip() for value in values for part in value.split(","))
    return list(dict.fromkeys(i for i in ids if i))
