"""The canonical REST surface, generated at startup from RunService's google.api.http annotations
(not a hand-written second copy): each binding's method and path template become a route; the
path variables, the body field and the query parameters fill the request message; a unary
response is its ProtoJSON, the server stream is SSE."""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from dataclasses import dataclass

from agentrun.v1 import run_pb2, run_service_pb2
from aiohttp import web
from google.api import annotations_pb2, http_pb2
from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor, ServiceDescriptor
from google.protobuf.message import Message

from gateway import codec, keys, openapi, sse
from gateway.errors import ApiError, FieldViolation, canonical_body

SERVICE = run_service_pb2.DESCRIPTOR.services_by_name["RunService"]
# `{field}`, `{field=*}` (one segment) and `{field=**}` (the rest) are the templates in use. A
# segment stops at ":" so GET /v1/runs/{run_id} never swallows /v1/runs/x:stream.
_VARIABLE = re.compile(r"\{([^{}=]+)(?:=([^{}]*))?\}")
_SEGMENT_REGEX = {"*": "[^/:]+", "**": "[^:]+"}
_BOOLS = {"true": True, "false": False, "1": True, "0": False}
_NOT_IN_QUERY = {"google.protobuf.Struct", "google.protobuf.Value", "google.protobuf.ListValue"}
RESERVED_STREAM_QUERY = frozenset({"lastEventId"})  # read by gateway.sse, not a request field


@dataclass(frozen=True)
class Binding:
    method: MethodDescriptor
    verb: str  # GET, POST, ...
    template: str  # as annotated, e.g. /v1/agents/{run.agent_id}/runs:stream
    body: str  # "", "*" or a field name
    route_path: str  # aiohttp's form of the template
    variables: tuple[tuple[str, str], ...]  # (aiohttp variable, field path)
    index: int  # 0 for the rule itself, 1.. for additional_bindings

    @property
    def streaming(self) -> bool:
        return bool(self.method.server_streaming)

    @property
    def name(self) -> str:
        suffix = f".binding{self.index}" if self.index else ""
        return f"{self.method.full_name}{suffix}"


def bindings(service: ServiceDescriptor = SERVICE) -> list[Binding]:
    """Every (method, HTTP rule) of the service, additional bindings included. Raises ValueError
    on a template, body or field this transcoder cannot serve, so a bad proto fails at startup."""
    found: list[Binding] = []
    for method in service.methods:
        options = method.GetOptions()
        if not options.HasExtension(annotations_pb2.http):
            continue
        rule = options.Extensions[annotations_pb2.http]
        for index, each in enumerate([rule, *rule.additional_bindings]):
            found.append(_binding(method, each, index))
    return found


def _binding(method: MethodDescriptor, rule: http_pb2.HttpRule, index: int) -> Binding:
    pattern = rule.WhichOneof("pattern")
    if pattern is None:
        raise ValueError(f"{method.full_name}: HTTP rule without a pattern")
    if pattern == "custom":
        verb, template = rule.custom.kind.upper(), rule.custom.path
    else:
        verb, template = pattern.upper(), getattr(rule, pattern)
    route_path, variables = to_route_path(template)
    for field_path in [path for _, path in variables] + [f for f in (rule.body,) if f not in ("", "*")]:
        if codec.resolve(method.input_type, field_path) is None:
            raise ValueError(f"{method.full_name}: {template} names unknown field {field_path!r}")
    if method.server_streaming and method.output_type is not run_service_pb2.StreamRunResponse.DESCRIPTOR:
        raise ValueError(f"{method.full_name}: no SSE mapping for {method.output_type.full_name}")
    if rule.response_body:  # unused by this API; refuse rather than silently answer the whole message
        raise ValueError(f"{method.full_name}: response_body is not supported")
    return Binding(method, verb, template, rule.body, route_path, tuple(variables), index)


