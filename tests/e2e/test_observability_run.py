"""Observability of a real run: a coordinator and a worker as separate processes, a small mix of
workloads, then what an operator sees — the JSON logs of both processes, the spans both exported,
a Prometheus scrape of ``/metrics`` (checked by ``promtool check metrics``), and the probes."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from tests.conftest import IN_CI, free_port
from tests.processes import process_group, wait_for, wait_until_ready

from niyanta.client import NiyantaClient

pytestmark = pytest.mark.slow

FINAL = {"succeeded", "failed", "cancelled"}


@dataclass
class Run:
    coordinator_log: list[dict[str, Any]]
    worker_log: list[dict[str, Any]]
    spans: list[dict[str, Any]]
    scrape: str
    workloads: dict[str, str]
    """Name in this test -> workload id."""
    worker_probe: dict[str, int]
    """Path -> status code of the worker's probe port while it was joined."""


def _json_lines(text: str) -> list[dict[str, Any]]:
    """Every line of a process's stderr is one JSON object."""
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    workdir = tmp_path_factory.mktemp("observability")
    port, probe_port = free_port(), free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        "NIYANTA_TRACE_FILE": str(workdir / "spans.jsonl"),
        "NIYANTA_LOG_LEVEL": "DEBUG",
        "NIYANTA_WORKER_HEALTH_HOST": "127.0.0.1",
        "OTEL_BSP_SCHEDULE_DELAY": "50",  # spans are exported in batches: every 50 ms here
    }
    with process_group(workdir) as group, NiyantaClient(url) as client:
        coordinator = group.start(
            "coordinator",
            ["coordinator", "--store", "sqlite:///./c.db", "--listen", f"127.0.0.1:{port}",
             "--heartbeat", "0.2", "--lease-ttl", "3", "--log-format", "json"],
            env=env,
        )  # fmt: skip
        wait_until_ready(url)
        worker = group.start(
            "worker",
            ["--coordinator", url, "worker", "--id", "w-obs", "--slots", "4",
             "--import", "examples.demo_jobs,tests.e2e.observability_jobs",
             "--health-port", str(probe_port), "--labels", "pool=batch"],
            env=env,
        )  # fmt: skip
        wait_until_ready(f"http://127.0.0.1:{probe_port}")
        client.create_customer("acme", "gold")
        client.create_customer("beta", "silver")
        client.create_customer("gamma", "bronze")
        client.register_type("obs-no-worker-runs-this")  # stays pending: a queue to observe
        client.submit("gamma", "obs-no-worker-runs-this", {})
        submitted = {
            "steps": client.submit("acme", "obs-steps", {"steps": 3}),
            "isolated": client.submit("acme", "obs-steps-isolated", {"steps": 2}),
            "flaky": client.submit("beta", "demo-flaky", {"fail_times": 1}),
            "permanent": client.submit("acme", "demo-permanent", {}),
            "noop-1": client.submit("beta", "demo-noop", {}),
            "noop-2": client.submit("beta", "demo-noop", {}),
        }
        ids = {name: s.workload["id"] for name, s in submitted.items()}
        wait_for(
            lambda: all(client.get_workload(i)["state"] in FINAL for i in ids.values()),
            timeout=60,
            what="every workload final",
        )
        probe = {
            path: httpx.get(f"http://127.0.0.1:{probe_port}{path}", timeout=5).status_code
            for path in ("/health", "/ready", "/nothing")
        }
        scrapes: list[str] = []

        def queue_drained() -> bool:
            # Queue gauges follow scheduling rounds: the round after the last start clears them
            # but for gamma's workload, which no worker can run.
            scrapes.append(httpx.get(f"{url}/metrics", timeout=5).text)
            depths = [line for line in scrapes[-1].splitlines() if "queue_depth{" in line]
            return depths == ['niyanta_queue_depth{customer="gamma",tier="bronze"} 1.0']

        wait_for(queue_drained, timeout=10, interval=0.2, what="only gamma's queue left")
        # The worker logs its last lines (the result's reply) just after the coordinator commits.
        wait_for(
            lambda: '"replica finished"' in worker.log(), timeout=10, what="worker log complete"
        )
        spans_file = workdir / "spans.jsonl"

        def spans_exported() -> bool:
            spans = _json_lines(spans_file.read_text()) if spans_file.exists() else []
            ended = {
                (s["name"], s["attributes"].get("niyanta.workload"))
                for s in spans
                if s["name"] in ("workload.execute", "workload.complete")
            }
            return all(
                {("workload.execute", i), ("workload.complete", i)} <= ended for i in ids.values()
            )

        wait_for(spans_exported, timeout=10, what="every workload's spans exported")
        yield Run(
            coordinator_log=_json_lines(coordinator.log()),
            worker_log=_json_lines(worker.log()),
            spans=_json_lines(spans_file.read_text()),
            scrape=scrapes[-1],
            workloads=ids,
            worker_probe=probe,
        )


