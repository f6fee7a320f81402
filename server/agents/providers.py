"""LLM providers: which ones exist, where their keys come from, and the pydantic-ai models built on them.

A model reference is "provider:model" (or "demo"). Built-in providers are the ones family C lists
(openai, anthropic, google, groq, mistral, deepseek, together) plus ollama; agents.yaml can override
their endpoint and add named OpenAI- or Anthropic-compatible endpoints (vLLM, llama.cpp, LiteLLM...).
References are checked when a run is submitted; keys are read when a run first uses a provider, so
a provider without a key fails its runs with PROVIDER_NOT_CONFIGURED instead of stopping the server.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic_ai.models import Model

from server.agents.base import AgentFailure
from server.agents.demo_model import DEMO_MODEL_NAME, build_demo_model

Wire = Literal["openai", "anthropic", "google", "groq", "mistral"]
_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,127}$")


class ProviderSpec(BaseModel):
    """One provider: a built-in's defaults, or an agents.yaml `providers:` entry."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # The API the endpoint speaks; built-ins have theirs fixed.
    wire: Wire = "openai"
    base_url: str | None = Field(default=None, pattern=r"^https?://")
    # Environment variable holding the key; None for keyless endpoints (a local Ollama, say).
    api_key_env: str | None = None
    # When set, only these model names may be used with this provider.
    models: tuple[str, ...] | None = None
    max_retries: int = Field(default=2, ge=0, le=10)
    timeout_s: float = Field(default=300.0, gt=0)


BUILTIN_PROVIDERS: dict[str, ProviderSpec] = {
    "openai": ProviderSpec(wire="openai", api_key_env="OPENAI_API_KEY"),
    "anthropic": ProviderSpec(wire="anthropic", api_key_env="ANTHROPIC_API_KEY"),
    "google": ProviderSpec(wire="google", api_key_env="GOOGLE_API_KEY"),
    "groq": ProviderSpec(wire="groq", api_key_env="GROQ_API_KEY"),
    "mistral": ProviderSpec(wire="mistral", api_key_env="MISTRAL_API_KEY"),
    "deepseek": ProviderSpec(
        wire="openai", base_url="https://api.deepseek.com", api_key_env="DEEPSEEK_API_KEY"
    ),
    "together": ProviderSpec(
        wire="openai", base_url="https://api.together.xyz/v1", api_key_env="TOGETHER_API_KEY"
    ),
    "ollama": ProviderSpec(wire="openai", base_url="http://127.0.0.1:11434/v1"),
}


class ModelRefError(ValueError):
    """A model reference that cannot be used; `field` is "model" or "provider"."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True, slots=True)
class ModelRef:
    provider: str  # "" for the demo model
    name: str

    def __str__(self) -> str:
        return f"{self.provider}:{self.name}" if self.provider else self.name


DEMO = ModelRef("", DEMO_MODEL_NAME)


class ModelCatalog:
    """Parses model references against the configured providers and builds (and reuses) models."""

    def __init__(self, overrides: dict[str, ProviderSpec] | None = None) -> None:
        self.providers = _merge(overrides or {})
        self._models: dict[ModelRef, Model] = {}

    def parse(self, model: str, provider: str = "", default: ModelRef = DEMO) -> ModelRef:
        """The reference a run's options (or an agent's `model`) name; ModelRefError says what is wrong.
        A bare model name keeps the default's provider; `provider` alone is not enough."""
        if provider and provider not in self.providers:
            raise ModelRefError("provider", f"unknown provider {provider!r}; known: {self._known()}")
        if not model:
            if provider:
                raise ModelRefError("model", "a provider override needs a model name too")
            return default
        head, sep, tail = model.partition(":")
        if sep and head not in self.providers and not provider:
            raise ModelRefError("model", f"unknown provider {head!r} in {model!r}; known: {self._known()}")
        if sep and head in self.providers and not provider:
            provider, model = head, tail
        elif sep and head in self.providers and head != provider:
            raise ModelRefError(
                "model", f"model {model!r} names provider {head!r} but provider is {provider!r}"
            )
        elif sep and head == provider:
            model = tail
        if model == DEMO_MODEL_NAME and not provider:
            return DEMO
        provider = provider or default.provider
        if not provider:
            raise ModelRefError("model", f"model {model!r} needs a provider: write 'provider:{model}'")
        return self._checked(ModelRef(provider, model))

    def _checked(self, ref: ModelRef) -> ModelRef:
        if not _MODEL_NAME.match(ref.name):
            raise ModelRefError("model", f"{ref.name!r} is not a model name")
        allowed = self.providers[ref.provider].models
        if allowed is not None and ref.name not in allowed:
            raise ModelRefError("model", f"model {ref.name!r} is not enabled for provider {ref.provider!r}")
        return ref

    def _known(self) -> str:
        return ", ".join(sorted(self.providers))

    def model(self, ref: ModelRef) -> Model:
        """The model for a reference; AgentFailure(PROVIDER_NOT_CONFIGURED) when its key is missing."""
        built = self._models.get(ref)
        if built is None:
            built = build_demo_model() if ref == DEMO else _build(ref, self.providers[ref.provider])
            self._models[ref] = built
        return built