def to_route_path(template: str) -> tuple[str, list[tuple[str, str]]]:
    """`/v1/agents/{run.agent_id}/runs:stream` -> `/v1/agents/{run__agent_id:[^/:]+}/runs:stream`
    (aiohttp variables are identifiers; a custom verb is a literal suffix)."""
    parts: list[str] = []
    variables: list[tuple[str, str]] = []
    position = 0
    for match in _VARIABLE.finditer(template):
        field_path, segments = match.group(1), match.group(2) or "*"
        if segments not in _SEGMENT_REGEX:
            raise ValueError(f"unsupported path template variable {match.group(0)!r} in {template}")
        name = field_path.replace(".", "__")
        parts += [template[position : match.start()], f"{{{name}:{_SEGMENT_REGEX[segments]}}}"]
        variables.append((name, field_path))
        position = match.end()
    parts.append(template[position:])
    return "".join(parts), variables


# ---- request and response --------------------------------------------------------------------


async def build_request(request: web.Request, binding: Binding) -> Message:
    """The request message from the body, the query and the path, every bad field in one 400."""
    data = await _body(request, binding)
    violations = _apply_query(request, binding, data) + _apply_path(request, binding, data)
    cls = message_factory.GetMessageClass(binding.method.input_type)
    message, more = codec.parse(data, cls)
    if violations or more:
        raise codec.invalid(violations + more)
    return message


async def _body(request: web.Request, binding: Binding) -> codec.JsonObject:
    if not binding.body:
        return {}  # GET / DELETE: a body, if any, is not read
    value = await codec.read_json(request)
    if value is None:
        return {}
    if binding.body != "*":
        return {binding.body: value}
    if not isinstance(value, dict):
        raise ApiError.invalid("request body must be a JSON object")
    return value


def _apply_query(request: web.Request, binding: Binding, data: codec.JsonObject) -> list[FieldViolation]:
    violations: list[FieldViolation] = []
    reserved = RESERVED_STREAM_QUERY if binding.streaming else frozenset()
    for key, values in codec.string_values(request.query).items():
        if key in reserved:
            continue
        fields = None if binding.body == "*" else codec.resolve(binding.method.input_type, key)
        if fields is None:
            where = " (this method takes its fields in the JSON body)" if binding.body == "*" else ""
            violations.append(FieldViolation(key, f"unknown query parameter{where}"))
            continue
        path = ".".join(f.name for f in fields)
        problem = _query_problem(binding, fields, path, values)
        if problem:
            violations.append(FieldViolation(path, problem))
            continue
        typed = [
            _BOOLS.get(v.lower(), v) if fields[-1].type == FieldDescriptor.TYPE_BOOL else v for v in values
        ]
        repeated = fields[-1].is_repeated
        codec.set_path(data, fields, typed if repeated else typed[0])
    return violations


def _query_problem(binding: Binding, fields: list[FieldDescriptor], path: str, values: list[str]) -> str:
    leaf = fields[-1]
    nested = leaf.message_type
    if any(path == bound or path.startswith(bound + ".") for _, bound in binding.variables):
        return "is set by the URL path"
    if binding.body and fields[0].name == binding.body:
        return "is set by the request body"
    if any(f.is_repeated for f in fields[:-1]):
        return "is inside a repeated field and cannot be set from the query string"
    if nested is not None and (nested.GetOptions().map_entry or nested.full_name in _NOT_IN_QUERY):
        return "cannot be set from the query string"
    if nested is not None and nested.full_name not in codec.WELL_KNOWN:
        return f"is a message: set its fields instead, e.g. {path}.<field>"
    if not leaf.is_repeated and len(values) > 1:
        return "given more than once"
    return ""


def _apply_path(request: web.Request, binding: Binding, data: codec.JsonObject) -> list[FieldViolation]:
    violations: list[FieldViolation] = []
    for name, field_path in binding.variables:
        value = request.match_info[name]
        fields = codec.resolve(binding.method.input_type, field_path)
        assert fields is not None  # checked when the binding was made
        previous = codec.set_path(data, fields, value)
        if previous is not None and str(previous) != value:
            violations.append(
                FieldViolation(field_path, f"must match the URL path ({value!r}) or be left out")
            )
    return violations


async def handle_unary(request: web.Request, *, binding: Binding) -> web.StreamResponse:
    message = await build_request(request, binding)
    upstream = request.app[keys.UPSTREAM]
    response: Message = await upstream.call(getattr(upstream.runs, binding.method.name), message, request)
    return codec.json_response(response)


async def handle_stream(request: web.Request, *, binding: Binding) -> web.StreamResponse:
    message = await build_request(request, binding)
    assert isinstance(message, run_service_pb2.StreamRunRequest)  # checked when the binding was made
    return await sse.stream_run(request, message, CANONICAL_SSE)