def _about(log: list[dict[str, Any]], workload_id: str) -> list[dict[str, Any]]:
    return [line for line in log if line.get("workload") == workload_id]


def test_one_workload_is_followed_across_coordinator_and_worker_logs(run: Run) -> None:
    workload_id = run.workloads["steps"]
    coordinator_lines = _about(run.coordinator_log, workload_id)
    coordinator = {line["event"]: line for line in coordinator_lines}
    worker = _about(run.worker_log, workload_id)
    worker_events = [line["event"] for line in worker]

    # submitted, scheduled (the start sent), started, checkpoints, succeeded — on both sides.
    for event in ("workload.submitted", "replica.start_sent", "checkpoint.saved"):
        assert event in coordinator, sorted(coordinator)
    assert "replica.succeeded" in coordinator
    assert worker_events.count("obs.step") == 3  # written by workload code via ctx.logger
    assert {"replica started", "replica finished"} <= set(worker_events)

    # Every line about the workload, whatever context wrote it (a heartbeat, the lease monitor).
    untraced = [
        line
        for line in [*coordinator_lines, *worker]
        if not line.get("trace_id") or not line.get("span_id")
    ]
    assert not untraced, f"lines about {workload_id} without trace_id/span_id: {untraced}"
    trace_ids = {line["trace_id"] for line in [*coordinator_lines, *worker]}
    assert len(trace_ids) == 1, trace_ids
    for line in worker:
        assert line["customer"] == "acme"
        assert (line["replica"], line["worker"], line["fence"], line["attempt"]) == (
            0, "w-obs", 1, 1,
        )  # fmt: skip
        assert line["span_id"]
    assert coordinator["replica.succeeded"]["worker"] == "w-obs"


def test_lines_of_workload_code_in_a_child_process_carry_the_trace(run: Run) -> None:
    workload_id = run.workloads["isolated"]
    steps = [line for line in _about(run.worker_log, workload_id) if line["event"] == "obs.step"]
    (execute,) = [
        s
        for s in run.spans
        if s["name"] == "workload.execute" and s["attributes"]["niyanta.workload"] == workload_id
    ]
    assert [line["step"] for line in steps] == [1, 2]
    assert {(line["trace_id"], line["span_id"]) for line in steps} == {
        (execute["trace_id"], execute["span_id"])
    }


def _spans_of(run: Run, workload_id: str) -> list[dict[str, Any]]:
    (submit,) = [
        s
        for s in run.spans
        if s["name"] == "workload.submit" and s["attributes"].get("niyanta.workload") == workload_id
    ]
    return [s for s in run.spans if s["trace_id"] == submit["trace_id"]]


