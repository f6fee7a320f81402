"""Request validation: every bad field is reported at once, as INVALID_ARGUMENT with a BadRequest."""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterable

from agentrun.v1 import run_pb2, run_service_pb2
from google.protobuf import json_format

from common.errors import InvalidArgument
from server import convert
from server.agents.schema_output import schema_problem
from server.convert import STATE_NAME, input_from_proto
from server.engine.engine import Submission
from server.engine.inputs import run_input_to_dict
from server.urlpolicy import UrlPolicy, url_problem

MAX_BATCH_IDS = 100
MAX_PAGE_SIZE = 1000
MAX_MESSAGE_CHARS = 1_000_000
MAX_MEDIA_ITEMS = 16


class Violations:
    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []

    def check(self, ok: bool, field: str, description: str) -> None:
        if not ok:
            self.items.append((field, description))

    def raise_if_any(self) -> None:
        if self.items:
            raise InvalidArgument.fields(self.items)


def require(ok: bool, field: str, description: str) -> None:
    if not ok:
        raise InvalidArgument.fields([(field, description)])


async def submission(
    req: run_service_pb2.RunRequest, prefix: str = "", webhooks: UrlPolicy | None = None
) -> Submission:
    """A checked submission; INVALID_ARGUMENT lists every bad field."""
    v = Violations()
    _check_request(v, req, prefix)
    await _check_media_urls(v, req.input, prefix)
    if req.webhook_url:
        problem = await (webhooks or UrlPolicy()).problem(req.webhook_url)
        v.check(problem is None, f"{prefix}webhook_url", f"URL {problem}")
    v.raise_if_any()
    return Submission(
        agent_id=req.agent_id,
        input=run_input_to_dict(input_from_proto(req.input)),
        session_id=req.session_id,
        user_id=req.user_id,
        org_id=req.org_id,
        timeout_s=req.timeout.seconds + req.timeout.nanos / 1e9 or None,
        idempotency_key=req.idempotency_key,
        request_hash=request_hash(req) if req.idempotency_key else "",
        webhook_url=req.webhook_url,
        webhook_format=convert.WEBHOOK_FORMAT_NAME.get(req.webhook_format, "RUN") if req.webhook_url else "",
        extras=json_format.MessageToDict(req.metadata) if req.HasField("metadata") else None,
    )


def _check_media(v: Violations, run_input: run_pb2.RunInput, prefix: str) -> None:
    v.check(
        len(run_input.media) <= MAX_MEDIA_ITEMS, f"{prefix}input.media", f"at most {MAX_MEDIA_ITEMS} items"
    )
    for i, media in enumerate(run_input.media):
        where = f"{prefix}input.media[{i}]"
        v.check("/" in media.type, f"{where}.type", "required: a MIME type such as image/png")
        if media.data.startswith(("http://", "https://")):
            continue
        try:
            ok = bool(media.data) and bool(base64.b64decode(media.data, validate=True))
        except (binascii.Error, ValueError):
            ok = False
        v.check(ok, f"{where}.data", "must be base64 content or an http(s) URL")


async def _check_media_urls(v: Violations, run_input: run_pb2.RunInput, prefix: str) -> None:
    for i, media in enumerate(run_input.media):
        if media.data.startswith(("http://", "https://")):
            problem = await url_problem(media.data)
            v.check(problem is None, f"{prefix}input.media[{i}].data", f"URL {problem}")


