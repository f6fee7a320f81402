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

from gateway import codec, event_json, keys, openapi, rules, sse
from gateway.errors import ApiError, FieldViolation, canonical_body

SERVICE = run_service_pb2.DESCRIPTOR.services_by_name["RunService"]
# `{field}`, `{field=*}` (one segment) and `{field=**}` (the rest) are the templates in use. A
# segment stops at ":" so GET /v1/runs/{run_id} never swallows /v1/runs/x:stream.
_VARIABLE = re.compile(r"\{([^{}=]+)(?:=([^{}]*))?\}")
_SEGMENT_REGEX = {"*": "[^/:]+", "**": "[^:]+"}
_ROUTE_VARIABLE = re.compile(r"\{([^{}:]+):[^{}]+\}")
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
    def access_rpc(self) -> str:
        """The unary method whose access rules this binding follows: a stream that starts a run
        is a Run, one that re-attaches a GetRun."""
        if not self.streaming:
            return str(self.method.name)
        return "Run" if self.body else "GetRun"

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
    """`/v1/agents/{run.agent_id}/runs:stream` -> `/v1/agents/{agent_id:[^/:]+}/runs:stream` and
    [("agent_id", "run.agent_id")]: a variable is named by its field's own name (the last part of
    the path, with its message's for an `id`: run.id -> run_id, as GET /v1/runs/{run_id} names the
    same segment; the whole path with "_" for "." if two would share it), since aiohttp variables
    are identifiers and OpenAPI tools cannot read dotted parameter names. A custom verb is a
    literal suffix."""
    matches = list(_VARIABLE.finditer(template))
    leaves = [_leaf(m.group(1)) for m in matches]
    parts: list[str] = []
    variables: list[tuple[str, str]] = []
    position = 0
    for match, leaf in zip(matches, leaves, strict=True):
        field_path, segments = match.group(1), match.group(2) or "*"
        if segments not in _SEGMENT_REGEX:
            raise ValueError(f"unsupported path template variable {match.group(0)!r} in {template}")
        name = leaf if leaves.count(leaf) == 1 else field_path.replace(".", "_")
        parts += [template[position : match.start()], f"{{{name}:{_SEGMENT_REGEX[segments]}}}"]
        variables.append((name, field_path))
        position = match.end()
    parts.append(template[position:])
    return "".join(parts), variables


def _leaf(field_path: str) -> str:
    parts = field_path.split(".")
    return "_".join(parts[-2:]) if parts[-1] == "id" and len(parts) > 1 else parts[-1]


def doc_path(route_path: str) -> str:
    """The OpenAPI path of a route path: `{name:regex}` -> `{name}`."""
    return _ROUTE_VARIABLE.sub(r"{\1}", route_path)


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


CANONICAL_SSE = sse.SseFormat(frames=_frames, error=_error_frames, prepared=event_json.canonical_sse)


# ---- registration and OpenAPI ----------------------------------------------------------------


def setup(app: web.Application) -> None:
    registry = app[keys.REGISTRY]
    # Fixed paths first: with ":"-free segments no two templates overlap today; this keeps a
    # future overlapping pair resolving to the more literal route.
    all_bindings = bindings()
    registry.schemas.path_bound = path_bound(all_bindings)
    for binding in sorted(all_bindings, key=lambda b: (len(b.variables), -len(b.template))):
        handler = handle_stream if binding.streaming else handle_unary
        registry.add(
            binding.verb,
            binding.route_path,
            functools.partial(handler, binding=binding),
            operation=operation(binding, registry.schemas),
            doc_path=doc_path(binding.route_path),
            name=binding.name,
            rpc=binding.access_rpc,
        )


def path_bound(found: list[Binding]) -> dict[str, set[str]]:
    """Per message, the fields every HTTP body of it leaves to the URL path (RunRequest.agent_id,
    ContinueRequest.run_id, ...): the body schemas document them as not allowed."""
    bound: dict[str, set[str]] = {}
    for binding in found:
        if binding.body != "*":
            continue
        for _, path in binding.variables:
            fields = codec.resolve(binding.method.input_type, path)
            assert fields is not None
            owner: Descriptor = binding.method.input_type
            if len(fields) > 1:
                nested = fields[-2].message_type
                assert nested is not None  # a dotted path goes through messages
                owner = nested
            bound.setdefault(owner.full_name, set()).add(fields[-1].name)
    return bound


def operation(binding: Binding, schemas: openapi.Schemas) -> openapi.Operation:
    method = binding.method
    parameters = [_path_parameter(name, path, method.input_type, schemas) for name, path in binding.variables]
    if binding.body != "*":
        parameters += list(_query_parameters(binding, schemas))
    body = None
    body_required = False
    if binding.body == "*":
        body = schemas.message(method.input_type)
        body_required = method.input_type.full_name in rules.REQUIRED
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
            body_required=body_required,
        )
    parameters += _resume_parameters()
    stream = {
        "anyOf": [
            openapi.sse_event(
                data=schemas.message(method.output_type),
                description="one run event: `id: <seq>`, `data: <StreamRunResponse ProtoJSON>`",
            ),
            openapi.sse_event(
                ["error"],
                openapi.ref(openapi.ERROR),
                description="a failure after the stream opened: the error body as data",
            ),
        ]
    }
    return openapi.operation(
        op_id,
        summary,
        response=stream,
        tags=tags,
        parameters=parameters,
        body=body,
        body_required=body_required,
        content_type=openapi.SSE,
    )


def _path_parameter(name: str, path: str, request: Descriptor, schemas: openapi.Schemas) -> openapi.Schema:
    # What the server checks on the field, not empty (the value is percent-decoded: "/" and ":"
    # reach the field as %2F and %3A).
    schema = {**_in_url(schemas.field(_field(request, path))), "minLength": 1}
    return openapi.parameter(name, "path", schema, description=f"Sets `{path}` of the request.")


def _in_url(schema: openapi.Schema) -> openapi.Schema:
    """A 64-bit integer in a URL is plain decimal text: documented as an integer, so its range,
    not the JSON string form's pattern, bounds it."""
    if schema.get("type") == ["string", "integer"]:
        schema = {k: v for k, v in schema.items() if k != "pattern"} | {"type": "integer"}
    return schema


def _query_parameters(binding: Binding, schemas: openapi.Schemas) -> Iterator[openapi.Schema]:
    bound = {path for _, path in binding.variables} | {binding.body}
    for path, field in _leaf_fields(binding.method.input_type, "", 0):
        if path not in bound and not any(path.startswith(b + ".") for b in bound if b):
            yield openapi.parameter(path, "query", _in_url(schemas.field(field)))


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
    seq = {"type": "integer", "minimum": 0, "maximum": sse.MAX_SEQ}
    text = "Re-attach: send only events with a larger seq (the last `id:` received)."
    return [
        openapi.parameter("Last-Event-ID", "header", seq, description=text),
        openapi.parameter("lastEventId", "query", seq, description=text + " For clients without headers."),
    ]


def _field(descriptor: Descriptor, path: str) -> FieldDescriptor:
    fields = codec.resolve(descriptor, path)
    assert fields is not None
    return fields[-1]
