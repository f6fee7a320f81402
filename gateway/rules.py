"""What the server accepts, field by field, as JSON Schema keywords for /openapi.json. The ProtoJSON
schemas gateway.openapi derives from descriptors say which types go where; these rules add what the
server checks on top (server/validation_fields.py: every string's length and no NUL, Struct bounds;
server/validation.py: required fields, ranges, what the values mean), so a client, or a fuzzer, reads
off the document exactly what is accepted. The families' documents use the same limits for the same
server checks. tests/test_bad_input_http.py holds these numbers against the server's."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Final

from agentrun.v1 import run_pb2, run_service_pb2
from google.protobuf.descriptor import Descriptor

from common import limits

Schema = dict[str, Any]

MAX_CHARS = limits.MAX_CHARS
DEFAULT_MAX_CHARS: Final = limits.DEFAULT_MAX_CHARS
MAX_STRUCT_BYTES: Final = limits.MAX_STRUCT_BYTES
MAX_STRUCT_DEPTH: Final = limits.MAX_STRUCT_DEPTH

MAX_MESSAGE_CHARS: Final = MAX_CHARS["message"]
MAX_AGENT_ID_CHARS: Final = MAX_CHARS["agent_id"]
MAX_ID_CHARS: Final = MAX_CHARS["session_id"]  # sessions, users, orgs
MAX_RUN_REF_CHARS: Final = MAX_CHARS["run_id"]
MAX_IDEMPOTENCY_KEY_CHARS: Final = MAX_CHARS["idempotency_key"]
MAX_URL_CHARS: Final = MAX_CHARS["webhook_url"]
MAX_MEDIA_ITEMS: Final = limits.MAX_MEDIA_ITEMS
MAX_BATCH_IDS: Final = limits.MAX_BATCH_IDS
MAX_PAGE_SIZE: Final = limits.MAX_PAGE_SIZE
MAX_SKIP: Final = limits.MAX_SKIP  # ListRuns' deepest offset
MAX_TIMEOUT_S: Final = limits.MAX_TIMEOUT_S
MAX_SEQ: Final = limits.MAX_INTEGER  # run numbers and event seqs are INTEGER columns
MAX_INT32: Final = 2**31 - 1
MAX_INT64: Final = 2**63 - 1
MIN_INT64: Final = -(2**63)

# Patterns (ECMA 262 and Python alike). No request string may hold NUL (PostgreSQL cannot store
# it); "blank" is what str.strip() removes, so the white space of both regex dialects counts.
NO_NUL: Final = r"^[^\x00]*$"
NOT_BLANK: Final = r"^[^\x00]*[^\s\x00\x1c-\x1f\x85][^\x00]*$"
MIME_TYPE: Final = r"^[^/\s\x00]+/[^/\s\x00]+$"
# Base64 with padding, at least one byte (what base64.b64decode(validate=True) takes, non-empty).
BASE64: Final = r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{4}|[A-Za-z0-9+/]{3}=|[A-Za-z0-9+/]{2}==)$"
# A model name as the server's model catalog reads one (server/agents/providers.py).
MODEL: Final = r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,127}$"
HTTP_URL: Final = r"^https?://[^\s/?#\x00]+[^\s\x00]*$"
# A Duration from 0 to MAX_TIMEOUT_S (7 days = 604800 s), in ProtoJSON's "<seconds>[.<fraction>]s".
DURATION_UP_TO_7_DAYS: Final = (
    r"^(?:(?:[0-9]{1,5}|[1-5][0-9]{5}|60[0-3][0-9]{3}|604[0-7][0-9]{2})(?:\.[0-9]{1,9})?"
    r"|604800(?:\.0{1,9})?)s$"
)
# RFC 3339 as protobuf reads it: upper-case T and Z, years 0001-9999, up to nanoseconds.
TIMESTAMP: Final = (
    r"^(?:[0-9]{3}[1-9]|[0-9]{2}[1-9][0-9]|[0-9][1-9][0-9]{2}|[1-9][0-9]{3})"
    r"-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])"
    r"T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]{1,9})?"
    r"(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])$"
)
STRUCT: Final[Schema] = {
    "type": "object",
    "description": f"finite numbers only; at most {MAX_STRUCT_BYTES} bytes encoded and "
    f"{MAX_STRUCT_DEPTH} levels deep",
}


def text(max_chars: int, pattern: str = NO_NUL, *, min_chars: int = 0) -> Schema:
    """A string the server takes: at most `max_chars`, no NUL (`pattern` must exclude it too)."""
    schema: Schema = {"type": "string", "maxLength": max_chars, "pattern": pattern}
    if min_chars:
        schema["minLength"] = min_chars
    return schema


def string_field(name: str) -> Schema:
    """The bounds of a request's string field `name`, by the server's table."""
    return {"maxLength": MAX_CHARS.get(name, DEFAULT_MAX_CHARS), "pattern": NO_NUL}


def _enum(enum: Any, *, without_unspecified: bool) -> Schema:
    names = [name for name, number in enum.items() if number or not without_unspecified]
    return {"type": "string", "enum": names}


_REQUIRED_ID: Schema = {"minLength": 1}


def _given(name: str) -> Schema:
    """The field `name` is given and not empty."""
    return {"required": [name], "properties": {name: {"minLength": 1}}}


def model_name(max_chars: int = 128) -> Schema:
    """A model override: empty (none) or a name the server's catalog reads."""
    return {"type": "string", "maxLength": max_chars, "anyOf": [{"maxLength": 0}, {"pattern": MODEL}]}


