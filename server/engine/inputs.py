"""The stored form of a run's input (a JSON object in `run.input`) and its typed form."""

from __future__ import annotations

from typing import Any

from server.agents.base import Media, Options, RunInput


def run_input_to_dict(value: RunInput) -> dict[str, Any]:
    options = value.options
    data: dict[str, Any] = {"message": value.message}
    if value.media:
        data["media"] = [{"type": m.type, "data": m.data} for m in value.media]
    opts = {
        k: v
        for k, v in (
            ("model", options.model),
            ("provider", options.provider),
            ("temperature", options.temperature),
            ("max_tokens", options.max_tokens),
            ("system_prompt", options.system_prompt),
        )
        if v not in (None, "")
    }
    if opts:
        data["options"] = opts
    if value.generate_followups:
        data["generate_followups"] = True
    if value.response_format != "text":
        data["response_format"] = value.response_format
    if value.json_schema is not None:
        data["json_schema"] = value.json_schema
    return data


def run_input_from_dict(data: dict[str, Any]) -> RunInput:
    return RunInput(
        message=data["message"],
        media=tuple(Media(m["type"], m["data"]) for m in data.get("media", ())),
        options=Options(**data.get("options", {})),
        generate_followups=bool(data.get("generate_followups", False)),
        response_format=data.get("response_format", "text"),
        json_schema=data.get("json_schema"),
    )
