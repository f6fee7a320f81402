"""Prepared ProtoJSON for run events: what json_format.MessageToDict (and codec.dumps of it) gives
for a RunEvent, built from the fields directly. A stream sends one event per token, and
MessageToDict's generic walk (descriptor look-ups, ListFields, a Timestamp through datetime, a new
JSONEncoder per json.dumps) were most of the 20-30 µs an event took to become SSE bytes. Run
responses (a Run holds a Value, a Struct and a Duration) take the same road.

Each message type is planned once from its descriptor: its fields in number order, how presence is
read (value, HasField, or one WhichOneof per oneof), and how a value becomes JSON text or a
ProtoJSON Python value. A type holding a scalar whose JSON form is subtle (floats, bytes), a map, a
closed enum, enum value options or extensions is not planned and stays with json_format. A
message-typed field whose type is not planned (a well-known type other than Timestamp, or a type
of the kind just named) is printed by json_format for that field alone: MessageToDict of the field's
value is what json_format puts under the field's key in the parent's object. A message json_format
would refuse (an out-of-range Timestamp or Duration, a NaN in a Value) goes to json_format whole,
which then fails with its own error. tests/test_event_encoding.py and tests/test_run_json.py hold
the output to json_format's byte for byte."""

from __future__ import annotations

import contextlib
import datetime
import functools
import json
from collections.abc import Callable
from dataclasses import dataclass
from json.encoder import encode_basestring
from typing import Any, Final

from agentrun.v1 import run_pb2
from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

JsonObject = dict[str, Any]
ToText = Callable[[Any], str]  # a field value -> its JSON text
ToValue = Callable[[Any], Any]  # a field value -> its ProtoJSON Python value

# One encoder for every call: json.dumps with options builds a new JSONEncoder each time.
_COMPACT: Final = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
_DAY_S: Final = 86_400
_EPOCH: Final = datetime.datetime(1970, 1, 1)
# json_format's accepted range (0001-01-01 to 9999-12-31); outside it, it raises.
_MIN_S: Final = -62_135_596_800
_MAX_S: Final = 253_402_300_799
_NANOS: Final = 1_000_000_000
_TIMESTAMP: Final = "google.protobuf.Timestamp"
_INT64: Final = frozenset(
    {FieldDescriptor.CPPTYPE_INT64, FieldDescriptor.CPPTYPE_UINT64}
)  # quoted in ProtoJSON
_INT32: Final = frozenset({FieldDescriptor.CPPTYPE_INT32, FieldDescriptor.CPPTYPE_UINT32})


def compact(value: Any) -> str:
    """Compact one-line JSON (no raw line breaks: SSE data needs no splitting)."""
    return _COMPACT.encode(value)


class _Generic(Exception):
    """This value is json_format's to print (it raises for it)."""


class _Unplanned(Exception):
    """A type with a field the plans leave to json_format."""


@dataclass(frozen=True)
class _Field:
    name: str
    json_name: str
    key: str  # '"jsonName":'
    has: bool  # presence by HasField; else a zero value or an empty list is absent
    text: ToText
    value: ToValue


@dataclass(frozen=True)
class _Oneof:
    """Members of one oneof that come next to each other in field-number order."""

    name: str
    members: dict[str, _Field]


