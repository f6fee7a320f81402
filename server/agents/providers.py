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
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic_ai.models import Model

from server.agents.base import AgentFailure
from server.agents.demo_model import DEMO_MODEL_NAME, build_demo_model

Wire = Literal["openai", "anthropic", "google", "groq", "mistral"]
# Models built and kept for reuse; one per distinct (provider, model) named by agents and requests.
MAX_CACHED_MODELS = 64
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
        # One client (HTTP pool) per provider, shared by its models; models are light and kept in a
        # bounded LRU, since a request may name any model (ollama:<anything> needs no key).
        self._clients: dict[str, Any] = {}
        self._models: OrderedDict[ModelRef, Model] = OrderedDict()

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
        if built is not None:
            self._models.move_to_end(ref)
            return built
        if ref == DEMO:
            built = build_demo_model()
        else:
            spec = self.providers[ref.provider]
            client = self._clients.get(ref.provider)
            if client is None:
                client = self._clients[ref.provider] = _client(ref.provider, spec)
            built = _WIRES[spec.wire][1](ref.name, client)
        self._models[ref] = built
        if len(self._models) > MAX_CACHED_MODELS:
            self._models.popitem(last=False)
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


def _client(name: str, spec: ProviderSpec) -> Any:
    """The provider object (holding its HTTP client) that every model of provider `name` uses."""
    key = _api_key(name, spec)
    try:
        return _WIRES[spec.wire][0](name, spec, key)
    except ImportError as exc:
        raise AgentFailure("PROVIDER_NOT_CONFIGURED", f"provider {name!r}: {exc}") from exc


def _openai_provider(name: str, spec: ProviderSpec, key: str | None) -> Any:
    from openai import AsyncOpenAI
    from pydantic_ai.providers.deepseek import DeepSeekProvider
    from pydantic_ai.providers.openai import OpenAIProvider
    from pydantic_ai.providers.together import TogetherProvider

    # Keyless endpoints still need a non-empty key for the client; the server ignores it.
    client = AsyncOpenAI(
        api_key=key or "none", base_url=spec.base_url, max_retries=spec.max_retries, timeout=spec.timeout_s
    )
    # The vendors' provider classes add what their APIs need (model profiles) on the same client.
    provider_cls: Any = {"deepseek": DeepSeekProvider, "together": TogetherProvider}.get(name)
    return (provider_cls or OpenAIProvider)(openai_client=client)


def _openai_model(model: str, provider: Any) -> Model:
    from pydantic_ai.models.openai import OpenAIChatModel

    return OpenAIChatModel(model, provider=provider)


def _anthropic_provider(name: str, spec: ProviderSpec, key: str | None) -> Any:
    from anthropic import AsyncAnthropic
    from pydantic_ai.providers.anthropic import AnthropicProvider

    client = AsyncAnthropic(
        api_key=key or "none", base_url=spec.base_url, max_retries=spec.max_retries, timeout=spec.timeout_s
    )
    return AnthropicProvider(anthropic_client=client)


def _anthropic_model(model: str, provider: Any) -> Model:
    from pydantic_ai.models.anthropic import AnthropicModel

    return AnthropicModel(model, provider=provider)


def _google_provider(name: str, spec: ProviderSpec, key: str | None) -> Any:
    from pydantic_ai.providers.google import GoogleProvider

    return GoogleProvider(api_key=key, base_url=spec.base_url)


def _google_model(model: str, provider: Any) -> Model:
    from pydantic_ai.models.google import GoogleModel

    return GoogleModel(model, provider=provider)


def _groq_provider(name: str, spec: ProviderSpec, key: str | None) -> Any:
    from groq import AsyncGroq
    from pydantic_ai.providers.groq import GroqProvider

    client = AsyncGroq(
        api_key=key, base_url=spec.base_url, max_retries=spec.max_retries, timeout=spec.timeout_s
    )
    return GroqProvider(groq_client=client)


def _groq_model(model: str, provider: Any) -> Model:
    from pydantic_ai.models.groq import GroqModel

    return GroqModel(model, provider=provider)


def _mistral_provider(name: str, spec: ProviderSpec, key: str | None) -> Any:
    from pydantic_ai.providers.mistral import MistralProvider

    return MistralProvider(api_key=key, base_url=spec.base_url)


def _mistral_model(model: str, provider: Any) -> Model:
    from pydantic_ai.models.mistral import MistralModel

    return MistralModel(model, provider=provider)


# wire format -> (build the provider's client, build one of its models on that client)
_WIRES: dict[str, tuple[Callable[[str, ProviderSpec, str | None], Any], Callable[[str, Any], Model]]] = {
    "openai": (_openai_provider, _openai_model),
    "anthropic": (_anthropic_provider, _anthropic_model),
    "google": (_google_provider, _google_model),
    "groq": (_groq_provider, _groq_model),
    "mistral": (_mistral_provider, _mistral_model),
}
