"""The one codec between protobuf messages and JSON: ProtoJSON (google.protobuf.json_format) out,
and in a field-by-field walk on top of it so every bad field is reported at once with its path,
the way the server's BadRequest reports them."""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final, TypeVar

import grpc
from aiohttp import web
from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from multidict import MultiMapping

from gateway import event_json, keys
from gateway.errors import ApiError, FieldViolation

M = TypeVar("M", bound=Message)
JsonObject = dict[str, Any]

# Deepest nesting of arrays and objects a request body may have (Struct values, JSON Schemas and
# configs need a handful of levels; protobuf's own parser stops at 100).
MAX_JSON_DEPTH: Final = 64
_TOO_DEEP = f"arrays and objects nested deeper than {MAX_JSON_DEPTH} levels"
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
# Left to right: an escaped backslash, a valid surrogate pair, or a lone surrogate escape.
_ESCAPES = re.compile(
    r"\\\\|\\u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2}|(?P<lone>\\u[dD][89a-fA-F][0-9a-fA-F]{2})"
)

# Types with their own JSON form (a string, any value, ...): parsed whole by json_format.
WELL_KNOWN = frozenset(
    "google.protobuf." + name
    for name in [
        *("Timestamp", "Duration", "Struct", "Value", "ListValue", "FieldMask", "Any", "Empty"),
        *("DoubleValue", "FloatValue", "Int64Value", "UInt64Value", "Int32Value", "UInt32Value"),
        *("BoolValue", "StringValue", "BytesValue"),
    ]
)
_INTS32 = {FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_SINT32, FieldDescriptor.TYPE_SFIXED32}
_UINTS32 = {FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_FIXED32}
_INTS64 = {
    FieldDescriptor.TYPE_INT64,
    FieldDescriptor.TYPE_SINT64,
    FieldDescriptor.TYPE_SFIXED64,
    FieldDescriptor.TYPE_UINT64,
    FieldDescriptor.TYPE_FIXED64,
}
_WKT_EXPECTED = {
    "google.protobuf.Timestamp": 'an RFC 3339 timestamp, e.g. "2024-05-01T12:00:00Z"',
    "google.protobuf.Duration": 'a duration in seconds with an "s" suffix, e.g. "1.5s"',
    "google.protobuf.Struct": "a JSON object",
    "google.protobuf.ListValue": "a JSON array",
    "google.protobuf.FieldMask": 'a comma-separated list of field paths, e.g. "a,b.c"',
}


# ---- out ------------------------------------------------------------------------------------


def to_dict(message: Message, *, with_defaults: bool = False, proto_names: bool = False) -> JsonObject:
    """ProtoJSON object: lowerCamelCase names, enums by name, int64 as strings, RFC 3339 times."""
    if not (with_defaults or proto_names):
        # The same dict, prepared (events, Run responses); json_format's own for unplanned types.
        return event_json.to_dict(message)
    result: JsonObject = json_format.MessageToDict(
        message,
        always_print_fields_with_no_presence=with_defaults,
        preserving_proto_field_name=proto_names,
    )
    return result


def dumps(value: Any) -> str:
    """Compact one-line JSON, so an SSE frame's data is a single `data:` line."""
    return event_json.compact(value)


def json_response(message: Message, *, status: int = 200) -> web.Response:
    # dumps(to_dict(message)), without building the dict where the type is planned.
    return web.Response(text=event_json.to_json(message), status=status, content_type="application/json")


# ---- in -------------------------------------------------------------------------------------


def from_dict(data: Any, cls: type[M], *, prefix: str = "") -> M:
    """Builds a `cls` from parsed JSON; accepts lowerCamelCase and proto names. Unknown fields,
    wrong types and bad enum names raise one ApiError (400) listing every bad field's path."""
    message, violations = parse(data, cls, prefix=prefix)
    if violations:
        raise invalid(violations)
    return message


def parse(data: Any, cls: type[M], *, prefix: str = "") -> tuple[M, list[FieldViolation]]:
    """Like from_dict, but returns the violations (to report them with the caller's own)."""
    message = cls()
    violations: list[FieldViolation] = []
    if data is None:
        return message, violations
    if not isinstance(data, dict) and message.DESCRIPTOR.full_name not in WELL_KNOWN:
        where = f" `{prefix}`" if prefix else ""
        raise ApiError.invalid(f"request body{where} must be a JSON object")
    _merge(data, message, prefix, violations)
    return message, violations


def invalid(violations: Iterable[FieldViolation]) -> ApiError:
    """The same summary the server writes for INVALID_ARGUMENT, so both read alike."""
    items = list(violations)
    summary = "; ".join(f"{v.field}: {v.description}" for v in items)
    return ApiError.invalid(f"invalid request: {summary}", items)


async def read_json(request: web.Request) -> Any:
    """The request body as JSON (None when empty). Too large is 413, malformed is 400 (BadJson)."""
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise ApiError.too_large(request.app[keys.SETTINGS].max_body_bytes) from None
    return loads(raw)