def _frames(event: run_pb2.RunEvent) -> list[sse.Frame]:
    return [sse.Frame(codec.dumps({"event": codec.to_dict(event)}))]  # ProtoJSON of StreamRunResponse


def _error_frames(error: ApiError) -> list[sse.Frame]:
    return [sse.Frame(codec.dumps(canonical_body(error)), event="error")]


CANONICAL_SSE = sse.SseFormat(frames=_frames, error=_error_frames)


# ---- registration and OpenAPI ----------------------------------------------------------------


def setup(app: web.Application) -> None:
    registry = app[keys.REGISTRY]
    # Fixed paths first: with ":"-free segments no two templates overlap today; this keeps a
    # future overlapping pair resolving to the more literal route.
    for binding in sorted(bindings(), key=lambda b: (len(b.variables), -len(b.template))):
        handler = handle_stream if binding.streaming else handle_unary
        registry.add(
            binding.verb,
            binding.route_path,
            functools.partial(handler, binding=binding),
            operation=operation(binding, registry.schemas),
            doc_path=binding.template,
            name=binding.name,
        )


def operation(binding: Binding, schemas: openapi.Schemas) -> openapi.Operation:
    method = binding.method
    parameters = [
        openapi.parameter(path, "path", schemas.field(_field(method.input_type, path)))
        for _, path in binding.variables
    ]
    if binding.body != "*":
        parameters += list(_query_parameters(binding, schemas))
    body = None
    if binding.body == "*":
        body = schemas.message(method.input_type)
    elif binding.body:
        body = schemas.field(_field(method.input_type, binding.body))
    summary = f"{method.name} ({binding.verb} {binding.template})"
    op_id = f"{method.containing_service.name}_{method.name}" + (f"_{binding.index}" if binding.index else "")
    tags = [method.containing_service.name]
    if not binding.streaming:
        return openapi.operation(
            op_id,
            summary,
            response=schemas.message(method.output_type),
            tags=tags,
            parameters=parameters,
            body=body,
        )
    parameters += _resume_parameters()
    stream = {
        "type": "string",
        "description": "SSE: per event `id: <seq>` and `data: <StreamRunResponse ProtoJSON>`; "
        "a failure after the headers is an `error` event with the error body as data.",
    }
    return openapi.operation(
        op_id,
        summary,
        response=stream,
        tags=tags,
        parameters=parameters,
        body=body,
        content_type="text/event-stream",
    )


def _query_parameters(binding: Binding, schemas: openapi.Schemas) -> Iterator[openapi.Schema]:
    bound = {path for _, path in binding.variables} | {binding.body}
    for path, field in _leaf_fields(binding.method.input_type, "", 0):
        if path not in bound and not any(path.startswith(b + ".") for b in bound if b):
            yield openapi.parameter(path, "query", schemas.field(field))


def _leaf_fields(descriptor: Descriptor, prefix: str, depth: int) -> Iterator[tuple[str, FieldDescriptor]]:
    """Fields a query string can set: scalars, enums, timestamps, durations, and (to depth 3)
    the fields of singular messages under dotted names."""
    for field in descriptor.fields:
        path = prefix + field.name
        nested = field.message_type
        if nested is None or nested.full_name in codec.WELL_KNOWN - _NOT_IN_QUERY:
            yield path, field
        elif _is_plain_singular(field) and depth < 3:
            yield from _leaf_fields(nested, path + ".", depth + 1)


def _is_plain_singular(field: FieldDescriptor) -> bool:
    nested = field.message_type
    if nested is None or field.is_repeated:
        return False
    return not nested.GetOptions().map_entry and nested.full_name not in _NOT_IN_QUERY


def _resume_parameters() -> list[openapi.Schema]:
    seq = {"type": "integer", "minimum": 0}
    text = "Re-attach: send only events with a larger seq (the last `id:` received)."
    return [
        openapi.parameter("Last-Event-ID", "header", seq, description=text),
        openapi.parameter("lastEventId", "query", seq, description=text + " For clients without headers."),
    ]


def _field(descriptor: Descriptor, path: str) -> FieldDescriptor:
    fields = codec.resolve(descriptor, path)
    assert fields is not None
    return fields[-1]
