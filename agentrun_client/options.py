"""Request messages from keyword arguments: the options of a submission, run states and decisions by
name."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal, TypeAlias, TypedDict, cast

from agentrun.v1 import run_pb2
from agentrun.v1 import run_service_pb2 as pb
from google.protobuf import duration_pb2

# A RunState, or its name: "RUN_STATE_COMPLETED", "COMPLETED" or "completed".
StateLike: TypeAlias = "run_pb2.RunState | str"
# A Decision, or "approve" / "reject".
DecisionLike: TypeAlias = "run_pb2.Decision | Literal['approve', 'reject']"


class SubmitOptions(TypedDict, total=False):
    """Optional fields of a submission (`run` and `stream` keyword arguments).

    Input: `media` ((MIME type, base64 or URL) pairs or Media messages), `generate_followups`,
    `response_format` ("text" or "json"; "json" is implied by `json_schema`), `json_schema`; model
    overrides `model`, `provider`, `temperature`, `max_tokens`, `system_prompt`. Request: `webhook_url`,
    `webhook_format` ("run", "job", "agent_response"), `user_id`, `org_id`."""

    media: Sequence[run_pb2.Media | tuple[str, str]]
    generate_followups: bool
    response_format: Literal["text", "json"]
    json_schema: Mapping[str, Any]
    model: str
    provider: str
    temperature: float
    max_tokens: int
    system_prompt: str
    webhook_url: str
    webhook_format: Literal["run", "job", "agent_response"]
    user_id: str
    org_id: str


_OPTION_FIELDS = ("model", "provider", "temperature", "max_tokens", "system_prompt")


def new_idempotency_key() -> str:
    return f"client-{uuid.uuid4()}"


def run_request(
    agent_id: str,
    message: str,
    *,
    wait: bool,
    session_id: str | None,
    timeout: float | None,
    metadata: Mapping[str, Any] | None,
    idempotency_key: str,
    options: SubmitOptions,
) -> pb.RunRequest:
    unknown = set(options) - set(SubmitOptions.__annotations__)
    if unknown:
        raise TypeError(f"unknown run option(s): {', '.join(sorted(unknown))}")
    request = pb.RunRequest(
        agent_id=agent_id,
        session_id=session_id or "",
        wait=wait,
        idempotency_key=idempotency_key,
        webhook_url=options.get("webhook_url", ""),
        user_id=options.get("user_id", ""),
        org_id=options.get("org_id", ""),
    )
    if timeout is not None:
        request.timeout.CopyFrom(_duration(timeout))
    if metadata is not None:
        request.metadata.update(metadata)
    if "webhook_format" in options:
        request.webhook_format = _enum(run_pb2.WebhookFormat, "WEBHOOK_FORMAT_", options["webhook_format"])
    run_input = request.input
    run_input.message = message
    for item in options.get("media", ()):
        media = item if isinstance(item, run_pb2.Media) else run_pb2.Media(type=item[0], data=item[1])
        run_input.media.append(media)
    run_input.generate_followups = options.get("generate_followups", False)
    if "json_schema" in options:
        run_input.json_schema.update(options["json_schema"])
    response_format = options.get("response_format", "json" if "json_schema" in options else "")
    if response_format:
        run_input.response_format = _enum(run_pb2.ResponseFormat, "RESPONSE_FORMAT_", response_format)
    for name in _OPTION_FIELDS:
        if name in options:
            setattr(run_input.options, name, options[name])  # type: ignore[literal-required]
    return request


def _duration(seconds: float) -> duration_pb2.Duration:
    duration = duration_pb2.Duration()
    duration.FromNanoseconds(round(seconds * 1e9))
    return duration


def _enum(wrapper: Any, prefix: str, name: str) -> Any:
    """The value of an enum by its name, with or without its prefix, in any case."""
    name = name.upper()
    try:
        return wrapper.Value(name if name.startswith(prefix) else prefix + name)
    except ValueError:
        names: list[str] = wrapper.keys()  # an EnumTypeWrapper is no mapping
        known = ", ".join(n.removeprefix(prefix).lower() for n in names if not n.endswith("UNSPECIFIED"))
        raise ValueError(f"unknown {prefix.lower().strip('_')} {name.lower()!r}; known: {known}") from None


def state(value: StateLike) -> run_pb2.RunState:
    if isinstance(value, str):
        return cast(run_pb2.RunState, _enum(run_pb2.RunState, "RUN_STATE_", value))
    return value


def states(values: Iterable[StateLike] | None) -> list[run_pb2.RunState]:
    return [state(v) for v in values or ()]


def decision(value: DecisionLike) -> run_pb2.Decision:
    if isinstance(value, str):
        return cast(run_pb2.Decision, _enum(run_pb2.Decision, "DECISION_", value))
    return value
