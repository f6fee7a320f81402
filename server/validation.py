"""Request validation, in two rounds: the shape of every field of every request (`shape`, driven by
the descriptor: server/validation_fields.py), then what the values of each request mean. Each round
reports every bad field it finds at once, as INVALID_ARGUMENT with a BadRequest. A request that
passes stores nothing the store cannot keep or read back."""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
from collections.abc import Iterable, Mapping
from typing import Any

import jsonschema
from agentrun.v1 import run_pb2, run_service_pb2
from google.protobuf import json_format
from google.protobuf.message import Message

from common import limits
from common.errors import InvalidArgument
from server import convert, validation_fields
from server.agents.schema_output import schema_problem
from server.convert import STATE_NAME, input_from_proto
from server.engine.engine import Submission
from server.engine.inputs import run_input_to_dict
from server.urlpolicy import UrlPolicy

log = logging.getLogger(__name__)

MAX_BATCH_IDS = limits.MAX_BATCH_IDS
MAX_PAGE_SIZE = limits.MAX_PAGE_SIZE
MAX_MEDIA_ITEMS = limits.MAX_MEDIA_ITEMS
MAX_TIMEOUT_S = limits.MAX_TIMEOUT_S
# Event seqs (`after_seq`, page tokens) are INTEGER columns, 32 bits on PostgreSQL; run numbers
# (ListRuns' page tokens, "n") are BIGINT.
MAX_INTEGER = limits.MAX_INTEGER
_TOKEN_MAX = {"n": limits.MAX_RUN_NUMBER}


class Violations:
    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []

    def check(self, ok: bool, field: str, description: str) -> None:
        if not ok:
            self.items.append((field, description))

    def report(self, field: str, description: str) -> None:
        self.items.append((field, description))

    def raise_if_any(self) -> None:
        if self.items:
            raise InvalidArgument.fields(self.items)


def require(ok: bool, field: str, description: str) -> None:
    if not ok:
        raise InvalidArgument.fields([(field, description)])


def shape(request: Message) -> None:
    """Round one, for every request before its handler reads it: every field of the right shape, or
    INVALID_ARGUMENT listing each one that is not."""
    v = Violations()
    validation_fields.check(v.report, request)
    v.raise_if_any()