_PAGE_SIZE: Schema = {"minimum": 0, "maximum": MAX_PAGE_SIZE, "description": "1 to 1000; 0 means the default"}
_PAGE_TOKEN: Schema = {"description": "`next_page_token` of the previous page (no other value is accepted)"}
_SEQ: Schema = {"type": "integer", "minimum": 0, "maximum": MAX_SEQ}
_URL_OR_EMPTY: Schema = {
    "anyOf": [{"maxLength": 0}, {"format": "uri", "pattern": HTTP_URL}],
    "description": "a public http(s) URL (private and loopback addresses are refused unless allowed "
    "by the server's settings); empty for none",
}

# Per field (full proto name): keywords merged into the field's schema, after the string bounds.
# For repeated fields they apply to the array; an "items" entry replaces the item schema.
FIELDS: Final[Mapping[str, Schema]] = {
    # what to run
    "agentrun.v1.RunRequest.agent_id": _REQUIRED_ID,
    "agentrun.v1.RunRequest.timeout": {
        "type": "string",
        "pattern": DURATION_UP_TO_7_DAYS,
        "description": 'from "0s" to "604800s" (7 days); unset or 0 means the server default',
    },
    "agentrun.v1.RunRequest.webhook_url": _URL_OR_EMPTY,
    "agentrun.v1.RunRequest.metadata": STRUCT,
    "agentrun.v1.RunInput.message": {"minLength": 1, "pattern": NOT_BLANK, "description": "not blank"},
    "agentrun.v1.RunInput.media": {"maxItems": MAX_MEDIA_ITEMS},
    "agentrun.v1.Media.type": {"pattern": MIME_TYPE, "description": "a MIME type, e.g. image/png"},
    "agentrun.v1.Media.data": {
        "anyOf": [{"pattern": BASE64, "contentEncoding": "base64"}, {"format": "uri", "pattern": HTTP_URL}],
        "description": "base64 content, or a public http(s) URL",
    },
    "agentrun.v1.RunOptions.model": {
        "anyOf": [{"maxLength": 0}, {"pattern": MODEL}],
        "description": 'a model of the agent\'s provider, or "provider:model" naming a configured provider',
    },
    "agentrun.v1.RunOptions.temperature": {"minimum": 0, "maximum": 2},
    "agentrun.v1.RunOptions.max_tokens": {"minimum": 1, "maximum": MAX_INT32},
    # reading
    "agentrun.v1.GetRunRequest.run_id": _REQUIRED_ID,
    "agentrun.v1.StreamRunRequest.after_seq": _SEQ,  # numbers only (the ranges bound them)
    "agentrun.v1.BatchGetRunsRequest.run_ids": {
        "maxItems": MAX_BATCH_IDS,
        "items": text(MAX_RUN_REF_CHARS, min_chars=1),
    },
    "agentrun.v1.ListRunsRequest.states": {"items": _enum(run_pb2.RunState, without_unspecified=True)},
    "agentrun.v1.ListRunsRequest.page_size": _PAGE_SIZE,
    "agentrun.v1.ListRunsRequest.page_token": _PAGE_TOKEN,
    "agentrun.v1.ListRunsRequest.skip": {"minimum": 0, "maximum": MAX_SKIP},
    "agentrun.v1.ListRunEventsRequest.run_id": _REQUIRED_ID,
    "agentrun.v1.ListRunEventsRequest.after_seq": _SEQ,
    "agentrun.v1.ListRunEventsRequest.page_size": _PAGE_SIZE,
    "agentrun.v1.ListRunEventsRequest.page_token": _PAGE_TOKEN,
    "agentrun.v1.ListAgentsRequest.page_size": _PAGE_SIZE,
    "agentrun.v1.ListAgentsRequest.page_token": _PAGE_TOKEN,
    "agentrun.v1.GetAgentRequest.agent_id": _REQUIRED_ID,
    "agentrun.v1.ListWebhookDeliveriesRequest.run_id": _REQUIRED_ID,
    # deciding, cancelling, deleting
    "agentrun.v1.ContinueRequest.run_id": _REQUIRED_ID,
    "agentrun.v1.ContinueRequest.decision": _enum(run_pb2.Decision, without_unspecified=True),
    "agentrun.v1.CancelRunRequest.run_id": _REQUIRED_ID,
    "agentrun.v1.DeleteRunRequest.run_id": _REQUIRED_ID,
    "agentrun.v1.Run.metadata": STRUCT,  # UpdateRun's new metadata
    "agentrun.v1.RetryWebhookDeliveryRequest.run_id": _REQUIRED_ID,
    "agentrun.v1.RetryWebhookDeliveryRequest.delivery_id": _REQUIRED_ID,
}

