"""Recovery paths of the coordinator, in one process over the in-memory broker on SQLite: lease
expiry of a silent worker, duplicate deliveries, inventory reconciliation on Hello, drain through
the API, and runtime registration of a new type."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from tests.integration.coordinator_fixtures import (
    Running,
    eventually,
    running_coordinator,
    start_worker,
)
from tests.integration.test_coordinator import FakeWorker

from niyanta import Registry, WorkloadContext, workload
from niyanta.broker.messages import (
    Ack,
    Capacity,
    CheckpointMsg,
    Heartbeat,
    Hello,
    InventoryItem,
    LeaseGrant,
    Refusal,
    Result,
    Started,
    StartReplica,
    StopReplica,
)
from niyanta.errors import StoreUnavailable
from niyanta.store.base import Store
from niyanta.store.factory import open_store
from niyanta.worker import Worker, WorkerSettings

REGISTRY = Registry()


@workload("ticks", registry=REGISTRY)
async def ticks(ctx: WorkloadContext) -> dict[str, Any]:
    state = dict(ctx.checkpoint or {"i": 0})
    started_from = state["i"]
    while state["i"] < ctx.params["ticks"]:
        if await ctx.sleep(0.02):
            return state
        state["i"] += 1
        await ctx.save_checkpoint(state)
    return {"i": state["i"], "started_from": started_from}


async def loaded_at_runtime(ctx: WorkloadContext) -> dict[str, str]:
    """Registered through the API with this module as its entrypoint; no worker imports it."""
    return {"loaded": ctx.worker_id}


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[Running]:
    async with running_coordinator(
        f"sqlite:///{tmp_path / 'recovery.db'}", lease_ttl_s=0.6, heartbeat_interval_s=0.1
    ) as running:
        assert (
            await running.client.post("/v1/customers", json={"id": "acme", "tier": "gold"})
        ).status_code == 201
        yield running


async def _submit(running: Running, type_name: str, **params: Any) -> str:
    response = await running.client.post(
        "/v1/workloads", json={"customer_id": "acme", "type": type_name, "params": params}
    )
    assert response.status_code == 201, response.text
    workload_id: str = response.json()["id"]
    return workload_id


async def _replica(running: Running, workload_id: str) -> dict[str, Any]:
    body = (await running.client.get(f"/v1/workloads/{workload_id}")).json()
    replica: dict[str, Any] = body["replicas"][0]
    replica["workload_state"] = body["state"]
    return replica


async def test_a_silent_worker_s_lease_expires_and_its_late_writes_are_refused(
    running: Running,
) -> None:
    silent = FakeWorker(running, "w1", ["job"])
    await silent.link.connect()
    workload_id = await _submit(running, "job")
    start = await silent.next(StartReplica)
    await silent.link.send(Started(workload_id=workload_id, index=0, fence=start.fence))

    async def requeued() -> bool:
        return (await _replica(running, workload_id))["fence"] > start.fence

    await eventually(requeued, within=3, what="lease expiry")  # no heartbeat ever renewed it
    late = await silent.write(
        CheckpointMsg(workload_id=workload_id, index=0, fence=start.fence, seq=1, data=b"{}")
    )
    assert isinstance(late, Refusal) and late.code == "fenced_out"
    beat = await silent.write(
        Heartbeat(
            worker_id="w1",
            inventory=[InventoryItem(workload_id=workload_id, index=0, fence=start.fence)],
        )
    )
    assert isinstance(beat, LeaseGrant)
    assert [(i.workload_id, i.fence) for i in beat.fenced] == [(workload_id, start.fence)]
    events = (await running.client.get(f"/v1/workloads/{workload_id}/events")).json()["items"]
    assert any(e["kind"] == "replica.pending" and e["reason"] == "lease expired" for e in events)
    await silent.link.close()


async def test_a_worker_silent_for_a_lease_ttl_is_given_nothing_new(running: Running) -> None:
    # Frozen (SIGSTOP) with its connection still open: its replica expires and must go to a
    # worker that heartbeats, not back to the silent one to expire again.
    silent = FakeWorker(running, "w1", ["job"])
    await silent.link.connect()
    workload_id = await _submit(running, "job")
    start = await silent.next(StartReplica)
    await silent.link.send(Started(workload_id=workload_id, index=0, fence=start.fence))
    live = FakeWorker(running, "w2", ["job"])
    await live.link.connect()

    async def heartbeat() -> None:
        while True:
            await live.write(Heartbeat(worker_id="w2", free=Capacity(slots=2)))
            await asyncio.sleep(0.1)

    beating = asyncio.create_task(heartbeat())
    try:
        moved = await live.next(StartReplica, within=5)
    finally:
        beating.cancel()
    assert (moved.workload_id, moved.fence > start.fence) == (workload_id, True)
    assert [m for m in _drain(silent) if isinstance(m, StartReplica)] == []
    await silent.link.close()
    await live.link.close()


def _drain(worker: FakeWorker) -> list[Any]:
    """What the coordinator sent ``worker`` and the test has not read yet."""
    received = []
    while not worker.inbox.empty():
        received.append(worker.inbox.get_nowait())
    return received


async def test_heartbeats_keep_the_lease_and_duplicates_are_harmless(running: Running) -> None:
    worker = FakeWorker(running, "w1", ["job"])
    await worker.link.connect()
    workload_id = await _submit(running, "job")
    start = await worker.next(StartReplica)
    await worker.link.send(Started(workload_id=workload_id, index=0, fence=start.fence))
    item = InventoryItem(workload_id=workload_id, index=0, fence=start.fence)
    for _ in range(12):  # 1.2 s: twice the lease TTL, renewed every heartbeat interval
        grant = await worker.write(Heartbeat(worker_id="w1", inventory=[item]))
        assert isinstance(grant, LeaseGrant) and grant.fenced == [] and not grant.rejoin
        await asyncio.sleep(0.1)

    checkpoint = CheckpointMsg(
        workload_id=workload_id, index=0, fence=start.fence, seq=1, data=b'{"row": 1}'
    )
    assert isinstance(await worker.write(checkpoint), Ack)
    assert isinstance(await worker.write(checkpoint), Ack)  # the same message id again
    result = Result(workload_id=workload_id, index=0, fence=start.fence, outcome="succeeded")
    assert isinstance(await worker.write(result), Ack)
    assert isinstance(await worker.write(result), Ack)

    replica = await _replica(running, workload_id)
    assert (replica["workload_state"], replica["fence"], replica["checkpoint_seq"]) == (
        "succeeded",
        start.fence,
        1,
    )
    events = (await running.client.get(f"/v1/workloads/{workload_id}/events")).json()["items"]
    assert [e["kind"] for e in events].count("replica.succeeded") == 1
    await worker.link.close()


async def test_a_heartbeat_from_a_worker_the_leader_never_met_asks_it_to_rejoin(
    running: Running,
) -> None:
    stranger = running.hub.worker_link("w9")  # connected, but no Hello (as after a failover)

    async def no_hello() -> None:
        return None

    stranger.on_connect(no_hello)
    await stranger.connect()
    grant = await stranger.request(Heartbeat(worker_id="w9"), timeout=2)
    assert isinstance(grant, LeaseGrant) and grant.rejoin
    await stranger.close()


async def test_hello_stops_what_the_worker_runs_at_a_stale_fence(running: Running) -> None:
    worker = FakeWorker(running, "w1", ["job"])
    await worker.link.connect()
    workload_id = await _submit(running, "job")
    start = await worker.next(StartReplica)
    await worker.link.close()  # released at once: fence moves past the one the worker holds

    returning = running.hub.worker_link("w1")
    stops: asyncio.Queue[StopReplica] = asyncio.Queue()

    async def receive(message: Any) -> None:
        if isinstance(message, StopReplica):
            await stops.put(message)

    async def join() -> None:
        await returning.request(
            Hello(
                worker_id="w1",
                session="after-restart",
                capacity=Capacity(slots=0),
                types=[],
                inventory=[InventoryItem(workload_id=workload_id, index=0, fence=start.fence)],
            ),
            timeout=2,
        )

    returning.on_message(receive)
    returning.on_connect(join)
    await returning.connect()
    stop = await asyncio.wait_for(stops.get(), 2)
    assert (stop.workload_id, stop.fence, stop.reason) == (workload_id, start.fence, "fenced")
    await returning.close()


async def _worker(running: Running, worker_id: str) -> tuple[Worker, asyncio.Task[None]]:
    settings = WorkerSettings(worker_id=worker_id, slots=2, heartbeat_interval_s=0.1)
    return await start_worker(running, settings, REGISTRY)


async def test_drain_hands_replicas_back_without_a_lease_wait(running: Running) -> None:
    first, first_task = await _worker(running, "w1")
    workload_id = await _submit(running, "ticks", ticks=60)

    async def checkpointed() -> bool:
        return bool((await _replica(running, workload_id))["checkpoint_seq"] >= 3)

    await eventually(checkpointed, what="checkpoints on w1")
    second, second_task = await _worker(running, "w2")
    drained = await running.client.post("/v1/workers/w1/drain")
    assert drained.status_code == 200 and drained.json()["state"] == "draining"
    await asyncio.wait_for(first_task, 3)  # drained and gone

    async def done() -> dict[str, Any] | None:
        replica = await _replica(running, workload_id)
        return replica if replica["workload_state"] == "succeeded" else None

    replica = await eventually(done, what="finished on w2")
    assert (replica["worker_id"], replica["previous_worker"]) == ("w2", "w1")
    assert replica["result"]["started_from"] >= 3  # resumed from w1's checkpoint
    assert replica["attempt"] == 1  # a hand-back is not a failed attempt
    events = (await running.client.get(f"/v1/workloads/{workload_id}/events")).json()["items"]
    assert any(e["kind"] == "replica.pending" and "drain" in e["reason"] for e in events)
    await second.close()
    await second_task
    await first.close()


async def test_a_type_registered_at_runtime_is_loaded_by_running_workers(
    running: Running,
) -> None:
    worker, task = await _worker(running, "w1")
    registered = await running.client.post(
        "/v1/workload-types",
        json={
            "name": "late",
            "entrypoint": "tests.integration.test_coordinator_recovery:loaded_at_runtime",
        },
    )
    assert registered.status_code == 201

    async def announced() -> bool:
        record = running.runtime.registry.get("w1")
        return record is not None and ("late", "1") in record.types

    await eventually(announced, what="the worker announced the new type")
    workload_id = await _submit(running, "late")

    async def done() -> dict[str, Any] | None:
        replica = await _replica(running, workload_id)
        return replica if replica["workload_state"] == "succeeded" else None

    replica = await eventually(done, what="the runtime type ran")
    assert replica["result"] == {"loaded": "w1"}
    await worker.close()
    await task


class SwitchableStore:
    """The real store, or (while ``down``) a store that raises StoreUnavailable on every call,
    as a PostgreSQL outage does."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.down = False

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._store, name)
        if not callable(attribute):
            return attribute

        async def call(*args: Any, **kwargs: Any) -> Any:
            if self.down:
                raise StoreUnavailable("the store is down (test)")
            return await attribute(*args, **kwargs)

        return call