async def submission(
    req: run_service_pb2.RunRequest, prefix: str = "", webhooks: UrlPolicy | None = None
) -> Submission:
    """A checked submission (of a request `shape` passed); INVALID_ARGUMENT lists every bad field."""
    v = Violations()
    _check_request(v, req, prefix)
    for i, media in enumerate(req.input.media):
        if media.data.startswith(("http://", "https://")):
            problem = await _url_problem(UrlPolicy(), media.data)
            v.check(problem is None, f"{prefix}input.media[{i}].data", f"URL {problem}")
    if req.webhook_url:
        problem = await _url_problem(webhooks or UrlPolicy(), req.webhook_url)
        v.check(problem is None, f"{prefix}webhook_url", f"URL {problem}")
    v.raise_if_any()
    return Submission(
        agent_id=req.agent_id,
        input=_stored_input(req.input),
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


def _stored_input(message: run_pb2.RunInput) -> dict[str, Any]:
    """run_input_to_dict(input_from_proto(message)), without the typed form in between when the
    message is all the input there is (most runs)."""
    fields = message.ListFields()
    if len(fields) == 1 and fields[0][0].name == "message":
        return {"message": fields[0][1]}
    return run_input_to_dict(input_from_proto(message))


async def _url_problem(policy: UrlPolicy, url: str) -> str | None:
    try:
        return await policy.problem(url)
    except ValueError:  # not parsable: a bracket left open, a port out of range, a host IDNA refuses
        return "is not well-formed"


# The checks of every submission report with `if`, not Violations.check: its arguments (f-strings
# with the field's prefix) would be built for every request, though nearly all are fine.


def _check_media(v: Violations, run_input: run_pb2.RunInput, prefix: str) -> None:
    media_items = run_input.media
    if not media_items:
        return
    if len(media_items) > MAX_MEDIA_ITEMS:
        v.report(f"{prefix}input.media", f"at most {MAX_MEDIA_ITEMS} items")
    for i, media in enumerate(media_items):
        where = f"{prefix}input.media[{i}]"
        v.check("/" in media.type, f"{where}.type", "required: a MIME type such as image/png")
        if media.data.startswith(("http://", "https://")):
            continue
        try:
            ok = bool(media.data) and bool(base64.b64decode(media.data, validate=True))
        except (binascii.Error, ValueError):
            ok = False
        v.check(ok, f"{where}.data", "must be base64 content or an http(s) URL")


def _check_request(v: Violations, req: run_service_pb2.RunRequest, prefix: str) -> None:
    run_input = req.input
    if not req.agent_id:
        v.report(f"{prefix}agent_id", "required")
    if not run_input.message.strip():
        v.report(f"{prefix}input.message", "must not be empty")
    _check_media(v, run_input, prefix)
    options = run_input.options
    if options.HasField("temperature") and not 0 <= options.temperature <= 2:
        v.report(f"{prefix}input.options.temperature", "must be between 0 and 2")
    if options.HasField("max_tokens") and not options.max_tokens > 0:
        v.report(f"{prefix}input.options.max_tokens", "must be positive")
    if run_input.HasField("json_schema"):
        v.check(
            run_input.response_format == run_pb2.RESPONSE_FORMAT_JSON,
            f"{prefix}input.json_schema",
            "only allowed with response_format JSON",
        )
        problem = _schema_problem(json_format.MessageToDict(run_input.json_schema))
        v.check(problem is None, f"{prefix}input.json_schema", problem or "")
    seconds, nanos = req.timeout.seconds, req.timeout.nanos  # normalised: one sign (`shape`)
    if not (seconds >= 0 and nanos >= 0 and (seconds, nanos) <= (MAX_TIMEOUT_S, 0)):
        v.report(f"{prefix}timeout", f"must not be negative nor longer than {MAX_TIMEOUT_S} seconds (7 days)")


def _schema_problem(schema: dict[str, object]) -> str | None:
    dialect = schema.get("$schema")
    if dialect is not None and not (
        isinstance(dialect, str)
        # The default comes back for a $schema jsonschema does not know.
        and jsonschema.validators.validator_for(schema, default=None) is not None  # type: ignore[arg-type]
    ):
        return "$schema must name a JSON Schema dialect jsonschema knows (e.g. draft-07)"
    try:
        return schema_problem(schema)
    except Exception as exc:  # the schema library choking on a caller's schema: the schema's fault
        log.warning("JSON Schema check raised %s", type(exc).__name__, exc_info=exc)
        return "not a valid JSON Schema"


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


MAX_METADATA_FILTERS = 16


def metadata_filter(values: Mapping[str, str]) -> dict[str, str]:
    """ListRuns' metadata filter: at most MAX_METADATA_FILTERS non-empty keys."""
    v = Violations()
    v.check(len(values) <= MAX_METADATA_FILTERS, "metadata", f"at most {MAX_METADATA_FILTERS} entries")
    v.check(all(values), "metadata", "keys must not be empty")
    v.raise_if_any()
    return dict(values)


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
    """The number in a page token this server issued (`encode_token`), or INVALID_ARGUMENT."""
    if not token:
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raw = ""
    prefix, _, number = raw.partition(":")
    if prefix != kind or not _ascii_number(number, _TOKEN_MAX.get(kind, MAX_INTEGER)):
        raise InvalidArgument.fields([(field, "not a token this server issued")])
    return int(number)


def _ascii_number(text: str, maximum: int) -> bool:
    digits = text.lstrip("0")
    return text.isascii() and text.isdigit() and len(digits) <= len(str(maximum)) and int(text) <= maximum


def after_seq(value: int, field: str = "after_seq") -> int:
    return bounded(value, 0, MAX_INTEGER, field)


def decision(value: int) -> bool:
    """True for APPROVE, False for REJECT."""
    v = Violations()
    v.check(
        value in (run_pb2.DECISION_APPROVE, run_pb2.DECISION_REJECT), "decision", "must be APPROVE or REJECT"
    )
    v.raise_if_any()
    return value == run_pb2.DECISION_APPROVE


def run_ref(value: str, field: str = "run_id") -> str:
    """A run id or number to look up (its length was checked by `shape`); one that names no run is
    NOT_FOUND, from the store."""
    require(bool(value), field, "required")
    return value


# Run fields UpdateRun changes; every other field of a run is fixed once it is submitted (or the
# server's to set).
UPDATABLE_RUN_FIELDS = ("metadata",)


def run_update(req: run_service_pb2.UpdateRunRequest) -> tuple[str, dict[str, Any] | None]:
    """UpdateRun's run ref and the metadata it sets: None when its mask (as given, or implied by
    the fields set in `run`) is empty. A mask naming another field is INVALID_ARGUMENT."""
    v = Violations()
    ref = req.run.id
    v.check(bool(ref), "run.id", "required")
    limit = limits.MAX_CHARS["run_id"]
    v.check(len(ref) <= limit, "run.id", f"longer than {limit} characters")
    if req.update_mask.paths:
        paths = list(req.update_mask.paths)
        for path in paths:
            v.check(
                path in UPDATABLE_RUN_FIELDS, "update_mask", f"{path!r} cannot be updated: only metadata can"
            )
    else:  # AIP-134: no mask means the fields the request sets
        paths = [field.name for field, _ in req.run.ListFields() if field.name != "id"]
        for path in paths:
            v.check(
                path in UPDATABLE_RUN_FIELDS,
                f"run.{path}",
                "cannot be updated: only metadata can (update_mask names the fields to update)",
            )
    v.raise_if_any()
    if not paths:
        return ref, None
    return ref, json_format.MessageToDict(req.run.metadata)
