"""OpenTelemetry tracing. Spans carry ids, stages and decisions; context crosses hops in NATS headers."""

from __future__ import annotations

import os
from typing import IO

from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor

_trace_file: IO[str] | None = None


def configure_tracing(service: str) -> TracerProvider:
    """A tracer provider for this process.

    ``STELLWERK_TRACE_FILE`` appends finished spans as JSON to a file — the zero-dependency
    exporter used by tests and for local debugging; production wires an OTLP exporter here.
    """
    global _trace_file
    provider = TracerProvider(resource=Resource.create({"service.name": f"stellwerk-{service}"}))
    path = os.environ.get("STELLWERK_TRACE_FILE")
    if path:
        _trace_file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - lives as long as the process
        provider.add_span_processor(
            SimpleSpanProcessor(
                ConsoleSpanExporter(out=_trace_file, formatter=lambda s: s.to_json(indent=None) + "\n")
            )
        )
    trace.set_tracer_provider(provider)
    return provider


def inject_headers(headers: dict[str, str]) -> dict[str, str]:
    """Add W3C trace context of the current span to outgoing NATS headers."""
    propagate.inject(headers)
    return headers