async def test_replicas_keep_running_through_a_store_outage_longer_than_a_lease(
    tmp_path: Path,
) -> None:
    real = await open_store(f"sqlite:///{tmp_path / 'outage.db'}")
    store = SwitchableStore(real)
    try:
        async with running_coordinator(
            "unused",
            store=store,
            lease_ttl_s=0.6,
            heartbeat_interval_s=0.1,  # type: ignore[arg-type]
        ) as running:
            await running.client.post("/v1/customers", json={"id": "acme", "tier": "gold"})
            worker, task = await _worker(running, "w1")
            workload_id = await _submit(running, "ticks", ticks=80)

            async def checkpointed() -> bool:
                return bool((await _replica(running, workload_id))["checkpoint_seq"] >= 2)

            await eventually(checkpointed, what="checkpoints before the outage")
            store.down = True
            not_ready = await running.client.get("/ready")
            assert (not_ready.status_code, not_ready.json()["error"]["code"]) == (503, "not_ready")
            failed = await running.client.get(f"/v1/workloads/{workload_id}")
            assert (failed.status_code, failed.json()["error"]["code"]) == (
                503,
                "store_unavailable",
            )
            await asyncio.sleep(1.5)  # 2.5 lease TTLs
            assert worker.running  # not self-fenced: heartbeats were still granted
            store.down = False
            assert (await running.client.get("/ready")).status_code == 200

            async def done() -> dict[str, Any] | None:
                replica = await _replica(running, workload_id)
                return replica if replica["workload_state"] == "succeeded" else None

            replica = await eventually(done, what="finished after the outage")
            assert (replica["fence"], replica["attempt"]) == (1, 1)  # never reassigned
            assert replica["result"] == {"i": 80, "started_from": 0}
            await worker.close()
            await task
    finally:
        await real.close()


