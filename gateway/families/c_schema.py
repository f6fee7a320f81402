"""Family C's `json_schema` as the server can use it. WebAgent takes any Draft-7 schema; the server
wants an object schema without references (models answer structured output as a JSON object). So
local references (`#/$defs/...`, `#/definitions/...`, any `#/...` pointer, as pydantic's
model_json_schema() writes them) are written out in place, and a schema whose top level is not an
object is wrapped as the property `result` of one, which the answer is unwrapped from again (the
run's metadata says so: WRAPPED)."""

from __future__ import annotations

from typing import Any, Final
from urllib.parse import unquote

from common.shapes import WRAPPED_ANSWER

Json = dict[str, Any]
WRAPPED: Final = WRAPPED_ANSWER  # metadata key: the answer is {"result": <the client's answer>}
ORIGINAL: Final = "json_schema"  # metadata key: the client's schema as JSON text, when rewritten
MAX_NODES: Final = 20_000  # a schema whose references write out to more is refused
MAX_UNROLL: Final = 2  # a recursive reference is written out this often, then left open ({})
# Keywords whose value is a schema, a list of schemas, or a map of names to schemas (Draft 7).
_ONE = frozenset(
    {"additionalItems", "additionalProperties", "contains", "propertyNames", "if", "then", "else", "not"}
)
_LIST = frozenset({"allOf", "anyOf", "oneOf"})
_MAP = frozenset({"properties", "patternProperties", "dependencies"})
_CONTAINERS = frozenset({"$defs", "definitions"})  # only referenced: dropped once written out
# What a `$ref` keeps of the keywords beside it (Draft 7 ignores the rest).
_ANNOTATIONS = frozenset({"title", "description", "default", "examples"})


def answer_schema(schema: Any) -> tuple[Json, bool]:
    """(the schema to send the server, whether the answer is wrapped); ValueError says why a
    schema cannot be used (remote or broken references, too large once written out)."""
    resolved = _Resolver(schema).walk(schema, ())
    if isinstance(resolved, dict) and resolved.get("type") == "object":
        return resolved, False
    inner = {True: {}, False: {"not": {}}}.get(resolved, resolved) if isinstance(resolved, bool) else resolved
    wrapper: Json = {
        "type": "object",
        "properties": {"result": inner},
        "required": ["result"],
        "additionalProperties": False,
    }
    if isinstance(inner, dict) and "$schema" in inner:  # the dialect is named at the top only
        wrapper = {"$schema": inner["$schema"], **wrapper}
        wrapper["properties"]["result"] = {k: v for k, v in inner.items() if k != "$schema"}
    return wrapper, True


class _Resolver:
    def __init__(self, root: Any) -> None:
        self.root = root
        self.budget = MAX_NODES

    def walk(self, node: Any, trail: tuple[str, ...]) -> Any:
        """`node` (a schema) with its references written out; `trail`: the references being
        written out around it, to tell a recursive one."""
        self.budget -= 1
        if self.budget < 0:
            raise ValueError(f"the schema is larger than {MAX_NODES} nodes once its $refs are written out")
        if not isinstance(node, dict):
            return node  # true / false
        ref = node.get("$ref")
        if isinstance(ref, str):
            if trail.count(ref) >= MAX_UNROLL:
                return {}
            target = self.walk(self.pointer(ref), (*trail, ref))
            notes = {k: v for k, v in node.items() if k in _ANNOTATIONS}
            return {**target, **notes} if isinstance(target, dict) and notes else target
        out: Json = {}
        for key, value in node.items():
            if key in _CONTAINERS:
                continue
            out[key] = self._keyword(key, value, trail)
        return out

    def _keyword(self, key: str, value: Any, trail: tuple[str, ...]) -> Any:
        if key in _ONE:
            return self.walk(value, trail)
        if key == "items":
            return (
                [self.walk(v, trail) for v in value] if isinstance(value, list) else self.walk(value, trail)
            )
        if key in _LIST and isinstance(value, list):
            return [self.walk(v, trail) for v in value]
        if key in _MAP and isinstance(value, dict):
            # dependencies may also list property names: those stay as they are
            return {k: v if isinstance(v, list) else self.walk(v, trail) for k, v in value.items()}
        return value  # enum, const, default, type...: values, not schemas

    def pointer(self, ref: str) -> Any:
        """The part of the root a local reference (`#` or `#/a/b`) points at."""
        if not ref.startswith("#"):
            raise ValueError(f"only references within the schema (#/...) are supported, not {ref!r}")
        fragment = unquote(ref[1:])
        if fragment and not fragment.startswith("/"):
            raise ValueError(f"reference {ref!r} names an anchor; only JSON pointers (#/...) are supported")
        node = self.root
        for raw in fragment.split("/")[1:]:
            part = raw.replace("~1", "/").replace("~0", "~")
            if isinstance(node, dict) and part in node:
                node = node[part]
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                raise ValueError(f"reference {ref!r} points at nothing in the schema")
        return node
