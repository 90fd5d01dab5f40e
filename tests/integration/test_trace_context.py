"""The trace context a workload is submitted in is kept with it: a caller's ``traceparent``
header makes the workload's trace part of the caller's, and a malformed one starts a new trace
rather than failing the submit."""

from __future__ import annotations

from pathlib import Path

import structlog
from tests.integration.coordinator_fixtures import FakeWorker, running_coordinator

from niyanta.broker.messages import Heartbeat, InventoryItem, LeaseGrant, StartReplica

CALLER = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


async def test_a_submit_continues_the_callers_trace(tmp_path: Path) -> None:
    async with running_coordinator(f"sqlite:///{tmp_path / 'c.db'}") as coordinator:
        api = coordinator.client
        await api.post("/v1/customers", json={"id": "acme", "tier": "gold"})
        await api.post("/v1/workload-types", json={"name": "job"})
        body = {"customer_id": "acme", "type": "job"}
        traced = await api.post("/v1/workloads", json=body, headers={"traceparent": CALLER})
        malformed = await api.post("/v1/workloads", json=body, headers={"traceparent": "junk"})
        assert (traced.status_code, malformed.status_code) == (201, 201)

        store = coordinator.runtime.store
        kept = (await store.get_workload(traced.json()["id"])).traceparent
        assert kept is not None and kept.split("-")[1] == CALLER.split("-")[1]
        # Without an SDK in this process nothing new is recorded: no trace context to keep.
        assert (await store.get_workload(malformed.json()["id"])).traceparent is None


async def test_a_line_about_a_workload_outside_its_spans_carries_its_trace(
    tmp_path: Path,
) -> None:
    """A fenced lease is found while handling a heartbeat, in no workload's trace: the line
    still carries the trace of the workload's submit, so that following the trace finds it."""
    async with running_coordinator(f"sqlite:///{tmp_path / 'c.db'}") as coordinator:
        api = coordinator.client
        await api.post("/v1/customers", json={"id": "acme", "tier": "gold"})
        worker = FakeWorker(coordinator, "w1", ["job"])
        await worker.link.connect()
        body = {"customer_id": "acme", "type": "job"}
        submitted = await api.post("/v1/workloads", json=body, headers={"traceparent": CALLER})
        workload_id = submitted.json()["id"]
        start = await worker.next(StartReplica)
        kept = (await coordinator.runtime.store.get_workload(workload_id)).traceparent
        assert kept is not None
        with structlog.testing.capture_logs() as lines:
            stale = InventoryItem(workload_id, start.index, start.fence - 1)  # never held
            grant = await worker.write(Heartbeat(worker_id="w1", inventory=[stale]))
        assert isinstance(grant, LeaseGrant) and grant.fenced == [stale]
        (fenced,) = [line for line in lines if line["event"] == "lease.fenced"]
        _, trace_id, span_id, _ = kept.split("-")
        assert (fenced["workload"], fenced["customer"]) == (workload_id, "acme")
        assert (fenced["trace_id"], fenced["span_id"]) == (trace_id, span_id)
        await worker.link.close()