async def test_a_higher_tier_preempts_a_lower_one_which_resumes_from_its_checkpoint(
    running: Running,
) -> None:
    await running.client.post("/v1/customers", json={"id": "small", "tier": "bronze"})
    settings = WorkerSettings(worker_id="solo", slots=1, heartbeat_interval_s=0.1)
    worker, task = await start_worker(running, settings, REGISTRY)

    low = (
        await running.client.post(
            "/v1/workloads", json={"customer_id": "small", "type": "ticks", "params": {"ticks": 60}}
        )
    ).json()["id"]

    async def low_checkpointed() -> bool:
        return bool((await _replica(running, low))["checkpoint_seq"] >= 3)

    await eventually(low_checkpointed, what="the bronze replica checkpointed")
    high = await _submit(running, "ticks", ticks=5)  # acme is gold: may preempt bronze

    async def high_done() -> dict[str, Any] | None:
        replica = await _replica(running, high)
        return replica if replica["workload_state"] == "succeeded" else None

    await eventually(high_done, what="the gold workload ran on the only slot")

    async def low_done() -> dict[str, Any] | None:
        replica = await _replica(running, low)
        return replica if replica["workload_state"] == "succeeded" else None

    resumed = await eventually(low_done, what="the bronze workload finished after it")
    assert resumed["result"]["started_from"] >= 3
    assert resumed["attempt"] == 1
    events = (await running.client.get(f"/v1/workloads/{low}/events")).json()["items"]
    assert any(e["kind"] == "replica.pending" and "preempt" in e["reason"] for e in events)
    await worker.close()
    await task