def test_the_spans_of_one_workload_form_one_trace_across_processes(run: Run) -> None:
    spans = _spans_of(run, run.workloads["steps"])
    by_name: dict[str, list[dict[str, Any]]] = {}
    for span in spans:
        by_name.setdefault(span["name"], []).append(span)
    (submit,) = by_name["workload.submit"]
    (schedule,) = by_name["workload.schedule"]
    (dispatch,) = by_name["workload.dispatch"]
    (execute,) = by_name["workload.execute"]
    (complete,) = by_name["workload.complete"]
    assert [s for s in spans if s["parent_id"] is None] == [submit]  # the API span is the root
    assert schedule["parent_id"] == submit["span_id"]
    assert dispatch["parent_id"] == schedule["span_id"]
    assert execute["parent_id"] == dispatch["span_id"]
    assert complete["parent_id"] == execute["span_id"]
    assert {s["service"] for s in (submit, schedule, dispatch, complete)} == {"niyanta-coordinator"}
    assert execute["service"] == "niyanta-worker"
    checkpoints = by_name["workload.checkpoint"]
    assert [c["attributes"]["niyanta.checkpoint_seq"] for c in checkpoints] == ["1", "2", "3"]
    assert {c["parent_id"] for c in checkpoints} == {execute["span_id"]}
    commits = by_name["workload.checkpoint.commit"]
    assert {c["parent_id"] for c in commits} == {c["span_id"] for c in checkpoints}


def test_a_retry_continues_the_trace_of_its_submit(run: Run) -> None:
    spans = _spans_of(run, run.workloads["flaky"])
    executes = [s for s in spans if s["name"] == "workload.execute"]
    schedules = [s for s in spans if s["name"] == "workload.schedule"]
    (submit,) = [s for s in spans if s["name"] == "workload.submit"]
    assert [s["attributes"]["niyanta.attempt"] for s in executes] == ["1", "2"]
    assert {s["parent_id"] for s in schedules} == {submit["span_id"]}


def _promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        if IN_CI:
            pytest.fail("promtool is missing; .ci/run installs Debian's prometheus package")
        pytest.skip("promtool is not installed (Debian package prometheus)")
    return path


def test_a_live_scrape_passes_promtool(run: Run) -> None:
    result = subprocess.run(
        [_promtool(), "check", "metrics"], input=run.scrape, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _samples(scrape: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(scrape)
        for sample in family.samples
    }


def test_the_scrape_counts_the_run_per_customer_and_type(run: Run) -> None:
    samples = _samples(run.scrape)

    def value(name: str, **labels: str) -> float:
        return samples.get((name, frozenset(labels.items())), 0.0)

    acme_steps = {"customer": "acme", "type": "obs-steps"}
    beta_noop = {"customer": "beta", "type": "demo-noop"}
    beta_flaky = {"customer": "beta", "type": "demo-flaky"}
    assert value("niyanta_workloads_submitted_total", **beta_noop) == 2
    assert value("niyanta_replicas_succeeded_total", **beta_noop) == 2
    assert value("niyanta_replicas_succeeded_total", **acme_steps) == 1
    assert value("niyanta_checkpoint_writes_total", **acme_steps) == 3
    assert value("niyanta_replicas_started_total", **beta_flaky) == 2
    assert value("niyanta_replicas_retried_total", **beta_flaky) == 1
    assert value("niyanta_replicas_resumed_from_checkpoint_total", **beta_flaky) == 1
    assert (
        value(
            "niyanta_replicas_failed_total",
            customer="acme",
            type="demo-permanent",
            error_class="permanent",
        )
        == 1
    )
    assert value("niyanta_queue_wait_seconds_count", **beta_noop) == 2
    assert value("niyanta_run_seconds_count", **acme_steps) == 1
    assert value("niyanta_queue_oldest_age_seconds", customer="gamma", tier="bronze") > 0
    assert value("niyanta_worker_slots", pool="batch") == 4
    assert value("niyanta_workers", pool="batch", state="active") == 1
    assert value("niyanta_is_leader") == 1
    assert value("niyanta_leader_term") >= 1
    # No label names a workload, replica or worker.
    label_names = {name for _, labels in samples for name, _ in labels}
    assert not label_names & {"workload", "workload_id", "replica", "worker", "worker_id"}


def test_the_worker_probe_port_answers_while_joined(run: Run) -> None:
    assert run.worker_probe == {"/health": 200, "/ready": 200, "/nothing": 404}
