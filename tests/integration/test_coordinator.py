"""The coordinator's side of the worker protocol, end to end in one process: a real store
(SQLite), the in-memory broker, and either scripted fake workers (to control every message and
its fence) or the real worker runtime."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from tests.integration.coordinator_fixtures import (
    FakeWorker,
    Running,
    eventually,
    running_coordinator,
    start_worker,
)

from niyanta import PermanentError, Registry, TransientError, WorkloadContext, workload
from niyanta.broker.messages import (
    Ack,
    AnyMessage,
    CheckpointMsg,
    Heartbeat,
    InventoryItem,
    LeaseGrant,
    Refusal,
    Result,
    Started,
    StartReplica,
    Welcome,
)
from niyanta.worker import Worker, WorkerSettings

M = TypeVar("M", bound=AnyMessage)

REGISTRY = Registry()


@workload("flaky", registry=REGISTRY)
async def flaky(ctx: WorkloadContext) -> dict[str, int]:
    if ctx.attempt < 2:
        raise TransientError("upstream busy")
    return {"attempt": ctx.attempt}


@workload("broken", registry=REGISTRY)
async def broken(ctx: WorkloadContext) -> None:
    raise PermanentError("bad input row 7")


@workload("steps", registry=REGISTRY)
async def steps(ctx: WorkloadContext) -> dict[str, Any]:
    state = dict(ctx.checkpoint or {"i": 0, "resumed_from": None})
    if ctx.checkpoint is not None:
        state["resumed_from"] = ctx.checkpoint["i"]
    while state["i"] < ctx.params["steps"]:
        if await ctx.sleep(ctx.params.get("step_s", 0.01)):
            return state  # asked to stop: the last checkpoint stands
        state["i"] += 1
        await ctx.save_checkpoint(state)
        await ctx.report_progress(state["i"] / ctx.params["steps"])
    return state


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[Running]:
    async with running_coordinator(f"sqlite:///{tmp_path / 'coordinator.db'}") as running:
        response = await running.client.post("/v1/customers", json={"id": "acme", "tier": "gold"})
        assert response.status_code == 201
        yield running


async def _submit(client: httpx.AsyncClient, type_name: str, **params: Any) -> str:
    response = await client.post(
        "/v1/workloads", json={"customer_id": "acme", "type": type_name, "params": params}
    )
    assert response.status_code == 201, response.text
    workload_id: str = response.json()["id"]
    return workload_id


async def _workload(client: httpx.AsyncClient, workload_id: str) -> dict[str, Any]:
    body: dict[str, Any] = (await client.get(f"/v1/workloads/{workload_id}")).json()
    return body


async def _state_is(client: httpx.AsyncClient, workload_id: str, state: str) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        body = await _workload(client, workload_id)
        return body if body["state"] == state else None

    found: dict[str, Any] = await eventually(probe, what=f"{workload_id} {state}")
    return found


def _checkpoint(key: StartReplica, seq: int, fence: int, data: Any) -> CheckpointMsg:
    return CheckpointMsg(
        workload_id=key.workload_id,
        index=key.index,
        fence=fence,
        seq=seq,
        data=json.dumps(data).encode(),
    )


def _result(start: StartReplica, fence: int, **fields: Any) -> Result:
    return Result(workload_id=start.workload_id, index=start.index, fence=fence, **fields)


async def test_submit_start_checkpoint_result_succeeds_and_refuses_a_stale_fence(
    running: Running,
) -> None:
    worker = FakeWorker(running, "w1", ["job"])
    await worker.link.connect()
    assert isinstance(worker.welcome, Welcome)
    assert worker.welcome.lease_ttl_s == 5.0
    types = (await running.client.get("/v1/workload-types")).json()["items"]
    assert [t["name"] for t in types] == ["job"]  # announced by the worker's Hello

    workload_id = await _submit(running.client, "job", rows=10)
    start = await worker.next(StartReplica)
    assert (start.workload_id, start.index, start.fence, start.attempt) == (workload_id, 0, 1, 1)
    assert start.params == {"rows": 10} and start.checkpoint is None
    await worker.link.send(Started(workload_id=workload_id, index=0, fence=1))

    assert isinstance(await worker.write(_checkpoint(start, 1, 1, {"row": 5})), Ack)
    stale = await worker.write(_checkpoint(start, 2, 0, {"row": 6}))
    assert isinstance(stale, Refusal) and stale.code == "fenced_out"

    running_now = await _state_is(running.client, workload_id, "running")
    assert running_now["replicas"][0]["worker_id"] == "w1"
    assert running_now["replicas"][0]["checkpoint_seq"] == 1

    done = await worker.write(_result(start, 1, outcome="succeeded", result={"rows": 10}))
    assert isinstance(done, Ack)
    finished = await _state_is(running.client, workload_id, "succeeded")
    assert finished["replicas"][0]["result"] == {"rows": 10}
    # A heartbeat built before the result's Ack still lists the finished replica: the worker is
    # not told it lost it; a replica it never held at that fence is fenced out.
    inventory = [InventoryItem(workload_id, 0, 1), InventoryItem(workload_id, 0, 0)]
    grant = await worker.write(Heartbeat(worker_id="w1", inventory=inventory))
    assert isinstance(grant, LeaseGrant)
    assert [(i.workload_id, i.fence) for i in grant.fenced] == [(workload_id, 0)]
    checkpoint = (await running.client.get(f"/v1/workloads/{workload_id}/checkpoint")).json()
    assert (checkpoint["seq"], checkpoint["fence"], checkpoint["data"]) == (1, 1, {"row": 5})

    metrics = (await running.client.get("/metrics")).text
    assert 'niyanta_replicas_succeeded_total{customer="acme",type="job"} 1.0' in metrics
    assert 'niyanta_checkpoint_writes_total{customer="acme",type="job"} 1.0' in metrics
    assert 'niyanta_fenced_writes_total{kind="checkpoint"} 1.0' in metrics

    late = await worker.write(_result(start, 1, outcome="succeeded", result={"rows": 0}))
    assert isinstance(late, Refusal)  # a second completion of the same replica is refused
    await worker.link.close()


async def test_a_lost_worker_s_replica_resumes_on_the_other_from_its_checkpoint(
    running: Running,
) -> None:
    first = FakeWorker(running, "w1", ["job"])
    await first.link.connect()
    workload_id = await _submit(running.client, "job")
    start = await first.next(StartReplica)
    await first.link.send(Started(workload_id=workload_id, index=0, fence=start.fence))
    assert isinstance(await first.write(_checkpoint(start, 3, start.fence, {"row": 30})), Ack)

    second = FakeWorker(running, "w2", ["job"])
    await second.link.connect()
    lost_at = time.monotonic()
    await first.link.close()  # the transport reports the disconnect at once

    resumed = await second.next(StartReplica)
    assert time.monotonic() - lost_at < 1.0  # no lease wait
    # Requeued with fence 2 (the old holder's writes are refused), placed again with fence 3.
    assert (resumed.workload_id, resumed.fence, resumed.attempt) == (workload_id, 3, 1)
    assert resumed.checkpoint_seq == 3
    assert json.loads(resumed.checkpoint or b"null") == {"row": 30}

    body = await _workload(running.client, workload_id)
    replica = body["replicas"][0]
    assert (replica["worker_id"], replica["fence"], replica["resumed_from_seq"]) == ("w2", 3, 3)
    assert replica["previous_worker"] == "w1"
    events = (await running.client.get(f"/v1/workloads/{workload_id}/events")).json()["items"]
    requeued = next(e for e in events if e["kind"] == "replica.pending")
    assert (requeued["reason"], requeued["data"]["fence"]) == ("connection lost", 2)
    assert [e["kind"] for e in events].count("replica.scheduled") == 2
    await second.link.close()


async def _real_worker(running: Running, worker_id: str) -> tuple[Worker, asyncio.Task[None]]:
    settings = WorkerSettings(worker_id=worker_id, slots=4, heartbeat_interval_s=0.2)
    return await start_worker(running, settings, REGISTRY)


async def test_transient_failure_is_retried_with_backoff_then_succeeds(running: Running) -> None:
    registered = await running.client.post(
        "/v1/workload-types",
        json={"name": "flaky", "retry": {"max_attempts": 3, "initial_backoff_s": 0.3, "jitter": 0}},
    )
    assert registered.status_code == 201
    worker, task = await _real_worker(running, "w1")
    workload_id = await _submit(running.client, "flaky")

    done = await _state_is(running.client, workload_id, "succeeded")
    replica = done["replicas"][0]
    assert replica["attempt"] == 2 and replica["result"] == {"attempt": 2}
    events = (await running.client.get(f"/v1/workloads/{workload_id}/events")).json()["items"]
    retrying = next(e for e in events if e["kind"] == "replica.retrying")
    assert "upstream busy" in retrying["reason"]
    placed_again = [e for e in events if e["kind"] == "replica.scheduled"][1]
    # The backoff runs from the failure report; the retrying event is stamped at its commit, a
    # few ms later under load. Without a backoff the gap would be one scheduling round (~ms).
    assert placed_again["at"] - retrying["at"] >= 0.25
    await worker.close()
    await task


async def test_permanent_failure_fails_at_once_with_the_error_recorded(running: Running) -> None:
    worker, task = await _real_worker(running, "w1")
    workload_id = await _submit(running.client, "broken")

    failed = await _state_is(running.client, workload_id, "failed")
    replica = failed["replicas"][0]
    assert replica["attempt"] == 1
    assert replica["error"]["error_class"] == "permanent"
    assert "bad input row 7" in replica["error"]["message"]
    await worker.close()
    await task


async def test_pause_yields_with_a_checkpoint_and_resume_continues_from_it(
    running: Running,
) -> None:
    worker, task = await _real_worker(running, "w1")
    workload_id = await _submit(running.client, "steps", steps=40, step_s=0.02)

    async def checkpointed() -> bool:
        body = await _workload(running.client, workload_id)
        return bool(body["replicas"][0]["checkpoint_seq"] >= 3)

    await eventually(checkpointed, what="a few checkpoints")
    assert (await running.client.post(f"/v1/workloads/{workload_id}/pause")).status_code == 200
    paused = await _state_is(running.client, workload_id, "paused")
    seq_at_pause = paused["replicas"][0]["checkpoint_seq"]
    assert seq_at_pause >= 3

    assert (await running.client.post(f"/v1/workloads/{workload_id}/resume")).status_code == 200
    done = await _state_is(running.client, workload_id, "succeeded")
    replica = done["replicas"][0]
    assert replica["resumed_from_seq"] == seq_at_pause
    assert replica["result"]["resumed_from"] is not None
    assert replica["result"]["i"] == 40
    await worker.close()
    await task


async def test_cancel_stops_the_running_replica(running: Running) -> None:
    worker, task = await _real_worker(running, "w1")
    workload_id = await _submit(running.client, "steps", steps=10_000, step_s=0.01)
    await _state_is(running.client, workload_id, "running")

    cancelled = await running.client.post(f"/v1/workloads/{workload_id}/cancel")
    assert cancelled.json()["state"] == "cancelled"
    await eventually(lambda: not worker.running, within=2, what="the worker stopped it")
    await worker.close()
    await task
