"""The coordinator over a store that fails on purpose (``niyanta.store.fault_injection``): errors,
timeouts, and writes that commit while the caller is told they failed. Clients and workers retry;
every retry of a committed call must be recognised, never applied twice nor refused. Run on SQLite
and on PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.integration.coordinator_fixtures import Running, eventually, running_coordinator

from niyanta import Registry, WorkloadContext, workload
from niyanta.clock import SystemClock
from niyanta.model import ReplicaKey, WorkloadType
from niyanta.states import ReplicaState
from niyanta.store.base import EventQuery, WorkloadFilter
from niyanta.store.factory import open_store
from niyanta.store.fault_injection import FaultKind, FaultRule, FaultyStore
from niyanta.worker import Worker, WorkerSettings

S = ReplicaState
REGISTRY = Registry()
STEPS = 15


@workload("counted", registry=REGISTRY)
async def counted(ctx: WorkloadContext) -> dict[str, Any]:
    """Counts to ``steps``, checkpointing every step; says where it resumed from."""
    state = dict(ctx.checkpoint or {"i": 0, "starts": 0})
    state["starts"] += 1
    while state["i"] < ctx.params["steps"]:
        await asyncio.sleep(0.005)
        state["i"] += 1
        await ctx.save_checkpoint(state)
    return state


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'faults.db'}"
    url: str = request.getfixturevalue("pg_url")
    return url


@pytest.fixture
async def faulty(store_url: str) -> AsyncIterator[FaultyStore]:
    inner = await open_store(store_url, SystemClock())
    await inner.register_type(WorkloadType("counted"))
    yield FaultyStore(inner, seed=20261127)
    await inner.close()


@pytest.fixture
async def coordinator(store_url: str, faulty: FaultyStore) -> AsyncIterator[Running]:
    async with running_coordinator(store_url, store=faulty.as_store()) as running:
        response = await running.client.post("/v1/customers", json={"id": "acme", "tier": "gold"})
        assert response.status_code == 201
        yield running


async def _submit_until_answered(client: httpx.AsyncClient, body: dict[str, Any]) -> Any:
    """What a client does: repeat the same submit (same idempotency key) until it is answered;
    a store fault is a 503 with a stable code."""
    for _ in range(50):
        response = await client.post("/v1/workloads", json=body)
        if response.status_code in (200, 201):
            return response.json()
        assert response.status_code == 503, response.text
        assert response.json()["error"]["code"] == "store_unavailable"
    raise AssertionError("never answered")


async def test_submit_retried_through_store_faults_makes_one_workload_per_key(
    coordinator: Running, faulty: FaultyStore
) -> None:
    methods = {"submit_workload"}
    faulty.add(FaultRule(FaultKind.COMMITTED, methods=methods, calls={1, 2, 5, 9}))
    faulty.add(FaultRule(FaultKind.ERROR, methods=methods, calls={3, 6}))
    faulty.add(FaultRule(FaultKind.TIMEOUT, methods=methods, calls={7}, delay_s=0.05))
    faulty.add(FaultRule(FaultKind.COMMITTED, methods=methods, probability=0.3))
    keys = [f"order-{i}" for i in range(12)]
    answers = await asyncio.gather(
        *(
            _submit_until_answered(
                coordinator.client,
                {"customer_id": "acme", "type": "counted", "idempotency_key": key},
            )
            for key in keys
        )
    )
    faulty.clear()
    assert faulty.injected_into("submit_workload", FaultKind.COMMITTED) >= 4
    page = await faulty.inner.list_workloads(WorkloadFilter(customer_id="acme", limit=100))
    by_key = {w.idempotency_key: w.id for w in page.items}
    assert len(page.items) == len(keys) and set(by_key) == set(keys)  # one per key, none lost
    assert [a["id"] for a in answers] == [by_key[k] for k in keys]  # each told its own
    for wid in by_key.values():
        assert [r.state for r in await faulty.inner.list_replicas(wid)] == [S.PENDING]


async def test_checkpoints_and_results_resent_through_store_faults_apply_once(
    coordinator: Running, faulty: FaultyStore
) -> None:
    """A real worker re-sends every request the coordinator could not answer (same message id);
    the coordinator, having forgotten it (the write failed), hands it to the store again. Writes
    that committed the first time are recognised: no checkpoint seq written twice, none refused,
    one completion per replica, no replica restarted."""
    writes = {"apply_writes"}
    faulty.add(FaultRule(FaultKind.COMMITTED, methods=writes, calls={1, 2, 3}))
    faulty.add(FaultRule(FaultKind.COMMITTED, methods=writes, probability=0.25))
    faulty.add(FaultRule(FaultKind.ERROR, methods=writes, probability=0.1))
    faulty.add(FaultRule(FaultKind.TIMEOUT, methods=writes, probability=0.05, delay_s=0.05))
    settings = WorkerSettings(
        worker_id="w1", slots=4, heartbeat_interval_s=0.2, request_timeout_s=0.3
    )
    worker = Worker(settings, coordinator.hub.worker_link("w1"), registry=REGISTRY)
    task = asyncio.create_task(worker.run())
    try:
        response = await coordinator.client.post(
            "/v1/workloads",
            json={
                "customer_id": "acme",
                "type": "counted",
                "replicas": 3,
                "params": {"steps": STEPS},
            },
        )
        assert response.status_code == 201, response.text
        wid = response.json()["id"]

        async def succeeded() -> bool:
            replicas = await faulty.inner.list_replicas(wid)
            return all(r.state is S.SUCCEEDED for r in replicas)

        await eventually(succeeded, within=60, what="every replica succeeded")
    finally:
        faulty.clear()
        await worker.close()
        await asyncio.gather(task, return_exceptions=True)
    assert faulty.injected_into("apply_writes", FaultKind.COMMITTED) >= 3
    store = faulty.inner
    transitions = await store.list_transitions(wid)
    for replica in await store.list_replicas(wid):
        assert replica.result == {"i": STEPS, "starts": 1}  # never restarted nor resumed
        assert (replica.attempt, replica.checkpoint_seq, replica.fence) == (1, STEPS, 1)
        mine = [(t.from_state, t.to_state) for t in transitions if t.index == replica.index]
        assert mine[-1] == (S.RUNNING, S.SUCCEEDED)
        assert mine.count((S.RUNNING, S.SUCCEEDED)) == 1
        assert S.PENDING not in [to for _, to in mine[1:]]  # never handed back
        checkpoint = await store.latest_checkpoint(ReplicaKey(wid, replica.index))
        assert checkpoint is not None and checkpoint.seq == STEPS
    done = await store.list_events(EventQuery(workload_id=wid, kind_prefix="replica.succeeded"))
    assert len(done) == 3
