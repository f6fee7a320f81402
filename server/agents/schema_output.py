"""Structured output against a caller's JSON Schema: checked when the run is submitted, shown to the
model as the output schema, and enforced on the answer (a mismatch goes back to the model as a retry)."""

from __future__ import annotations

from typing import Any

import jsonschema
from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic_core import core_schema


def _validator(schema: dict[str, Any]) -> jsonschema.protocols.Validator:
    # Draft 7 unless the schema names its own dialect in "$schema".
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft7Validator)
    return cls(schema)


def schema_problem(schema: dict[str, Any]) -> str | None:
    """Why a schema cannot be used for a run's output, or None."""
    try:
        jsonschema.validators.validator_for(schema, default=jsonschema.Draft7Validator).check_schema(schema)
    except jsonschema.SchemaError as exc:
        where = "/".join(str(p) for p in exc.absolute_path)
        return f"not a valid JSON Schema{' at ' + where if where else ''}: {exc.message}"
    # Models return structured output as a JSON object (tool arguments or a JSON reply).
    if schema.get("type") != "object":
        return 'the answer must be a JSON object: the schema needs "type": "object" at the top'
    if "$ref" in str(schema):
        return "references ($ref) are not supported; write the schema out in full"
    return None


def _message(error: jsonschema.ValidationError) -> str:
    where = "/".join(str(p) for p in error.absolute_path) or "the top level"
    return f"at {where}: {error.message}"


def schema_output(schema: dict[str, Any]) -> type[dict[str, Any]]:
    """An output type for pydantic-ai: a JSON object that must satisfy `schema`."""
    validator = _validator(schema)

    def check(value: dict[str, Any]) -> dict[str, Any]:
        error = jsonschema.exceptions.best_match(validator.iter_errors(value))
        if error is not None:
            # A ValueError becomes a validation error that pydantic-ai sends back to the model.
            raise ValueError(f"the answer does not match the required JSON schema {_message(error)}")
        return value

    class SchemaDict(dict[str, Any]):
        # Tells pydantic-ai the schema is the whole answer (not to be wrapped in {"response": ...}).
        __is_model_like__ = True

        @classmethod
        def __get_pydantic_core_schema__(
            cls, source_type: Any, handler: GetCoreSchemaHandler
        ) -> core_schema.CoreSchema:
            plain = core_schema.dict_schema(core_schema.str_schema(), core_schema.any_schema())
            return core_schema.no_info_after_validator_function(check, plain)

        @classmethod
        def __get_pydantic_json_schema__(
            cls, core: core_schema.CoreSchema, handler: GetJsonSchemaHandler
        ) -> dict[str, Any]:
            return schema

    return SchemaDict
