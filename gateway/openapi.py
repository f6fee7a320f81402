"""OpenAPI 3.1 pieces: JSON Schemas derived from message descriptors (the ProtoJSON shapes the codec
reads and writes), small builders for operations, and the document assembled from the registry."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final, cast

from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor
from google.protobuf.message import Message

from gateway import rules
from gateway.codec import WELL_KNOWN

Schema = dict[str, Any]
Operation = dict[str, Any]  # an OpenAPI Operation Object

ERROR = "agentrun.gateway.Error"
_REF = "#/components/schemas/"
_INT64 = {
    FieldDescriptor.TYPE_INT64,
    FieldDescriptor.TYPE_SINT64,
    FieldDescriptor.TYPE_SFIXED64,
    FieldDescriptor.TYPE_UINT64,
    FieldDescriptor.TYPE_FIXED64,
}
_INT32: Schema = {"type": "integer", "format": "int32", "minimum": -(2**31), "maximum": 2**31 - 1}
_UINT32: Schema = {"type": "integer", "format": "int32", "minimum": 0, "maximum": 2**32 - 1}
_SCALARS: Mapping[int, Schema] = {
    FieldDescriptor.TYPE_STRING: {"type": "string"},
    FieldDescriptor.TYPE_BYTES: {"type": "string", "contentEncoding": "base64"},
    FieldDescriptor.TYPE_BOOL: {"type": "boolean"},
    FieldDescriptor.TYPE_DOUBLE: {"type": "number", "format": "double"},
    FieldDescriptor.TYPE_FLOAT: {"type": "number", "format": "float"},
    FieldDescriptor.TYPE_INT32: _INT32,
    FieldDescriptor.TYPE_SINT32: _INT32,
    FieldDescriptor.TYPE_SFIXED32: _INT32,
    FieldDescriptor.TYPE_UINT32: _UINT32,
    FieldDescriptor.TYPE_FIXED32: _UINT32,
}
# ProtoJSON writes 64-bit integers as strings (JavaScript numbers lose precision); it reads both.
_INT64_SCHEMA: Schema = {
    "type": ["string", "integer"],
    "format": "int64",
    "pattern": r"^[+-]?[0-9]{1,19}$",  # applies to the string form only
    "minimum": rules.MIN_INT64,  # and these to the number form
    "maximum": rules.MAX_INT64,
}
_WELL_KNOWN_SCHEMAS: Mapping[str, Schema] = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time", "pattern": rules.TIMESTAMP},
    "google.protobuf.Duration": {"type": "string", "pattern": r"^-?[0-9]+(\.[0-9]{1,9})?s$"},
    "google.protobuf.Struct": {"type": "object", "additionalProperties": True},
    "google.protobuf.Value": {},
    "google.protobuf.ListValue": {"type": "array"},
    "google.protobuf.FieldMask": {"type": "string"},
    "google.protobuf.Empty": {"type": "object"},
    "google.protobuf.Any": {"type": "object", "properties": {"@type": {"type": "string"}}},
    "google.protobuf.DoubleValue": {"type": ["number", "null"]},
    "google.protobuf.FloatValue": {"type": ["number", "null"]},
    "google.protobuf.Int64Value": {"type": ["string", "integer", "null"], "format": "int64"},
    "google.protobuf.UInt64Value": {"type": ["string", "integer", "null"], "format": "int64"},
    "google.protobuf.Int32Value": {"type": ["integer", "null"], "format": "int32"},
    "google.protobuf.UInt32Value": {"type": ["integer", "null"], "minimum": 0},
    "google.protobuf.BoolValue": {"type": ["boolean", "null"]},
    "google.protobuf.StringValue": {"type": ["string", "null"]},
    "google.protobuf.BytesValue": {"type": ["string", "null"], "contentEncoding": "base64"},
}
_ERROR_SCHEMA: Schema = {
    "type": "object",
    "description": "google JSON error: the gRPC status with its ErrorInfo and BadRequest details.",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "status", "message"],
            "properties": {
                "code": {"type": "integer", "description": "HTTP status"},
                "status": {"type": "string", "description": "gRPC code name, e.g. NOT_FOUND"},
                "message": {"type": "string"},
                "details": {"type": "array", "items": _WELL_KNOWN_SCHEMAS["google.protobuf.Any"]},
            },
        }
    },
}


class Schemas:
    """components.schemas: message and enum schemas built on first reference (so recursive
    messages work), plus schemas families add by name."""

    def __init__(self) -> None:
        self.components: dict[str, Schema] = {ERROR: _ERROR_SCHEMA}
        # Per message, fields the URL path sets in every HTTP body of it: left out of its schema.
        self.path_bound: dict[str, set[str]] = {}

    def add(self, name: str, schema: Schema) -> Schema:
        """Registers a family's named schema; returns a $ref to it."""
        self.components[name] = schema
        return ref(name)

    def of(self, cls: type[Message]) -> Schema:
        """Schema of a message class, e.g. `schemas.of(run_pb2.Run)` in a family's operation."""
        # The stubs type DESCRIPTOR as "python or upb Descriptor"; both have the same surface.
        return self.message(cast(Descriptor, cls.DESCRIPTOR))

    def message(self, descriptor: Descriptor) -> Schema:
        """Schema of a message in ProtoJSON (a $ref, or the inline form of a well-known type)."""
        if descriptor.full_name in WELL_KNOWN:
            return dict(_WELL_KNOWN_SCHEMAS[descriptor.full_name])
        name = descriptor.full_name
        if name not in self.components:
            self.components[name] = {}  # placeholder: stops recursion
            bound = self.path_bound.get(name, set())
            description = (
                f"{name} in ProtoJSON (proto field names accepted too; no other fields, and each once)."
            )
            if bound:
                description += " Not in the body: " + ", ".join(sorted(bound)) + " (set by the URL path)."
            schema: Schema = {
                "type": "object",
                "description": description,
                "properties": {f.json_name: self.field(f) for f in descriptor.fields if f.name not in bound},
                "additionalProperties": False,
            }
            if name in rules.REQUIRED:
                schema["required"] = list(rules.REQUIRED[name])
            if name in rules.DEPENDENT:
                schema["dependentSchemas"] = dict(rules.DEPENDENT[name])
            self.components[name] = schema
        return ref(name)

    def field(self, field: FieldDescriptor) -> Schema:
        """Schema of a field's JSON value, with what the server checks on top (gateway.rules)."""
        if field.full_name in rules.FIELDS_WHOLE:
            return dict(rules.FIELDS_WHOLE[field.full_name])
        nested = field.message_type
        if nested is not None and nested.GetOptions().map_entry:
            value = nested.fields_by_name["value"]
            return {"type": "object", "additionalProperties": self.field(value)}
        schema = self.single(field)
        owner = field.containing_type.full_name if field.containing_type is not None else ""
        if field.type == FieldDescriptor.TYPE_STRING and owner in rules.REQUEST_MESSAGES:
            schema |= rules.string_field(field.name)  # a request's string: the server's bounds
        if field.is_repeated:
            schema = {"type": "array", "items": schema}
        return {**schema, **rules.FIELDS.get(field.full_name, {})}

    def single(self, field: FieldDescriptor) -> Schema:
        """Schema of one value of the field (an element, for repeated fields)."""
        if field.message_type is not None:
            return self.message(field.message_type)
        if field.enum_type is not None:
            return self.enum(field.enum_type)
        if field.type in _INT64:
            return dict(_INT64_SCHEMA)
        return dict(_SCALARS[field.type])

    def enum(self, descriptor: EnumDescriptor) -> Schema:
        if descriptor.full_name not in self.components:
            names = [v.name for v in descriptor.values]
            self.components[descriptor.full_name] = {"type": "string", "enum": names}
        return ref(descriptor.full_name)


