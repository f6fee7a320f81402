"""The model catalog builds one client per provider and keeps a bounded number of models: a stream
of requests naming ever new models (ollama:<anything> needs no key) costs neither memory nor
sockets per request."""

from __future__ import annotations

from typing import Any

from server.agents.providers import MAX_CACHED_MODELS, ModelCatalog, ModelRef


def test_models_of_one_provider_share_its_client_and_the_cache_is_bounded() -> None:
    catalog = ModelCatalog()
    models: list[Any] = [
        catalog.model(ModelRef("ollama", f"model-{i}")) for i in range(MAX_CACHED_MODELS * 3)
    ]
    assert len({id(m.client) for m in models}) == 1  # one HTTP client for the provider
    assert len(catalog._models) == MAX_CACHED_MODELS
    # The most recently used stay; a model asked for again is the same object.
    assert catalog.model(ModelRef("ollama", f"model-{MAX_CACHED_MODELS * 3 - 1}")) is models[-1]
    assert catalog.model(ModelRef("ollama", "model-0")) is not models[0]
