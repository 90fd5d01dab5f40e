"""Metrics, log lines and trace context as an operator relies on them, without processes."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime

import httpx
import pytest
import structlog
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from niyanta.cli.main import app
from niyanta.observability.logging import bind_workload_context, configure_logging
from niyanta.observability.metrics import (
    OTHER_CUSTOMER,
    CoordinatorMetrics,
    QueueKey,
    WorkerSample,
)
from niyanta.observability.tracing import (
    current_trace_ids,
    current_traceparent,
    message_context,
    trace_ids_of_workload,
)
from niyanta.worker.health import HealthServer


def _samples(metrics: CoordinatorMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(metrics.render().decode())
        for s in family.samples
    }


def test_customers_past_the_cap_share_one_label() -> None:
    metrics = CoordinatorMetrics(max_customers=2)
    labels = [metrics.customer_label(c) for c in ("a", "b", "c", "a", "d")]
    assert labels == ["a", "b", OTHER_CUSTOMER, "a", OTHER_CUSTOMER]


def test_metrics_switched_off_count_nothing_and_render_nothing() -> None:
    metrics = CoordinatorMetrics(enabled=False)
    metrics.submitted.labels(customer="a", type="t").inc()
    metrics.queue_wait.labels(customer="a", type="t").observe(1.0)
    metrics.observe_queue({QueueKey("a", "gold"): 3}, {QueueKey("a", "gold"): 2.0})
    metrics.fleet_desired_workers.labels(pool="gpu").set(2)
    metrics.fleet_desired_workers.remove("gpu")
    assert metrics.render() == b""


def test_queue_gauges_follow_the_latest_round() -> None:
    metrics = CoordinatorMetrics()
    gold, silver = QueueKey("a", "gold"), QueueKey("b", "silver")
    metrics.observe_queue({gold: 3, silver: 1}, {gold: 12.5, silver: 1.0})
    metrics.observe_queue({gold: 2}, {gold: 13.0})
    samples = _samples(metrics)
    assert samples[("niyanta_queue_depth", (("customer", "a"), ("tier", "gold")))] == 2
    assert (
        samples[("niyanta_queue_oldest_age_seconds", (("customer", "a"), ("tier", "gold")))] == 13
    )
    assert ("niyanta_queue_depth", (("customer", "b"), ("tier", "silver"))) not in samples


def test_worker_gauges_aggregate_heartbeats_by_pool() -> None:
    metrics = CoordinatorMetrics()
    workers = [
        WorkerSample("gpu", "active", 4, 1, {"breaker.fetch.api": 2.0}),
        WorkerSample("gpu", "draining", 4, 4, {"breaker.fetch.api": 0.0}),
        WorkerSample("default", "active", 2, 0, {"breaker.fetch.db": 1.0, "other": 5.0}),
    ]
    metrics.before_scrape(lambda: metrics.observe_workers(workers))
    samples = _samples(metrics)
    assert samples[("niyanta_worker_slots", (("pool", "gpu"),))] == 8
    assert samples[("niyanta_worker_slots_used", (("pool", "gpu"),))] == 3
    assert samples[("niyanta_worker_utilization_ratio", (("pool", "default"),))] == 1.0
    assert samples[("niyanta_workers", (("pool", "gpu"), ("state", "draining")))] == 1
    breaker = "niyanta_circuit_breaker_state"
    assert samples[(breaker, (("dependency", "api"), ("type", "fetch")))] == 2  # worst: open
    assert samples[(breaker, (("dependency", "db"), ("type", "fetch")))] == 1
    workers.pop(0)  # the gpu worker left: its breaker report goes with it
    samples = _samples(metrics)
    assert samples[(breaker, (("dependency", "api"), ("type", "fetch")))] == 0
    assert samples[("niyanta_worker_slots", (("pool", "gpu"),))] == 4


@pytest.fixture
def json_logs() -> Iterator[Callable[[str], io.StringIO]]:
    """Configure logging as ``niyanta`` commands do, on a stderr the test reads (swapped in the
    test's own phase: pytest swaps ``sys.stderr`` between phases)."""

    def configure(level: str) -> io.StringIO:
        stderr = io.StringIO()
        sys.stderr = stderr
        try:
            configure_logging(level, "json")
        finally:
            sys.stderr = sys.__stderr__
        return stderr

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield configure
    structlog.reset_defaults()
    root.handlers[:] = handlers
    root.setLevel(level)


def _lines(stderr: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stderr.getvalue().splitlines() if line]


def test_log_lines_carry_the_workload_keys_and_the_active_span(
    json_logs: Callable[[str], io.StringIO],
) -> None:
    stderr = json_logs("DEBUG")
    tracer = TracerProvider().get_tracer("test")
    with (
        bind_workload_context(customer="acme", workload="w-1", replica=0, fence=3, attempt=2),
        tracer.start_as_current_span("workload.execute") as span,
    ):
        structlog.get_logger("niyanta.workload").info("step", n=1)
        logging.getLogger("some.library").warning("from the standard library")
    structlog.get_logger().info("outside")
    step, library, outside = _lines(stderr)
    ids = span.get_span_context()
    assert step["event"] == "step"
    assert (step["customer"], step["workload"], step["fence"], step["attempt"]) == (
        "acme", "w-1", 3, 2,
    )  # fmt: skip
    assert step["trace_id"] == format(ids.trace_id, "032x")
    assert step["span_id"] == format(ids.span_id, "016x")
    assert step["timestamp"].endswith("Z")
    written = datetime.fromisoformat(step["timestamp"].removesuffix("Z") + "+00:00")
    assert abs(written.timestamp() - time.time()) < 60  # UTC, not local time
    assert library["event"] == "from the standard library"
    assert (library["workload"], library["level"]) == ("w-1", "warning")
    assert "workload" not in outside and "trace_id" not in outside


def test_a_line_about_a_workload_outside_any_span_carries_its_stored_trace(
    json_logs: Callable[[str], io.StringIO],
) -> None:
    stderr = json_logs("INFO")
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("workload.submit") as submit:
        stored = current_traceparent()
    log = structlog.get_logger("niyanta.coordinator")
    log.info("lease.fenced", workload="w-1", **trace_ids_of_workload(stored))
    with tracer.start_as_current_span("workload.complete") as complete:
        log.info("replica.succeeded", workload="w-1", **trace_ids_of_workload(stored))
    log.info("lease.expired", workload="w-2", **trace_ids_of_workload(None))
    fenced, succeeded, unknown = _lines(stderr)
    ids, active = submit.get_span_context(), complete.get_span_context()
    assert (fenced["trace_id"], fenced["span_id"]) == (
        format(ids.trace_id, "032x"), format(ids.span_id, "016x"),
    )  # fmt: skip
    assert succeeded["span_id"] == format(active.span_id, "016x")  # the span it is written in
    assert "trace_id" not in unknown  # nothing stored (submitted without tracing): no ids


def test_a_value_json_cannot_hold_is_written_as_its_repr(
    json_logs: Callable[[str], io.StringIO],
) -> None:
    class Opaque:
        def __repr__(self) -> str:
            return "Opaque()"

    stderr = json_logs("INFO")
    structlog.get_logger().info("odd", thing=Opaque(), by_pair={(1, 2): 3})
    structlog.get_logger().info("undecodable", name="bad\udcff.txt")
    line, undecodable = _lines(stderr)
    assert line["thing"] == "Opaque()"
    assert line["by_pair"] == {"(1, 2)": 3}
    assert undecodable["name"] == "bad\udcff.txt"


def test_a_level_filters_lines(json_logs: Callable[[str], io.StringIO]) -> None:
    stderr = json_logs("WARNING")
    structlog.get_logger().info("hidden")
    structlog.get_logger().warning("shown")
    assert [line["event"] for line in _lines(stderr)] == ["shown"]


def test_an_unknown_log_level_is_a_usage_error() -> None:
    result = CliRunner().invoke(app, ["coordinator", "--log-level", "LOUD"])
    assert result.exit_code == 2
    assert "unknown log level" in result.output


def test_a_message_is_handled_in_its_own_trace_context() -> None:
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("sender") as sender:
        traceparent = current_traceparent()
    with tracer.start_as_current_span("unrelated, leaked into the broker task"):
        with message_context(traceparent):
            assert current_trace_ids()[0] == format(sender.get_span_context().trace_id, "032x")
            with tracer.start_as_current_span("receiver") as receiver:
                assert receiver.parent is not None
                assert receiver.parent.span_id == sender.get_span_context().span_id
        with message_context(None):
            assert current_trace_ids() == (None, None)


async def test_the_worker_probe_port_reports_readiness() -> None:
    ready = False
    server = HealthServer("127.0.0.1", 0, lambda: ready)
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as http:
            assert (await http.get("/health")).json() == {"status": "ok"}
            not_ready = await http.get("/ready")
            assert (not_ready.status_code, not_ready.json()["code"]) == (503, "not_ready")
            ready = True
            assert (await http.get("/ready")).status_code == 200
            assert (await http.post("/ready")).status_code == 405
            assert (await http.get("/metrics")).status_code == 404
    finally:
        await server.stop()
    await asyncio.sleep(0)
