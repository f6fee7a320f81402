"""Loads agents.yaml into runnable agents. A bad file fails at startup naming the file, the agent
and the field."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from server.agents.base import Agent, AgentInfo
from server.agents.plain import PLAIN_AGENTS, SlowAgent
from server.agents.providers import DEMO, ModelCatalog, ModelRef, ModelRefError, ProviderSpec
from server.agents.tools import TOOLS

DEFAULT_AGENTS_FILE = Path(__file__).with_name("agents.yaml")


class AgentConfigError(ValueError):
    """agents.yaml is unreadable or invalid."""


class DefaultOptions(BaseModel):
    """An agent's sampling defaults; a run's options override them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int | None = Field(default=None, gt=0)


class AgentSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    name: str = ""
    description: str = ""
    runtime: Literal["python", "pydantic-ai"] = "pydantic-ai"
    # runtime python: which built-in agent; runtime pydantic-ai: unused.
    impl: Literal["echo", "tools", "approval", "slow"] | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    # runtime pydantic-ai: "provider:model"; "demo" is the offline deterministic model.
    model: str = "demo"
    instructions: str = ""
    tools: tuple[str, ...] = ()
    approval_tools: tuple[str, ...] = ()
    options: DefaultOptions = DefaultOptions()
    is_team: bool = False
    members: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _check(self) -> AgentSpec:
        if self.runtime == "python" and self.impl is None:
            raise ValueError("runtime python needs `impl` (one of echo, tools, approval, slow)")
        if self.is_team and (self.runtime != "pydantic-ai" or not self.members):
            raise ValueError("a team needs runtime pydantic-ai and at least one of `members`")
        if self.members and not self.is_team:
            raise ValueError("`members` is only for agents with is_team: true")
        unknown = [t for t in (*self.tools, *self.approval_tools) if t not in TOOLS]
        if unknown:
            raise ValueError(f"unknown tool(s) {unknown}; built-in tools are {sorted(TOOLS)}")
        stray = [t for t in self.approval_tools if t not in self.tools]
        if stray:
            raise ValueError(f"approval_tools {stray} are not in `tools`")
        return self

    def info(self) -> AgentInfo:
        return AgentInfo(
            id=self.id,
            name=self.name or self.id,
            description=self.description,
            model=self.model if self.runtime == "pydantic-ai" else f"python:{self.impl}",
            tools=self.tools,
            approval_tools=self.approval_tools,
            is_team=self.is_team,
            member_ids=self.members,
        )


def _build(spec: AgentSpec, catalog: ModelCatalog, built: dict[str, Agent]) -> Agent:
    if spec.runtime == "python":
        assert spec.impl is not None
        if spec.impl == "slow":
            return SlowAgent(spec.info(), **spec.params)
        return PLAIN_AGENTS[spec.impl](spec.info())
    from server.agents.pydantic_agent import PydanticAgent, build_pydantic_agent

    members = [built[m] for m in spec.members]
    assert all(isinstance(m, PydanticAgent) for m in members)
    return build_pydantic_agent(spec, catalog, members)  # type: ignore[arg-type]


def _check_members(path: Path, specs: dict[str, AgentSpec]) -> None:
    for spec in specs.values():
        for member_id in spec.members:
            member = specs.get(member_id)
            problem = (
                "is not an agent in this file"
                if member is None
                else "is a team (teams do not nest)"
                if member.is_team
                else "must have runtime pydantic-ai"
                if member.runtime != "pydantic-ai"
                else "has approval_tools (a member cannot pause its team's run)"
                if member.approval_tools
                else ""
            )
            if problem:
                raise AgentConfigError(f"{path}: agent {spec.id!r}, field 'members': {member_id!r} {problem}")


def _model_ref(path: Path, spec: AgentSpec, catalog: ModelCatalog) -> ModelRef:
    if spec.runtime == "python":
        return DEMO
    try:
        return catalog.parse(spec.model)
    except ValueError as exc:
        raise AgentConfigError(f"{path}: agent {spec.id!r}, field 'model': {exc}") from None


def _describe(path: Path, raw: list[Any], error: ValidationError) -> str:
    lines = [f"{path}: invalid agent configuration"]
    for item in error.errors():
        loc = list(item["loc"])
        where = ""
        if len(loc) >= 2 and loc[0] == "providers":
            field = ".".join(str(p) for p in loc[2:]) or "(entry)"
            where = f"provider {loc[1]!r}, field {field!r}: "
        elif len(loc) >= 2 and loc[0] == "agents" and isinstance(loc[1], int):
            entry = raw[loc[1]] if loc[1] < len(raw) else {}
            agent = entry.get("id", f"#{loc[1] + 1}") if isinstance(entry, dict) else f"#{loc[1] + 1}"
            field = ".".join(str(p) for p in loc[2:]) or "(entry)"
            where = f"agent {agent!r}, field {field!r}: "
        lines.append(f"  {where}{item['msg']}")
    return "\n".join(lines)


class _File(BaseModel):
    model_config = ConfigDict(extra="forbid")
    providers: dict[str, ProviderSpec] = Field(default_factory=dict)
    agents: list[AgentSpec]


class AgentRegistry:
    """The configured agents, in file order, and the providers their models use."""

    def __init__(
        self,
        agents: list[Agent],
        catalog: ModelCatalog | None = None,
        models: dict[str, ModelRef] | None = None,
    ) -> None:
        self._agents = {a.info.id: a for a in agents}
        self.catalog = catalog or ModelCatalog()
        self._models = models or {}

    @classmethod
    def load(cls, path: Path = DEFAULT_AGENTS_FILE) -> AgentRegistry:
        try:
            data = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise AgentConfigError(f"{path}: cannot read agent configuration: {exc}") from exc
        raw = data.get("agents", []) if isinstance(data, dict) else []
        try:
            parsed = _File.model_validate(data)
        except ValidationError as exc:
            raise AgentConfigError(_describe(path, raw if isinstance(raw, list) else [], exc)) from None
        specs: dict[str, AgentSpec] = {}
        for spec in parsed.agents:
            if spec.id in specs:
                raise AgentConfigError(f"{path}: agent {spec.id!r}, field 'id': duplicate agent id")
            specs[spec.id] = spec
        _check_members(path, specs)
        catalog = ModelCatalog(parsed.providers)
        models = {spec.id: _model_ref(path, spec, catalog) for spec in parsed.agents}
        built: dict[str, Agent] = {}
        # Members before teams, which hold on to them; file order otherwise.
        for spec in sorted(parsed.agents, key=lambda s: s.is_team):
            try:
                built[spec.id] = _build(spec, catalog, built)
            except (ValueError, TypeError) as exc:
                raise AgentConfigError(f"{path}: agent {spec.id!r}: {exc}") from exc
        return cls([built[spec.id] for spec in parsed.agents], catalog, models)

    def check(self, agent_id: str, model: str, provider: str) -> list[tuple[str, str]]:
        """Problems with a run's model overrides, as (field, description) pairs."""
        if not model and not provider:
            return []
        try:
            self.catalog.parse(model, provider, self._models.get(agent_id, DEMO))
        except ModelRefError as exc:
            return [(f"input.options.{exc.field}", str(exc))]
        return []

    def get(self, agent_id: str) -> Agent | None:
        return self._agents.get(agent_id)

    def __iter__(self) -> Iterator[Agent]:
        return iter(self._agents.values())

    def __len__(self) -> int:
        return len(self._agents)
