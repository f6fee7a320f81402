"""Turning traces on (`--otlp-endpoint`): an OpenTelemetry SDK tracer provider exporting over
OTLP/HTTP in batches, and spans for pydantic-ai's model and tool calls. The SDK and the exporter are
the optional `otel` extra; without them, or without an endpoint, tracing stays a no-op."""

from __future__ import annotations

from collections.abc import Callable

from opentelemetry import trace

from cli.errors import UsageError
from server.agents.pydantic_agent import trace_model_calls


def configure(endpoint: str, service: str = "agentrun") -> Callable[[], None]:
    """Export traces to `endpoint`; returns what flushes the spans still buffered, for the exit."""
    if not endpoint:
        return lambda: None
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        raise UsageError("--otlp-endpoint needs the otel extra: pip install 'agentrun[otel]'") from None
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    trace.set_tracer_provider(provider)
    trace_model_calls()
    return provider.shutdown
