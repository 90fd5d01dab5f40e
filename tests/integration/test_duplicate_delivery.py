"""Every message a worker sends the coordinator, delivered twice (a transport that retries, a
worker that re-sends after a reconnection), has the effect of one: same message id -> the reply
already given; same fence -> the store recognises the write it already applied. Late duplicates
(out of order) change nothing either. On SQLite and PostgreSQL.

The worker's side (every command delivered twice) is in tests/unit/test_worker_runtime.py
("duplicate delivery")."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest
from tests.integration.coordinator_fixtures import (
    FakeWorker,
    Running,
    eventually,
    running_coordinator,
)

from niyanta.broker.messages import (
    Ack,
    AnyMessage,
    Bye,
    CheckpointMsg,
    Heartbeat,
    InventoryItem,
    LeaseGrant,
    Progress,
    Result,
    Started,
    StartReplica,
    StopReplica,
    Welcome,
    new_id,
)
from niyanta.model import ReplicaKey, Transition
from niyanta.states import ReplicaState
from niyanta.store.base import EventQuery

S = ReplicaState


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'dup.db'}"
    url: str = request.getfixturevalue("pg_url")
    return url


@pytest.fixture
async def running(store_url: str) -> AsyncIterator[Running]:
    async with running_coordinator(store_url) as running:
        response = await running.client.post("/v1/customers", json={"id": "acme", "tier": "gold"})
        assert response.status_code == 201
        yield running


def again(message: AnyMessage) -> AnyMessage:
    """The same message under a new id: what a worker re-sends once the coordinator that saw the
    first one is gone (a new leader remembers no ids)."""
    return msgspec.structs.replace(message, id=new_id())


async def _submit(running: Running) -> str:
    response = await running.client.post(
        "/v1/workloads", json={"customer_id": "acme", "type": "job"}
    )
    assert response.status_code == 201, response.text
    workload_id: str = response.json()["id"]
    return workload_id


async def _state(running: Running, key: ReplicaKey, state: ReplicaState) -> None:
    async def reached() -> bool:
        return (await running.runtime.store.get_replica(key)).state is state

    await eventually(reached, what=f"{key} {state}")


def _steps(transitions: list[Transition]) -> list[tuple[S, S]]:
    return [(t.from_state, t.to_state) for t in transitions]


async def test_every_worker_message_delivered_twice_has_one_effect(running: Running) -> None:
    store = running.runtime.store
    worker = FakeWorker(running, "w1", ["job"])
    await worker.link.connect()
    assert isinstance(await worker.write(worker.hello), Welcome)  # Hello again: same answer
    assert [w.id for w in running.runtime.registry.snapshot()] == ["w1"]

    wid = await _submit(running)
    key = ReplicaKey(wid, 0)
    start = await worker.next(StartReplica)
    fence = start.fence
    started = Started(workload_id=wid, index=0, fence=fence)
    for message in (started, started, again(started)):
        await worker.link.send(message)
    await _state(running, key, S.RUNNING)

    progress = Progress(workload_id=wid, index=0, fence=fence, progress=0.5)
    await worker.link.send(progress)
    await worker.link.send(progress)

    item = InventoryItem(workload_id=wid, index=0, fence=fence)
    beat = Heartbeat(worker_id="w1", inventory=[item])
    for message in (beat, beat, again(beat)):
        grant = await worker.write(message)
        assert isinstance(grant, LeaseGrant) and grant.fenced == []

    def checkpoint(seq: int, data: str) -> CheckpointMsg:
        body = json.dumps(data).encode()
        return CheckpointMsg(workload_id=wid, index=0, fence=fence, seq=seq, data=body)

    one, two = checkpoint(1, "one"), checkpoint(2, "two")
    # Twice each, a late duplicate of the first after the second, and a re-send of the second.
    for message in (one, one, two, two, one, again(two)):
        assert isinstance(await worker.write(message), Ack), message
    saved = await store.latest_checkpoint(key)
    assert saved is not None and (saved.seq, json.loads(saved.data)) == (2, "two")

    result = Result(workload_id=wid, index=0, fence=fence, outcome="succeeded", result={"n": 1})
    for message in (result, result, again(result)):
        assert isinstance(await worker.write(message), Ack), message
    await _state(running, key, S.SUCCEEDED)

    assert _steps(await store.list_transitions(wid)) == [
        (S.PENDING, S.SCHEDULED),
        (S.SCHEDULED, S.RUNNING),
        (S.RUNNING, S.SUCCEEDED),
    ]
    done = await store.list_events(EventQuery(workload_id=wid, kind_prefix="replica.succeeded"))
    assert len(done) == 1
    replica = await store.get_replica(key)
    assert (replica.fence, replica.attempt, replica.result) == (fence, 1, {"n": 1})
    metrics = (await running.client.get("/metrics")).text
    assert 'niyanta_replicas_succeeded_total{customer="acme",type="job"} 1.0' in metrics
    assert "niyanta_fenced_writes_total{" not in metrics  # nothing refused
    sent_to_worker = [worker.inbox.get_nowait() for _ in range(worker.inbox.qsize())]
    assert not [m for m in sent_to_worker if isinstance(m, StopReplica | StartReplica)]
    await worker.link.close()


async def test_bye_delivered_twice_releases_the_worker_s_replicas_once(running: Running) -> None:
    store = running.runtime.store
    worker = FakeWorker(running, "w1", ["job"])
    await worker.link.connect()
    wid = await _submit(running)
    start = await worker.next(StartReplica)
    await worker.link.send(Started(workload_id=wid, index=0, fence=start.fence))
    await _state(running, ReplicaKey(wid, 0), S.RUNNING)
    bye = Bye(worker_id="w1")
    await worker.link.send(bye)
    await worker.link.send(bye)
    await worker.link.send(again(bye))
    await _state(running, ReplicaKey(wid, 0), S.PENDING)
    replica = await store.get_replica(ReplicaKey(wid, 0))
    assert replica.fence == start.fence + 1  # one release: one new token
    assert _steps(await store.list_transitions(wid)).count((S.RUNNING, S.PENDING)) == 1
    await worker.link.close()