# Per message: the fields (JSON names) a request must have.
REQUIRED: Final[Mapping[str, tuple[str, ...]]] = {
    "agentrun.v1.RunRequest": ("input",),  # agent_id: from the path
    "agentrun.v1.StreamRunRequest": ("run",),  # a start (re-attach: GET …/runs/{run_id}:stream)
    "agentrun.v1.RunInput": ("message",),
    "agentrun.v1.Media": ("type", "data"),
    "agentrun.v1.ContinueRequest": ("decision",),
}

# Per message: constraints between fields.
DEPENDENT: Final[Mapping[str, Schema]] = {
    "agentrun.v1.RunOptions": {"provider": {"if": _given("provider"), "then": _given("model")}},
    "agentrun.v1.RunInput": {
        "jsonSchema": {
            "required": ["responseFormat"],
            "properties": {"responseFormat": {"const": "RESPONSE_FORMAT_JSON"}},
        }
    },
}

# JSON Schemas a run's answer must satisfy: an object schema, written out in full.
ANSWER_SCHEMA: Final[Schema] = {
    **STRUCT,
    "required": ["type"],
    "properties": {"type": {"const": "object"}},
    "not": {"required": ["$ref"]},
    "description": "a JSON Schema (Draft 7 unless `$schema` names another dialect the server knows) "
    f'with "type": "object" at the top and no `$ref`; at most {MAX_STRUCT_BYTES} bytes, '
    f"{MAX_STRUCT_DEPTH} levels deep",
}
# Per field: a schema that replaces the derived one.
FIELDS_WHOLE: Final[Mapping[str, Schema]] = {"agentrun.v1.RunInput.json_schema": ANSWER_SCHEMA}


# Resources a request carries whole (UpdateRunRequest.run): only their updatable fields matter (FIELDS
# documents those), and their schema is the responses' too, whose output fields are longer than any
# request string may be.
_RESOURCES: Final = frozenset({"agentrun.v1.Run"})


def _reachable(descriptor: Descriptor, seen: frozenset[str] = frozenset()) -> Iterator[str]:
    seen |= {descriptor.full_name}
    yield descriptor.full_name
    for field in descriptor.fields:
        nested = field.message_type
        if (
            nested is None
            or nested.full_name in seen | _RESOURCES
            or nested.full_name.startswith("google.protobuf.")
        ):
            continue
        yield from _reachable(nested, seen)


# The messages requests are made of: their string fields get the server's length and NUL bounds.
REQUEST_MESSAGES: Final = frozenset(
    name
    for method in run_service_pb2.DESCRIPTOR.services_by_name["RunService"].methods
    for name in _reachable(method.input_type)
)