class Plan:
    """One message type's fields as ProtoJSON, in the order json_format prints them (ListFields:
    by field number)."""

    def __init__(self, slots: list[_Field | _Oneof]) -> None:
        self._slots = slots

    # text() and value() walk the slots alike; inline, not through a shared generator, which
    # cost a fifth more per event.
    def text(self, message: Message) -> str:
        parts: list[str] = []
        for slot in self._slots:
            if type(slot) is _Oneof:
                member = slot.members.get(message.WhichOneof(slot.name) or "")
                if member is not None:
                    parts.append(member.key + member.text(getattr(message, member.name)))
            elif type(slot) is _Field:
                if slot.has:
                    if message.HasField(slot.name):
                        parts.append(slot.key + slot.text(getattr(message, slot.name)))
                else:
                    found = getattr(message, slot.name)
                    if found:  # absent: a zero value or an empty list
                        parts.append(slot.key + slot.text(found))
        return "{" + ",".join(parts) + "}"

    def value(self, message: Message) -> JsonObject:
        out: JsonObject = {}
        for slot in self._slots:
            if type(slot) is _Oneof:
                member = slot.members.get(message.WhichOneof(slot.name) or "")
                if member is not None:
                    out[member.json_name] = member.value(getattr(message, member.name))
            elif type(slot) is _Field:
                if slot.has:
                    if message.HasField(slot.name):
                        out[slot.json_name] = slot.value(getattr(message, slot.name))
                else:
                    found = getattr(message, slot.name)
                    if found:
                        out[slot.json_name] = slot.value(found)
        return out


_PLANS: dict[str, Plan | None] = {}


def plan(descriptor: Any) -> Plan | None:
    """The type's plan, made once; None if json_format must print it. (`descriptor`: a message
    Descriptor; typed Any because the stubs tell upb and Python descriptors apart.)"""
    name = descriptor.full_name
    if name not in _PLANS:
        _PLANS[name] = None  # while it is planned: a type that holds itself is json_format's
        with contextlib.suppress(_Unplanned):
            _PLANS[name] = Plan(_slots(descriptor))
    return _PLANS[name]


def _slots(descriptor: Any) -> list[_Field | _Oneof]:
    # Well-known types have JSON forms of their own (Timestamp's is handled in _message).
    if descriptor.extension_ranges or descriptor.file.name.startswith("google/protobuf/"):
        raise _Unplanned
    slots: list[_Field | _Oneof] = []
    for field in sorted(descriptor.fields, key=lambda f: f.number):
        prepared = _field(field)
        oneof = field.containing_oneof
        if oneof is None or len(oneof.fields) < 2:  # a proto3 `optional` has a oneof of its own
            slots.append(prepared)
        elif slots and isinstance(slots[-1], _Oneof) and slots[-1].name == oneof.name:
            slots[-1].members[field.name] = prepared
        else:
            slots.append(_Oneof(oneof.name, {field.name: prepared}))
    return slots


def _field(field: FieldDescriptor) -> _Field:
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        raise _Unplanned
    text, value = _item(field)
    if field.is_repeated:
        text, value = _list(text, value)
    return _Field(
        field.name, field.json_name, encode_basestring(field.json_name) + ":", field.has_presence, text, value
    )


def _list(text: ToText, value: ToValue) -> tuple[ToText, ToValue]:
    return (
        lambda items: "[" + ",".join([text(item) for item in items]) + "]",
        lambda items: [value(item) for item in items],
    )


def _item(field: FieldDescriptor) -> tuple[ToText, ToValue]:
    kind = field.cpp_type
    if kind == FieldDescriptor.CPPTYPE_MESSAGE:
        return _message(field.message_type)
    if kind == FieldDescriptor.CPPTYPE_ENUM:
        return _enum(field)
    if kind == FieldDescriptor.CPPTYPE_STRING and field.type != FieldDescriptor.TYPE_BYTES:
        return encode_basestring, _same
    if kind == FieldDescriptor.CPPTYPE_BOOL:
        return _bool_text, bool
    if kind in _INT64:
        return _quoted, str
    if kind in _INT32:
        return str, _same
    raise _Unplanned  # floats and doubles (NaN, float32 rounding), bytes (base64)


def _message(descriptor: Any) -> tuple[ToText, ToValue]:
    if descriptor.full_name == _TIMESTAMP:
        return _timestamp_text, _timestamp
    nested = plan(descriptor)
    if nested is None:
        return _generic_text, _generic_value
    return nested.text, nested.value


