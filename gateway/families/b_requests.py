"""Family B (PraisonAI async jobs) requests without HTTP: a JobSubmitRequest body mapped onto a
RunRequest (with pydantic-style field errors), and the job statuses a list or count filters by.
Responses are in gateway.families.b_responses, the job stream in gateway.families.b_stream."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from typing import Any, Final

from agentrun.v1 import run_pb2
from agentrun.v1 import run_service_pb2 as pb
from google.protobuf import duration_pb2, struct_pb2

from gateway.families.b_agents import FileAgent, merged

R = run_pb2
Json = dict[str, Any]

# The job statuses: what a list filters by (and stats count), as the run states each one covers.
STATUSES: Final = ("queued", "running", "succeeded", "failed", "cancelled")
STATUS_ALIASES: Final = {"pending": "queued"}  # jobs-api.mdx spells queued "pending"
STATES: Final[Mapping[str, tuple[R.RunState, ...]]] = {
    "queued": (R.RUN_STATE_QUEUED,),
    "running": (R.RUN_STATE_RUNNING, R.RUN_STATE_PAUSED),  # B has no paused state
    "succeeded": (R.RUN_STATE_COMPLETED,),
    "failed": (R.RUN_STATE_FAILED,),
    "cancelled": (R.RUN_STATE_CANCELLED,),
}
# What family B's runs carry in their metadata, and what its list and counts filter by.
FAMILY: Final = {"family": "B"}
DEFAULT_TIMEOUT_S: Final = 3600
UNSUPPORTED_FRAMEWORKS: Final = ("crewai", "autogen")
_MAX_TIMEOUT_S: Final = 10**10  # well inside google.protobuf.Duration's range


# ---- submit ---------------------------------------------------------------------------------


class InvalidBody(Exception):
    """422: pydantic-style error items ({type, loc, msg, input, ctx?})."""

    def __init__(self, items: list[Json]) -> None:
        super().__init__(f"{len(items)} invalid field(s)")
        self.items = items


class Unsupported(Exception):
    """400: a valid request this gateway does not serve (other frameworks)."""


def item(kind: str, loc: Iterable[str | int], msg: str, value: Any, ctx: Json | None = None) -> Json:
    result: Json = {"type": kind, "loc": list(loc), "msg": msg, "input": value}
    if ctx is not None:
        result["ctx"] = ctx
    return result


def value_error(loc: Iterable[str | int], problem: str, value: Any) -> Json:
    return item("value_error", loc, f"Value error, {problem}", value, {"error": problem})


_STRINGS = (
    *("prompt", "agent_file", "agent_yaml", "recipe_name", "framework", "webhook_url"),
    *("session_id", "idempotency_key", "idempotency_scope"),
)
_OBJECTS = ("recipe_config", "config")


def submit_request(
    body: Any, header_key: str, default_agent: str, file_agent: FileAgent | None = None
) -> pb.RunRequest:
    """The RunRequest of a JobSubmitRequest body: the same body always maps to the same request,
    so the server's idempotency (same key + same request) holds for replays. `file_agent`: the
    first agent of the job's agent_file or agent_yaml (its overrides, then `config`'s)."""
    if body is None:
        raise InvalidBody([item("missing", ["body"], "Field required", None)])
    if not isinstance(body, dict):
        msg = "Input should be a valid dictionary or object to extract fields from"
        raise InvalidBody([item("model_attributes_type", ["body"], msg, body)])
    errors = _field_errors(body)
    config = body.get("config")
    options, option_errors = _options(config if isinstance(config, dict) else {})
    timeout = _integer(body.get("timeout"), ["body", "timeout"], errors)
    if errors or option_errors:
        raise InvalidBody(errors + option_errors)
    agent = file_agent or FileAgent()
    framework = (body.get("framework") or "praisonai").lower()
    if framework != "praisonai":
        raise Unsupported(f"Framework '{framework}' is not supported; only 'praisonai' is")
    webhook = body.get("webhook_url") or ""
    return pb.RunRequest(
        agent_id=body.get("recipe_name") or agent.agent_id or default_agent,
        input=R.RunInput(message=body["prompt"], options=merged(agent.options, options)),
        session_id=body.get("session_id") or "",
        wait=False,
        timeout=duration_pb2.Duration(seconds=timeout or DEFAULT_TIMEOUT_S),
        idempotency_key=header_key or body.get("idempotency_key") or "",
        webhook_url=webhook,
        webhook_format=R.WEBHOOK_FORMAT_JOB if webhook else R.WEBHOOK_FORMAT_UNSPECIFIED,
        metadata=_extras(body, framework),
    )


def _field_errors(body: Json) -> list[Json]:
    errors: list[Json] = []
    if "prompt" not in body:
        errors.append(item("missing", ["body", "prompt"], "Field required", body))
    for field in _STRINGS:
        value = body.get(field)
        optional = value is None and field != "prompt"  # every field but prompt is Optional[str]
        if field in body and not optional and not isinstance(value, str):
            errors.append(item("string_type", ["body", field], "Input should be a valid string", value))
    for field in _OBJECTS:
        value = body.get(field)
        if value is not None and not isinstance(value, dict):
            errors.append(item("dict_type", ["body", field], "Input should be a valid dictionary", value))
    return errors


def _integer(value: Any, loc: list[str | int], errors: list[Json]) -> int:
    """pydantic's lax int: integers, integral floats and numeric strings."""
    if value is None:
        return 0
    number: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, float) and math.isfinite(value):
        if not value.is_integer():
            msg = "Input should be a valid integer, got a number with a fractional part"
            errors.append(item("int_from_float", loc, msg, value))
            return 0
        number = int(value)
    elif isinstance(value, str):
        try:
            number = int(value.strip())
        except ValueError:
            msg = "Input should be a valid integer, unable to parse string as an integer"
            errors.append(item("int_parsing", loc, msg, value))
            return 0
    if number is None:
        errors.append(item("int_type", loc, "Input should be a valid integer", value))
        return 0
    if number > _MAX_TIMEOUT_S:
        msg = f"Input should be less than or equal to {_MAX_TIMEOUT_S}"
        errors.append(item("less_than_equal", loc, msg, value, {"le": _MAX_TIMEOUT_S}))
        return 0
    return number


