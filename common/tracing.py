"""Traces through the OpenTelemetry API. Until a process installs an SDK tracer provider (the CLI
does when an exporter is configured, see cli/tracing.py) every span is a no-op, so tracing costs
next to nothing when it is off. A run's trace is carried as a W3C `traceparent` string: in gRPC
metadata from the gateway to the server, in the run's row from its submission to whichever
replica executes it, and in the headers of its webhooks."""

from __future__ import annotations

from collections.abc import Mapping

from opentelemetry import propagate, trace
from opentelemetry.context import Context

TRACER = trace.get_tracer("agentrun")
TRACE_HEADERS = ("traceparent", "tracestate")


def current_traceparent() -> str:
    """The `traceparent` of the current span ("" without a recording one)."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier.get("traceparent", "")


def parent_from(headers: Mapping[str, str]) -> Context:
    """The trace context a caller sent (`traceparent`/`tracestate` headers or metadata)."""
    return propagate.extract({k: v for k, v in headers.items() if k.lower() in TRACE_HEADERS})


def parent_of(traceparent: str | None) -> Context | None:
    """The context a stored `traceparent` names, to continue its trace; None to start a new one."""
    return propagate.extract({"traceparent": traceparent}) if traceparent else None
