"""OpenTelemetry tracing. The core depends only on ``opentelemetry-api``: without an SDK every
span is a no-op. ``configure_tracing()`` installs the SDK when it is available (the ``otel``
extra) and asked for through the standard ``OTEL_*`` variables, or ``NIYANTA_TRACE_FILE`` for a
JSON-lines file of finished spans (used by tests and for local debugging). ``NIYANTA_TRACING=off``
keeps every span a no-op whatever else is set.

The trace context crosses processes in broker messages as a W3C ``traceparent`` string, and is
stored with a workload at submit so that every later scheduling round (and retry) of it continues
the submit's trace.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

_propagator = TraceContextTextMapPropagator()
tracer = trace.get_tracer("niyanta")


def current_traceparent() -> str | None:
    """The W3C traceparent of the active span, for an outgoing message."""
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)
    return carrier.get("traceparent")


def context_from_traceparent(traceparent: str | None) -> otel_context.Context:
    """A context whose parent is the span named by ``traceparent``; without one, an empty
    context (a span started in it begins a new trace, never one that leaked into a task)."""
    if not traceparent:
        return otel_context.Context()
    return _propagator.extract({"traceparent": traceparent}, context=otel_context.Context())


@contextmanager
def message_context(traceparent: str | None) -> Iterator[None]:
    """Handle an incoming message in its own trace context (or none). Broker tasks outlive the
    messages they carry and inherit whatever context created them: without this, a line about
    one workload could carry another's trace id."""
    token = otel_context.attach(context_from_traceparent(traceparent))
    try:
        yield
    finally:
        otel_context.detach(token)


def current_trace_ids() -> tuple[str | None, str | None]:
    """(trace_id, span_id) of the active span as hex, for log lines; (None, None) if none."""
    return _hex_ids(trace.get_current_span().get_span_context())


def _hex_ids(span_context: trace.SpanContext) -> tuple[str | None, str | None]:
    if not span_context.is_valid:
        return None, None
    return format(span_context.trace_id, "032x"), format(span_context.span_id, "016x")


def trace_ids_of_workload(traceparent: str | None) -> dict[str, str]:
    """``trace_id`` and ``span_id`` for a log line about a workload: the active span's, or,
    outside any span (a heartbeat, the lease monitor, a worker leaving), those of the workload's
    stored ``traceparent`` (its submit span), so that the line is still found by its trace."""
    trace_id, span_id = current_trace_ids()
    if trace_id is None and traceparent:
        stored = trace.get_current_span(context_from_traceparent(traceparent))
        trace_id, span_id = _hex_ids(stored.get_span_context())
    if trace_id is None or span_id is None:
        return {}
    return {"trace_id": trace_id, "span_id": span_id}


def add_trace_ids(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: ``trace_id`` and ``span_id`` of the active span on every line
    written inside one (coordinator and worker code alike, and workload code's ``ctx.logger``)."""
    if "trace_id" not in event_dict:
        trace_id, span_id = current_trace_ids()
        if trace_id is not None:
            event_dict["trace_id"] = trace_id
            event_dict["span_id"] = span_id
    return event_dict


def configure_tracing(service_name: str) -> bool:
    """Install the OpenTelemetry SDK if present and configured; True when spans are exported."""
    if os.environ.get("NIYANTA_TRACING", "").lower() in {"off", "0", "false", "no"}:
        return False
    trace_file = os.environ.get("NIYANTA_TRACE_FILE")
    wants_otlp = bool(
        os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or os.environ.get("OTEL_TRACES_EXPORTER", "none") not in {"none", ""}
    )
    if not trace_file and not wants_otlp:
        return False
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        from niyanta.observability.trace_file_exporter import JsonLinesSpanExporter
    except ImportError:
        return False
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    if trace_file:
        # Batched off the event loop, like OTLP: a span costs the loop no file write.
        provider.add_span_processor(BatchSpanProcessor(JsonLinesSpanExporter(trace_file)))
    if wants_otlp:
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError:
            return bool(trace_file)
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    return True