def _check_request(v: Violations, req: run_service_pb2.RunRequest, prefix: str) -> None:
    v.check(bool(req.agent_id), f"{prefix}agent_id", "required")
    message = req.input.message
    v.check(bool(message.strip()), f"{prefix}input.message", "must not be empty")
    v.check(
        len(message) <= MAX_MESSAGE_CHARS,
        f"{prefix}input.message",
        f"longer than {MAX_MESSAGE_CHARS} characters",
    )
    _check_media(v, req.input, prefix)
    options = req.input.options
    if options.HasField("temperature"):
        v.check(
            0 <= options.temperature <= 2, f"{prefix}input.options.temperature", "must be between 0 and 2"
        )
    if options.HasField("max_tokens"):
        v.check(options.max_tokens > 0, f"{prefix}input.options.max_tokens", "must be positive")
    v.check(
        req.input.response_format in (0, 1, 2), f"{prefix}input.response_format", "unknown response format"
    )
    if req.input.HasField("json_schema"):
        v.check(
            req.input.response_format == run_pb2.RESPONSE_FORMAT_JSON,
            f"{prefix}input.json_schema",
            "only allowed with response_format JSON",
        )
        problem = schema_problem(json_format.MessageToDict(req.input.json_schema))
        v.check(problem is None, f"{prefix}input.json_schema", problem or "")
    timeout = req.timeout.seconds + req.timeout.nanos / 1e9
    v.check(timeout >= 0, f"{prefix}timeout", "must not be negative")
    v.check(len(req.idempotency_key) <= 256, f"{prefix}idempotency_key", "longer than 256 characters")
    v.check(len(req.session_id) <= 128, f"{prefix}session_id", "longer than 128 characters")
    v.check(len(req.webhook_url) <= 2048, f"{prefix}webhook_url", "longer than 2048 characters")
    v.check(
        req.webhook_format in convert.WEBHOOK_FORMAT_NAME or req.webhook_format == 0,
        f"{prefix}webhook_format",
        "unknown webhook format",
    )


def request_hash(req: run_service_pb2.RunRequest) -> str:
    """Identity of a request for idempotency: everything but `wait` (sync and background submits of
    the same request are the same run)."""
    canonical = run_service_pb2.RunRequest()
    canonical.CopyFrom(req)
    canonical.wait = False
    return hashlib.sha256(canonical.SerializeToString(deterministic=True)).hexdigest()


def batch_ids(ids: Iterable[str]) -> list[str]:
    unique = list(dict.fromkeys(ids))
    v = Violations()
    v.check(len(unique) <= MAX_BATCH_IDS, "run_ids", f"at most {MAX_BATCH_IDS} ids per request")
    v.check(all(unique), "run_ids", "ids must not be empty")
    v.raise_if_any()
    return unique


def page_size(value: int, default: int, field: str = "page_size") -> int:
    v = Violations()
    v.check(0 <= value <= MAX_PAGE_SIZE, field, f"must be between 0 and {MAX_PAGE_SIZE}")
    v.raise_if_any()
    return value or default


def bounded(value: int, low: int, high: int, field: str) -> int:
    require(low <= value <= high, field, f"must be between {low} and {high}")
    return value


def states(values: Iterable[int]) -> tuple[str, ...]:
    names = []
    v = Violations()
    for value in values:
        name = STATE_NAME.get(value)
        v.check(name is not None, "states", f"unknown state {value}")
        if name is not None:
            names.append(name)
    v.raise_if_any()
    return tuple(names)


def encode_token(kind: str, value: int) -> str:
    return base64.urlsafe_b64encode(f"{kind}:{value}".encode()).decode().rstrip("=")


def decode_token(token: str, kind: str, field: str = "page_token") -> int | None:
    if not token:
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        prefix, _, number = raw.partition(":")
        if prefix != kind or not number.isdigit():
            raise ValueError(raw)
        return int(number)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidArgument.fields([(field, "not a token this server issued")]) from None


def decision(value: int) -> bool:
    """True for APPROVE, False for REJECT."""
    v = Violations()
    v.check(
        value in (run_pb2.DECISION_APPROVE, run_pb2.DECISION_REJECT), "decision", "must be APPROVE or REJECT"
    )
    v.raise_if_any()
    return value == run_pb2.DECISION_APPROVE


def run_ref(value: str, field: str = "run_id") -> str:
    v = Violations()
    v.check(bool(value), field, "required")
    v.check(len(value) <= 64, field, "not a run id")
    v.raise_if_any()
    return value
