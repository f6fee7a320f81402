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
from collections.abc import Callable
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


def check(report: Report, message: Message, path: str = "") -> None:
    """Report (field path, description) for every field of `message` of the wrong shape."""
    for field, value in message.ListFields():
        where = f"{path}{field.name}"
        entry = field.message_type
        if entry is not None and entry.GetOptions().map_entry:
            key_field, value_field = entry.fields_by_name["key"], entry.fields_by_name["value"]
            for key, item in value.items():
                _value(report, key_field, key, f"{where}[{key!r}]")
                _value(report, value_field, item, f"{where}[{key!r}]")
        elif field.is_repeated:
            if field.enum_type is not None:  # one violation for the field, as for states=[42]
                unknown = [n for n in value if n not in field.enum_type.values_by_number]
                if unknown:
                    report(where, f"unknown {field.enum_type.name} value {unknown[0]}")
                continue
            for i, item in enumerate(value):
                _value(report, field, item, f"{where}[{i}]")
        else:
            _value(report, field, value, where)


def _value(report: Report, field: FieldDescriptor, value: Any, where: str) -> None:
    """One value of `field` (an element, if the field is repeated)."""
    if field.message_type is not None:
        _message(report, value, where)
    elif field.type == FieldDescriptor.TYPE_STRING:
        _string(report, value, MAX_CHARS.get(field.name, DEFAULT_MAX_CHARS), where)
    elif field.enum_type is not None and value not in field.enum_type.values_by_number:
        report(where, f"unknown {field.enum_type.name} value {value}")


def _string(report: Report, value: str, limit: int, where: str) -> None:
    if len(value) > limit:
        report(where, f"longer than {limit} characters")
    elif "\x00" in value:
        report(where, "must not contain NUL characters")


def _message(report: Report, value: Message, where: str) -> None:
    if isinstance(value, struct_pb2.Struct | struct_pb2.Value | struct_pb2.ListValue):
        problem = json_problem(value)
        if problem is not None:
            report(where, problem)
    elif isinstance(value, timestamp_pb2.Timestamp):
        if not MIN_TIMESTAMP_S <= value.seconds <= MAX_TIMESTAMP_S or not 0 <= value.nanos < NANOS:
            report(where, "not a valid time: from 0001-01-01 to 9999-12-31, nanos from 0 to 999999999")
    elif isinstance(value, duration_pb2.Duration):
        if not duration_normalised(value):
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
