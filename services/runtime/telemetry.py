"""OpenTelemetry tracing. Spans carry ids, stages and decisions; context crosses hops in NATS headers."""

from __future__ import annotations

import os
from typing import IO

from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SimpleSpanProcessor

_trace_file: IO[str] | None = None


def tracing_enabled() -> bool:
    """Whether spans go anywhere. Without an exporter the hot path skips span creation and
    trace-header injection entirely: they cost CPU per message and nobody reads them."""
    return bool(os.environ.get("STELLWERK_TRACE_FILE") or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"))


def configure_tracing(service: str) -> TracerProvider | None:
    """A tracer provider for this process.

    None when neither variable is set: then no SDK provider exists at all.
    ``OTEL_EXPORTER_OTLP_ENDPOINT`` (standard OpenTelemetry variable) exports spans over
    OTLP/HTTP in batches — what compose and Kubernetes set. ``STELLWERK_TRACE_FILE`` appends
    finished spans as JSON lines to a file, for tests and local debugging.
    """
    global _trace_file
    if not tracing_enabled():
        return None  # the API's no-op tracer: spans cost next to nothing, nothing is exported
    provider = TracerProvider(resource=Resource.create({"service.name": f"stellwerk-{service}"}))
    path = os.environ.get("STELLWERK_TRACE_FILE")
    if path:
        _trace_file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - lives as long as the process
        provider.add_span_processor(
            SimpleSpanProcessor(
                ConsoleSpanExporter(out=_trace_file, formatter=lambda s: s.to_json(indent=None) + "\n")
            )
        )
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    return provider


def inject_headers(headers: dict[str, str]) -> dict[str, str]:
    """Add W3C trace context of the current span to outgoing NATS headers."""
    propagate.inject(headers)
    return headers
