"""Which agent a family B job runs (API_FAMILIES.md "Which agent runs"): `recipe_name` names a
configured agent; `agent_file` names an agents YAML under the configured root and `agent_yaml` is
one inline (only where a setting allows it); else the configured default agent.

The server runs configured agents only, so an agents file's first agent runs as the configured
agent its `id` names, or else as the default agent, with what the file says of it (model,
instructions, sampling) as the run's overrides. Both agentrun's format (`agents:` a list of
{id, model, instructions, options}) and PraisonAI's (`roles:` or `agents:` a mapping of
{role, goal, backstory, instructions, llm}) are read."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import grpc
import yaml
from agentrun.v1 import run_pb2
from agentrun.v1 import run_service_pb2 as pb
from aiohttp import web

from gateway import keys
from gateway.errors import ApiError
from gateway.upstream import upstream

MAX_FILE_BYTES: Final = 1024 * 1024


class AgentSourceError(Exception):
    """400: the job names an agent source this gateway refuses or cannot read."""


@dataclass(frozen=True)
class FileAgent:
    """The first agent of an agents file, as a run can use it."""

    agent_id: str = ""  # the configured agent it names ("": the default agent)
    options: run_pb2.RunOptions = field(default_factory=run_pb2.RunOptions)


async def job_agent(request: web.Request, body: Any) -> FileAgent | None:
    """The agent of a job that names an agents file or inline YAML and no recipe; None for the
    rest (and for fields of the wrong type, which the body's validation reports)."""
    if not isinstance(body, dict) or body.get("recipe_name"):
        return None  # the recipe wins over agent_file
    settings = request.app[keys.SETTINGS]
    name, inline = body.get("agent_file"), body.get("agent_yaml")
    if isinstance(name, str) and name:
        agent = first_agent(await read_file(name, settings.family_b_agent_root), "agent_file")
    elif isinstance(inline, str) and inline:
        if not settings.family_b_inline_agents:
            raise AgentSourceError(
                "inline agent_yaml is not enabled on this server; use agent_file or recipe_name"
            )
        agent = first_agent(inline, "agent_yaml")
    else:
        return None
    if agent.agent_id and not await _configured(request, agent.agent_id):
        agent = FileAgent("", agent.options)  # an agent of its own: the default agent runs it
    return agent


async def _configured(request: web.Request, agent_id: str) -> bool:
    up = upstream(request)
    try:
        await up.call(up.runs.GetAgent, pb.GetAgentRequest(agent_id=agent_id), request)
    except ApiError as exc:
        if exc.code in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
            return False
        raise
    return True


async def read_file(name: str, root: str) -> str:
    """The text of `name` (relative names are taken from the root), which must lie under `root`."""
    if not root:
        raise AgentSourceError("agent_file is not enabled on this server (no agent root is configured)")
    data = await asyncio.to_thread(_read_under, Path(root), name)
    try:
        return data.decode()
    except UnicodeDecodeError:
        raise AgentSourceError(f"agent_file is not UTF-8 text: {name}") from None


def _read_under(root: Path, name: str) -> bytes:
    try:
        base = root.resolve()
        path = (base / name).resolve()  # an absolute name replaces the base; ".." and links resolved
    except (OSError, ValueError):  # a NUL in the name, a link loop
        raise AgentSourceError(f"agent_file is not a usable path: {name}") from None
    if not path.is_relative_to(base):
        raise AgentSourceError(f"agent_file must be under the agent root: {name}")
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    except OSError:
        raise AgentSourceError(f"agent_file not found or not readable: {name}") from None
    if len(data) > MAX_FILE_BYTES:
        raise AgentSourceError(f"agent_file is larger than {MAX_FILE_BYTES} bytes: {name}")
    return data


def first_agent(text: str, what: str) -> FileAgent:
    """The first agent `text` (an agents YAML) defines; `what` names the source in errors."""
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise AgentSourceError(f"{what} is not valid YAML: {_first_line(exc)}") from None
    entry = _first_entry(document)
    if entry is None:
        raise AgentSourceError(f"{what} defines no agent (expected `agents:` or `roles:`)")
    return FileAgent(_text(entry.get("id")), _options(entry, what))


def _first_entry(document: Any) -> dict[str, Any] | None:
    if not isinstance(document, dict):
        return None
    for key in ("agents", "roles"):
        agents = document.get(key)
        if isinstance(agents, list) and agents and isinstance(agents[0], dict):
            return agents[0]
        if isinstance(agents, dict) and agents:
            first = next(iter(agents.values()))
            return first if isinstance(first, dict) else None
    return None


def _options(entry: dict[str, Any], what: str) -> run_pb2.RunOptions:
    options = run_pb2.RunOptions()
    model = entry.get("model", entry.get("llm"))
    if isinstance(model, dict):  # PraisonAI also writes llm: {model: ...}
        model = model.get("model")
    if model is not None:
        options.model = _text(model)
    options.system_prompt = _instructions(entry)
    nested = entry.get("options")
    defaults: dict[str, Any] = nested if isinstance(nested, dict) else entry
    temperature, max_tokens = defaults.get("temperature"), defaults.get("max_tokens")
    if temperature is not None:
        if not isinstance(temperature, int | float) or isinstance(temperature, bool):
            raise AgentSourceError(f"{what}: temperature must be a number")
        options.temperature = float(temperature)
    if max_tokens is not None:
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or not 0 < max_tokens < 2**31:
            raise AgentSourceError(f"{what}: max_tokens must be a positive integer")
        options.max_tokens = max_tokens
    return options


def _instructions(entry: dict[str, Any]) -> str:
    """agentrun's `instructions`, or PraisonAI's role, goal and backstory."""
    if entry.get("instructions"):
        return _text(entry["instructions"])
    parts = [(label, entry.get(key)) for label, key in (("Role", "role"), ("Goal", "goal"))]
    lines = [f"{label}: {_text(value)}" for label, value in parts if value]
    if entry.get("backstory"):
        lines.append(_text(entry["backstory"]))
    return "\n".join(lines)


def _text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else "" if value is None else str(value)


def _first_line(exc: yaml.YAMLError) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def merged(base: run_pb2.RunOptions, overrides: run_pb2.RunOptions) -> run_pb2.RunOptions:
    """`base` (the file's agent) with the job's `config` overrides on top."""
    result = run_pb2.RunOptions()
    result.CopyFrom(base)
    if overrides.model:
        result.model = overrides.model
        result.provider = overrides.provider
    elif overrides.provider:
        result.provider = overrides.provider
    if overrides.HasField("temperature"):
        result.temperature = overrides.temperature
    if overrides.HasField("max_tokens"):
        result.max_tokens = overrides.max_tokens
    if overrides.system_prompt:
        result.system_prompt = overrides.system_prompt
    return result