def ref(name: str) -> Schema:
    return {"$ref": _REF + name}


SSE: Final = "text/event-stream"


def sse_event(
    names: Iterable[str] = ("message",),
    data: Schema | None = None,
    *,
    description: str = "",
    event_id: Schema | None = None,
) -> Schema:
    """One Server-Sent Event as OpenAPI documents a `text/event-stream` response before 3.2's
    itemSchema: an object of the event's fields. `names`: the `event:` values ("message" when a
    frame has none); `data`: the schema of the JSON the `data:` lines hold (None: plain text);
    `event_id`: the schema of the `id:` field (default: the event's seq)."""
    text: Schema = {"type": "string"}
    if data is not None:
        text |= {"contentMediaType": "application/json", "contentSchema": data}
    names = list(names)
    event: Schema = {"const": names[0]} if len(names) == 1 else {"enum": names}
    result: Schema = {
        "type": "object",
        "required": ["data"],
        "properties": {
            "event": event,
            "data": text,
            "id": event_id or {"type": "string", "pattern": "^[0-9]+$", "description": "the event's seq"},
            "retry": {"type": "integer", "minimum": 0},
        },
        "additionalProperties": False,
    }
    if description:
        result["description"] = description
    return result


def json_content(schema: Schema) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def operation(
    operation_id: str,
    summary: str,
    *,
    response: Schema,
    tags: Iterable[str] = (),
    parameters: Iterable[Mapping[str, Any]] = (),
    body: Schema | None = None,
    status: int = 200,
    content_type: str = "application/json",
    errors: Schema | None = None,
    body_required: bool = False,
) -> Operation:
    """An Operation: JSON (or `content_type`) success response, errors in `errors` (the canonical
    google JSON error by default; families pass their own error schema)."""
    result: Operation = {
        "operationId": operation_id,
        "summary": summary,
        "responses": {
            str(status): {"description": summary, "content": {content_type: {"schema": response}}},
            "default": {"description": "error", "content": json_content(errors or ref(ERROR))},
        },
    }
    if tags:
        result["tags"] = list(tags)
    if parameters:
        result["parameters"] = [dict(p) for p in parameters]
    if body is not None:
        result["requestBody"] = {"required": body_required, "content": json_content(body)}
    return result


def parameter(
    name: str, where: str, schema: Schema, *, required: bool = False, description: str = ""
) -> Schema:
    result: Schema = {"name": name, "in": where, "schema": schema, "required": required or where == "path"}
    if description:
        result["description"] = description
    return result


def document(
    operations: Iterable[tuple[str, str, Operation]], schemas: Schemas, *, title: str, version: str
) -> dict[str, Any]:
    """The OpenAPI 3.1 document of (method, path, operation) triples."""
    paths: dict[str, dict[str, Operation]] = {}
    for method, path, op in operations:
        paths.setdefault(path, {})[method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "paths": dict(sorted(paths.items())),
        "components": {"schemas": dict(sorted(schemas.components.items()))},
    }