def _generic_value(message: Message) -> Any:
    """json_format's value for a message-typed field. Its printer gives a field's message to
    _MessageToJsonObject (json_format.py, _FieldToJsonObject; each item of a repeated field alike),
    which is what MessageToDict calls on a whole message, with the same (default) options."""
    try:
        return json_format.MessageToDict(message)
    except Exception:
        # In the parent, json_format reports the failure (a NaN in a Value, an out-of-range
        # Duration, an Any of an unknown type) its own way, naming the parent field: let it.
        raise _Generic from None


def _generic_text(message: Message) -> str:
    return compact(_generic_value(message))  # the parent's json.dumps encodes the nested value so


def _enum(field: FieldDescriptor) -> tuple[ToText, ToValue]:
    enum: Any = field.enum_type
    # Closed enums raise on unknown numbers; value options may rename values in JSON.
    if enum.is_closed or any(v.GetOptions().ByteSize() for v in enum.values):
        raise _Unplanned
    names = {v.number: v.name for v in enum.values}
    quoted = {number: encode_basestring(name) for number, name in names.items()}
    # An unknown number of an open enum prints as the number.
    return (lambda number: quoted.get(number) or str(number)), (lambda number: names.get(number, number))


def _same(value: Any) -> Any:
    return value


def _bool_text(value: bool) -> str:
    return "true" if value else "false"


def _quoted(value: int) -> str:
    return f'"{value}"'


@functools.lru_cache(maxsize=256)
def _second(seconds: int) -> str:
    # Events of a stream share their seconds: the datetime work is done once per second.
    rest = seconds % _DAY_S
    return (_EPOCH + datetime.timedelta((seconds - rest) // _DAY_S, rest)).isoformat()


def _timestamp(ts: Any) -> str:
    """RFC 3339 in UTC with 0, 3, 6 or 9 fractional digits, the fewest that are exact."""
    seconds, nanos = ts.seconds, ts.nanos
    if not (_MIN_S <= seconds <= _MAX_S and 0 <= nanos < _NANOS):
        raise _Generic
    whole = _second(seconds)
    if nanos == 0:
        return whole + "Z"
    if nanos % 1_000_000 == 0:
        return f"{whole}.{nanos // 1_000_000:03d}Z"
    if nanos % 1_000 == 0:
        return f"{whole}.{nanos // 1_000:06d}Z"
    return f"{whole}.{nanos:09d}Z"


def _timestamp_text(ts: Any) -> str:
    return '"' + _timestamp(ts) + '"'  # digits, '-', ':', 'T', '.', 'Z': nothing to escape


# ---- the entry points -----------------------------------------------------------------------


def to_dict(message: Message) -> JsonObject:
    """json_format.MessageToDict(message), defaults left out, lowerCamelCase names."""
    found = plan(message.DESCRIPTOR)
    if found is not None:
        with contextlib.suppress(_Generic):
            return found.value(message)
    result: JsonObject = json_format.MessageToDict(message)
    return result


def to_json(message: Message) -> str:
    """compact(json_format.MessageToDict(message)), without the dict."""
    found = plan(message.DESCRIPTOR)
    if found is not None:
        with contextlib.suppress(_Generic):
            return found.text(message)
    return compact(json_format.MessageToDict(message))


def sse_frame(data: str, event_id: str | None) -> bytes:
    """One unnamed SSE frame whose data has no line break (JSON from this module or compact)."""
    if event_id is None:
        return f"data: {data}\n\n".encode()
    return f"id: {event_id}\ndata: {data}\n\n".encode()


def canonical_sse(event: run_pb2.RunEvent, event_id: str | None) -> bytes:
    """The canonical surface's frame: the StreamRunResponse {"event": <RunEvent>} as ProtoJSON
    (transcode.CANONICAL_SSE's frames and sse.encode, prepared)."""
    return sse_frame('{"event":' + to_json(event) + "}", event_id)


plan(run_pb2.RunEvent.DESCRIPTOR)  # the hot type: planned at import, not on a stream's first event