@dataclass(eq=False)
class BadJson(ApiError):
    """400 MALFORMED_JSON: a body that is not JSON the gateway reads (bad syntax, not UTF-8, nested
    deeper than MAX_JSON_DEPTH, a lone surrogate, a number no double holds). `problem` and
    `position` (a character offset) let families word it their own way."""

    problem: str = ""
    position: int = 0
    not_text: bool = False  # the bytes are not UTF-8 (or -16/-32) text at all

    @classmethod
    def of(cls, problem: str, text: str = "", position: int = 0, *, not_text: bool = False) -> BadJson:
        line = text.count("\n", 0, position) + 1
        column = position - (text.rfind("\n", 0, position) + 1) + 1
        where = f" at line {line} column {column}" if text else ""
        return cls(
            400,
            grpc.StatusCode.INVALID_ARGUMENT,
            f"malformed JSON: {problem}{where}",
            "MALFORMED_JSON",
            problem=problem,
            position=position,
            not_text=not_text,
        )


def loads(raw: bytes | str) -> Any:
    """JSON text (UTF-8, -16 or -32 bytes, or str) as Python values, None when blank. Anything the
    codec, protobuf or a family could not hold is a BadJson here, before it can fail deeper: nesting
    beyond MAX_JSON_DEPTH (json's recursion would), lone UTF-16 surrogates (no UTF-8 encoding, so
    no protobuf string), NaN/Infinity and numbers beyond a double's range."""
    if isinstance(raw, bytes):
        try:
            text = raw.decode(json.detect_encoding(raw))  # strict: no lone surrogates as bytes
        except UnicodeDecodeError as exc:
            raise BadJson.of(f"not UTF-8 text ({exc.reason} at byte {exc.start})", not_text=True) from None
    else:
        text = raw
    if not text.strip():
        return None
    try:
        value = json.loads(
            text, parse_constant=_reject_constant, parse_float=_finite_float, parse_int=_finite_int
        )
    except json.JSONDecodeError as exc:
        raise BadJson.of(exc.msg, text, exc.pos) from None
    except RecursionError:
        raise BadJson.of(_TOO_DEEP) from None
    except ValueError as exc:  # the parse_* hooks; int digits beyond sys.get_int_max_str_digits
        raise BadJson.of(str(exc)) from None
    if isinstance(value, dict | list) and text.count("[") + text.count("{") > MAX_JSON_DEPTH:
        _check_depth(value)  # only a body with that many brackets can be that deep
    if _SURROGATE_ESCAPE.search(text):
        _check_surrogates(text)
    return value


def _check_depth(value: Any) -> None:
    """Containers nested deeper than MAX_JSON_DEPTH (json.loads itself stops at the interpreter's
    recursion limit, ~1000, and every recursive walk after it would fail the same way)."""
    level: list[tuple[Any, int]] = [(value, 1)]
    while level:
        node, depth = level.pop()
        children = node.values() if isinstance(node, dict) else node
        for child in children:
            if isinstance(child, dict | list):
                if depth + 1 > MAX_JSON_DEPTH:
                    raise BadJson.of(_TOO_DEEP)
                level.append((child, depth + 1))


def _check_surrogates(text: str) -> None:
    for match in _ESCAPES.finditer(text):
        if match.group("lone"):
            found = match.group("lone")
            raise BadJson.of(f"lone surrogate {found} in a string", text, match.start())


def _finite_float(token: str) -> float:
    value = float(token)
    if not math.isfinite(value):
        raise ValueError(f"number {token[:40]} is out of range")
    return value


def _finite_int(token: str) -> int:
    value = int(token)
    if abs(value) > sys.float_info.max:  # exact: ints compare with floats by value
        raise ValueError(f"number {token[:40]}... is out of range")
    return value


def field_by_name(descriptor: Any, name: str) -> FieldDescriptor | None:
    """A field by its proto name or its lowerCamelCase JSON name (`descriptor`: a message
    Descriptor; typed Any because the stubs tell upb and Python descriptors apart)."""
    field: FieldDescriptor | None = descriptor.fields_by_name.get(name)
    if field is None:
        field = next((f for f in descriptor.fields if f.json_name == name), None)
    return field


def resolve(descriptor: Descriptor, dotted: str) -> list[FieldDescriptor] | None:
    """The fields along a dotted path ("run.agent_id" or "run.agentId"); None if any is unknown."""
    fields: list[FieldDescriptor] = []
    current: Any = descriptor
    for part in dotted.split("."):
        field = field_by_name(current, part) if current is not None else None
        if field is None:
            return None
        fields.append(field)
        current = field.message_type
    return fields


def expected(field: FieldDescriptor) -> str:
    """What a field's JSON value must look like, for error messages."""
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        return "a JSON object"
    if field.is_repeated:
        return "a JSON array"
    return expected_item(field)


