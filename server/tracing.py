"""When the hot path may skip its spans. Until a process installs a tracer provider, every span of
common.tracing's TRACER is a no-op; but a no-op span still carries its parent's context, so a
`traceparent` a caller sent goes on into the run (and its webhooks) even then. Building such a span
costs a few microseconds per call and per run; `idle` says when it would carry nothing at all."""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.context import Context

_UNKNOWN = object()


def off() -> bool:
    """No tracer provider is installed: TRACER (a proxy tracer) hands out no-op spans. Read as the
    proxy reads it, so that nothing here installs a provider named by the environment (which
    `trace.get_tracer_provider()` would). Should the API stop having the attribute, tracing counts
    as on and every span is built as before."""
    return getattr(trace, "_TRACER_PROVIDER", _UNKNOWN) is None


def idle(context: Context | None = None) -> bool:
    """Tracing is off and `context` (default: the current one) carries no valid span: a span started
    now would be a no-op with nothing to pass on, so it can be skipped."""
    return off() and not trace.get_current_span(context).get_span_context().is_valid
