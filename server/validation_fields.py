"""The shape of every field of every request, checked from the message's descriptor before a handler
reads it, so that a new field is covered the day it is added: strings within their column's length
(or a documented bound) and free of NUL, which PostgreSQL cannot store; Structs of finite numbers,
bounded in size and depth; Timestamps within protobuf's range and Durations normalised; enum numbers
that name a value. What the values mean (required fields, ranges, ids, tokens) is
server/validation.py's.

Lone surrogates never get this far: proto3 strings are UTF-8, and a request with invalid UTF-8 is
refused as undecodable by AuthInterceptor."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from google.protobuf import duration_pb2, struct_pb2, timestamp_pb2
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from common import limits
from server.convert import MAX_TIMESTAMP_S, MIN_TIMESTAMP_S

MAX_CHARS = limits.MAX_CHARS
DEFAULT_MAX_CHARS = limits.DEFAULT_MAX_CHARS
MAX_STRUCT_BYTES = limits.MAX_STRUCT_BYTES
MAX_STRUCT_DEPTH = limits.MAX_STRUCT_DEPTH
# google.protobuf.Duration: about ±10,000 years.
MAX_DURATION_S = 315_576_000_000
NANOS = 1_000_000_000

Report = Callable[[str, str], None]


@dataclass(frozen=True, slots=True)
class _Field:
    """What checking a field takes, read from its descriptor once: descriptors are immutable, and
    reading their options and types again for every field of every request added up."""

    entry: tuple[FieldDescriptor, FieldDescriptor] | None  # a map's (key, value) fields
    repeated: bool
    kind: str  # of one value: "json", "time", "duration", "message", "string", "enum" or "other"
    limit: int  # a string's
    enum_values: Mapping[int, Any] | None
    enum_name: str


_JSON = {
    d.full_name
    for d in (struct_pb2.Struct.DESCRIPTOR, struct_pb2.Value.DESCRIPTOR, struct_pb2.ListValue.DESCRIPTOR)
}
_FIELDS: dict[FieldDescriptor, _Field] = {}


def _field(field: FieldDescriptor) -> _Field:
    known = _FIELDS.get(field)
    if known is None:
        known = _FIELDS[field] = _describe(field)
    return known


def _describe(field: FieldDescriptor) -> _Field:
    entry = field.message_type
    pair = None
    if entry is not None and entry.GetOptions().map_entry:
        pair = (entry.fields_by_name["key"], entry.fields_by_name["value"])
    if entry is not None:
        name = entry.full_name
        kind = "json" if name in _JSON else _MESSAGE_KINDS.get(name, "message")
    elif field.type == FieldDescriptor.TYPE_STRING:
        kind = "string"
    else:
        kind = "enum" if field.enum_type is not None else "other"
    enum = field.enum_type
    return _Field(
        entry=pair,
        repeated=field.is_repeated,
        kind=kind,
        limit=MAX_CHARS.get(field.name, DEFAULT_MAX_CHARS),
        enum_values=enum.values_by_number if enum is not None else None,
        enum_name=enum.name if enum is not None else "",
    )


_MESSAGE_KINDS = {
    timestamp_pb2.Timestamp.DESCRIPTOR.full_name: "time",
    duration_pb2.Duration.DESCRIPTOR.full_name: "duration",
}


def check(report: Report, message: Message, path: str = "") -> None:
    """Report (field path, description) for every field of `message` of the wrong shape."""
    for field, value in message.ListFields():
        info = _field(field)
        if info.entry is not None:
            where = f"{path}{field.name}"
            key_field, value_field = info.entry
            for key, item in value.items():
                _value(report, key_field, key, f"{where}[{key!r}]")
                _value(report, value_field, item, f"{where}[{key!r}]")
        elif info.repeated:
            where = f"{path}{field.name}"
            if info.enum_values is not None:  # one violation for the field, as for states=[42]
                unknown = [n for n in value if n not in info.enum_values]
                if unknown:
                    report(where, f"unknown {info.enum_name} value {unknown[0]}")
                continue
            for i, item in enumerate(value):
                _value(report, field, item, f"{where}[{i}]")
        elif info.kind == "string":  # the most common field, its path built only when reported
            if len(value) > info.limit or "\x00" in value:
                _string(report, value, info.limit, f"{path}{field.name}")
        elif info.kind != "other":
            _value(report, field, value, f"{path}{field.name}")


def _value(report: Report, field: FieldDescriptor, value: Any, where: str) -> None:
    """One value of `field` (an element, if the field is repeated)."""
    info = _field(field)
    kind = info.kind
    if kind == "string":
        _string(report, value, info.limit, where)
    elif kind == "enum":
        if value not in info.enum_values:  # type: ignore[operator]
            report(where, f"unknown {info.enum_name} value {value}")
    elif kind != "other":
        _message(report, kind, value, where)


def _string(report: Report, value: str, limit: int, where: str) -> None:
    if len(value) > limit:
        report(where, f"longer than {limit} characters")
    elif "\x00" in value:
        report(where, "must not contain NUL characters")


def _message(report: Report, kind: str, value: Message, where: str) -> None:
    if kind == "json":
        problem = json_problem(value)  # type: ignore[arg-type]
        if problem is not None:
            report(where, problem)
    elif kind == "time":
        if not MIN_TIMESTAMP_S <= value.seconds <= MAX_TIMESTAMP_S or not 0 <= value.nanos < NANOS:  # type: ignore[attr-defined]
            report(where, "not a valid time: from 0001-01-01 to 9999-12-31, nanos from 0 to 999999999")
    elif kind == "duration":
        if not duration_normalised(value):  # type: ignore[arg-type]
            report(where, "not a valid duration: |nanos| below 1e9, with the sign of seconds")
    else:
        check(report, value, f"{where}.")


def duration_normalised(value: duration_pb2.Duration) -> bool:
    seconds, nanos = value.seconds, value.nanos
    return (
        abs(seconds) <= MAX_DURATION_S
        and abs(nanos) < NANOS
        and not (seconds > 0 and nanos < 0)
        and not (seconds < 0 and nanos > 0)
    )


def json_problem(value: struct_pb2.Struct | struct_pb2.Value | struct_pb2.ListValue) -> str | None:
    """What makes a Struct, Value or ListValue unfit to store as JSON, or None."""
    if value.ByteSize() > MAX_STRUCT_BYTES:
        return f"larger than {MAX_STRUCT_BYTES} bytes"
    return _json(value, 1)


def _json(value: struct_pb2.Struct | struct_pb2.Value | struct_pb2.ListValue, depth: int) -> str | None:
    if depth > MAX_STRUCT_DEPTH:
        return f"nested deeper than {MAX_STRUCT_DEPTH} levels"
    if isinstance(value, struct_pb2.Struct):
        for key, item in value.fields.items():
            if "\x00" in key:
                return "keys must not contain NUL characters"
            problem = _json(item, depth)
            if problem is not None:
                return problem
        return None
    if isinstance(value, struct_pb2.ListValue):
        for item in value.values:
            problem = _json(item, depth)
            if problem is not None:
                return problem
        return None
    kind = value.WhichOneof("kind")
    if kind == "number_value" and not math.isfinite(value.number_value):
        return "numbers must be finite (no NaN or Infinity)"
    if kind == "string_value" and "\x00" in value.string_value:
        return "strings must not contain NUL characters"
    if kind == "struct_value":
        return _json(value.struct_value, depth + 1)
    if kind == "list_value":
        return _json(value.list_value, depth + 1)
    return None