def _merge(overrides: dict[str, ProviderSpec]) -> dict[str, ProviderSpec]:
    merged = dict(BUILTIN_PROVIDERS)
    for name, spec in overrides.items():
        builtin = BUILTIN_PROVIDERS.get(name)
        if builtin is None:
            merged[name] = spec
        else:
            # A built-in keeps its wire format; the fields the file sets replace its defaults.
            merged[name] = builtin.model_copy(
                update={**spec.model_dump(exclude_unset=True), "wire": builtin.wire}
            )
    return merged


def _api_key(name: str, spec: ProviderSpec) -> str | None:
    if spec.api_key_env is None:
        return None
    key = os.environ.get(spec.api_key_env)
    if not key:
        raise AgentFailure(
            "PROVIDER_NOT_CONFIGURED",
            f"provider {name!r} has no API key: set the {spec.api_key_env} environment variable",
        )
    return key


def _build(ref: ModelRef, spec: ProviderSpec) -> Model:
    key = _api_key(ref.provider, spec)
    builder = _BUILDERS[spec.wire]
    try:
        return builder(ref, spec, key)
    except ImportError as exc:
        raise AgentFailure("PROVIDER_NOT_CONFIGURED", f"provider {ref.provider!r}: {exc}") from exc


def _openai(ref: ModelRef, spec: ProviderSpec, key: str | None) -> Model:
    from openai import AsyncOpenAI
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.deepseek import DeepSeekProvider
    from pydantic_ai.providers.openai import OpenAIProvider
    from pydantic_ai.providers.together import TogetherProvider

    # Keyless endpoints still need a non-empty key for the client; the server ignores it.
    client = AsyncOpenAI(
        api_key=key or "none", base_url=spec.base_url, max_retries=spec.max_retries, timeout=spec.timeout_s
    )
    # The vendors' provider classes add what their APIs need (model profiles) on the same client.
    provider_cls: Any = {"deepseek": DeepSeekProvider, "together": TogetherProvider}.get(ref.provider)
    provider = (provider_cls or OpenAIProvider)(openai_client=client)
    return OpenAIChatModel(ref.name, provider=provider)


def _anthropic(ref: ModelRef, spec: ProviderSpec, key: str | None) -> Model:
    from anthropic import AsyncAnthropic
    from pydantic_ai.models.anthropic import AnthropicModel
    from pydantic_ai.providers.anthropic import AnthropicProvider

    client = AsyncAnthropic(
        api_key=key or "none", base_url=spec.base_url, max_retries=spec.max_retries, timeout=spec.timeout_s
    )
    return AnthropicModel(ref.name, provider=AnthropicProvider(anthropic_client=client))


def _google(ref: ModelRef, spec: ProviderSpec, key: str | None) -> Model:
    from pydantic_ai.models.google import GoogleModel
    from pydantic_ai.providers.google import GoogleProvider

    return GoogleModel(ref.name, provider=GoogleProvider(api_key=key, base_url=spec.base_url))


def _groq(ref: ModelRef, spec: ProviderSpec, key: str | None) -> Model:
    from groq import AsyncGroq
    from pydantic_ai.models.groq import GroqModel
    from pydantic_ai.providers.groq import GroqProvider

    client = AsyncGroq(
        api_key=key, base_url=spec.base_url, max_retries=spec.max_retries, timeout=spec.timeout_s
    )
    return GroqModel(ref.name, provider=GroqProvider(groq_client=client))


def _mistral(ref: ModelRef, spec: ProviderSpec, key: str | None) -> Model:
    from pydantic_ai.models.mistral import MistralModel
    from pydantic_ai.providers.mistral import MistralProvider

    return MistralModel(ref.name, provider=MistralProvider(api_key=key, base_url=spec.base_url))


_BUILDERS = {
    "openai": _openai,
    "anthropic": _anthropic,
    "google": _google,
    "groq": _groq,
    "mistral": _mistral,
}