def _options(config: Json) -> tuple[R.RunOptions, list[Json]]:
    """Model overrides in `config` (the keys family A's `options` has); other keys are kept in the
    run's metadata only."""
    options = R.RunOptions()
    errors: list[Json] = []
    for key in ("model", "llm", "provider"):
        value = config.get(key)
        if value is None:
            continue
        if not isinstance(value, str):
            errors.append(
                item("string_type", ["body", "config", key], "Input should be a valid string", value)
            )
        elif key == "provider":
            options.provider = value
        elif not options.model:
            options.model = value
    temperature = config.get("temperature")
    if temperature is not None:
        if isinstance(temperature, int | float) and not isinstance(temperature, bool):
            options.temperature = float(temperature)
        else:
            loc = ["body", "config", "temperature"]
            errors.append(item("float_type", loc, "Input should be a valid number", temperature))
    if config.get("max_tokens") is not None:
        max_tokens = _integer(config["max_tokens"], ["body", "config", "max_tokens"], errors)
        if max_tokens:
            options.max_tokens = max(min(max_tokens, 2**31 - 1), -(2**31))
    return options, errors


def _extras(body: Json, framework: str) -> struct_pb2.Struct:
    # Fields with no RunRequest counterpart ride in the metadata, so they are part of the request
    # the server compares for idempotency: same key with another config is a conflict, not a replay.
    # Nested values go as JSON text: the server stores the metadata's top level only (a nested
    # Struct does not survive its JSON column), and sorted keys keep the text deterministic.
    extras = struct_pb2.Struct()
    extras.update({**FAMILY, "framework": framework})
    for field in ("config", "recipe_config", "idempotency_scope", "agent_file"):
        if body.get(field):
            value = body[field]
            extras.update({field: value if isinstance(value, str) else json.dumps(value, sort_keys=True)})
    return extras


def query_int(
    raw: str | None,
    name: str,
    default: int,
    low: int,
    high: int | None,
    errors: list[Json],
    where: str = "query",
) -> int:
    """FastAPI's Query(default, ge=low, le=high) validation of one integer parameter (or of a
    header's, with `where="header"`)."""
    if raw is None:
        return default
    loc = [where, name]
    try:
        value = int(raw.strip())
    except ValueError:
        msg = "Input should be a valid integer, unable to parse string as an integer"
        errors.append(item("int_parsing", loc, msg, raw))
        return default
    if value < low:
        msg = f"Input should be greater than or equal to {low}"
        errors.append(item("greater_than_equal", loc, msg, raw, {"ge": low}))
    elif high is not None and value > high:
        msg = f"Input should be less than or equal to {high}"
        errors.append(item("less_than_equal", loc, msg, raw, {"le": high}))
    return value