def expected_item(field: FieldDescriptor) -> str:
    if field.enum_type is not None:
        return "one of " + ", ".join(v.name for v in field.enum_type.values)
    if field.message_type is not None:
        return _WKT_EXPECTED.get(field.message_type.full_name, "a JSON object")
    kind = field.type
    if kind == FieldDescriptor.TYPE_BOOL:
        return "true or false"
    if kind in _INTS32:
        return "a 32-bit integer"
    if kind in _UINTS32:
        return "a non-negative 32-bit integer"
    if kind in _INTS64:
        return "a 64-bit integer (a number or a decimal string)"
    if kind in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return "a number"
    if kind == FieldDescriptor.TYPE_BYTES:
        return "base64 text"
    return "a string"


# ---- the walk -------------------------------------------------------------------------------


def _merge(data: Any, message: Message, path: str, out: list[FieldViolation]) -> None:
    descriptor = message.DESCRIPTOR
    if descriptor.full_name in WELL_KNOWN:
        _parse_whole(data, message, path, out)
        return
    if not isinstance(data, dict):
        out.append(FieldViolation(path, "must be a JSON object"))
        return
    seen: dict[str, str] = {}
    oneofs: dict[str, str] = {}
    for key, value in data.items():
        field = field_by_name(descriptor, key)
        if field is None:
            out.append(FieldViolation(_join(path, key), "unknown field"))
            continue
        field_path = _join(path, field.name)
        if field.name in seen:
            out.append(FieldViolation(field_path, f"given twice (as {seen[field.name]} and {key})"))
            continue
        seen[field.name] = key
        if value is None and not _accepts_null(field):
            continue  # ProtoJSON: null means "not set"
        oneof = field.containing_oneof
        if oneof is not None and not oneof.name.startswith("_"):  # "_x" oneofs are proto3 optional
            if oneof.name in oneofs:
                out.append(FieldViolation(field_path, f"only one of {oneof.name} may be set"))
                continue
            oneofs[oneof.name] = field.name
        _merge_field(value, message, field, field_path, out)


def _merge_field(
    value: Any, message: Message, field: FieldDescriptor, path: str, out: list[FieldViolation]
) -> None:
    nested = field.message_type
    is_map = nested is not None and nested.GetOptions().map_entry
    plain_message = nested is not None and nested.full_name not in WELL_KNOWN
    if field.is_repeated and not is_map:
        if not isinstance(value, list):
            out.append(FieldViolation(path, f"must be {expected(field)}"))
            return
        for i, item in enumerate(value):
            item_path = f"{path}[{i}]"
            if plain_message:
                _merge(item, getattr(message, field.name).add(), item_path, out)
            else:
                _parse_field(message, field, [item], item_path, out)
    elif plain_message and not is_map:
        child = getattr(message, field.name)
        child.SetInParent()  # `"input": {}` still marks the field as present
        _merge(value, child, path, out)
    else:
        _parse_field(message, field, value, path, out)


def _parse_field(
    message: Message, field: FieldDescriptor, value: Any, path: str, out: list[FieldViolation]
) -> None:
    """Scalars, enums, maps and well-known types: json_format knows their JSON forms; parse the
    one field into a scratch message so its error can be pinned on this path."""
    scratch = type(message)()
    try:
        json_format.ParseDict({field.json_name: value}, scratch)
    except (json_format.ParseError, ValueError, TypeError, AttributeError, OverflowError):
        out.append(FieldViolation(path, f"must be {expected_item(field)}"))
        return
    message.MergeFrom(scratch)


def _parse_whole(data: Any, message: Message, path: str, out: list[FieldViolation]) -> None:
    try:
        json_format.ParseDict(data, message)
    except (json_format.ParseError, ValueError, TypeError, AttributeError, OverflowError):
        what = _WKT_EXPECTED.get(message.DESCRIPTOR.full_name, "a valid " + message.DESCRIPTOR.name)
        out.append(FieldViolation(path, f"must be {what}"))


def _accepts_null(field: FieldDescriptor) -> bool:
    # google.protobuf.Value is the one type where JSON null is a value (NullValue), not "unset".
    return field.message_type is not None and field.message_type.full_name == "google.protobuf.Value"


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def set_path(target: JsonObject, fields: list[FieldDescriptor], value: Any) -> Any:
    """Sets `value` at a field path in a JSON object; returns the value already there (under the
    proto or the JSON name), or None. Used to merge path and query values into a body."""
    node = target
    for field in fields[:-1]:
        key = field.json_name if field.json_name in node else field.name
        child = node.get(key)
        if child is None:
            child = node[key] = {}
        elif not isinstance(child, dict):
            return None  # keep the client's bad value: the walk reports it as not an object
        node = child
    last = fields[-1]
    previous = None
    for key in (last.name, last.json_name):
        if key in node:
            previous = node.pop(key)
    node[last.name] = value
    return previous


def string_values(query: MultiMapping[str]) -> dict[str, list[str]]:
    """A query's values grouped by key, in order (repeated keys are repeated fields)."""
    return {key: list(query.getall(key)) for key in dict.fromkeys(query)}
