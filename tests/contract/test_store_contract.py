"""The Store contract, run against every backend: SQLite (a file per test) and PostgreSQL (a fresh
database per test). Time comes from a FakeClock; nothing here sleeps to wait for time to pass."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from pathlib import Path

import pytest
from tests.conftest import IN_CI, free_port

from niyanta.clock import FakeClock
from niyanta.errors import (
    AlreadyExists,
    CheckpointSeqConflict,
    Conflict,
    FencedOut,
    IdempotencyConflict,
    IllegalTransition,
    InvalidInput,
    NotFound,
    PayloadTooLarge,
    StoreUnavailable,
    UnknownCustomer,
    UnknownTier,
    UnknownWorkload,
    UnknownWorkloadType,
)
from niyanta.model import (
    DEFAULT_TIERS,
    AutoscalePolicy,
    Checkpoint,
    CoordinatorInfo,
    Customer,
    ErrorClass,
    ErrorInfo,
    Event,
    Mode,
    Replica,
    ReplicaKey,
    RetryPolicy,
    Tier,
    WorkloadSpec,
    WorkloadType,
)
from niyanta.states import ACTIVE, ReplicaState, can_transition
from niyanta.store.base import (
    Assignment,
    CompleteReplica,
    CustomerUpdate,
    EventQuery,
    FailReplica,
    FencedWrite,
    LeaseRenewal,
    MarkRunning,
    Placed,
    RecordProgress,
    ReleaseReplica,
    Repeated,
    SaveCheckpoint,
    Store,
    StoreLimits,
    SubmitResult,
    WorkloadFilter,
    WriteResult,
)
from niyanta.store.factory import open_store
from niyanta.store.fault_injection import FaultKind, FaultRule, FaultyStore, InjectedFault
from niyanta.store.group_commit import GroupCommitter

S = ReplicaState
CUSTOMER = "acme"
TYPE = "crunch"


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'niyanta.db'}"
    url: str = request.getfixturevalue("pg_url")
    return url


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def store(store_url: str, clock: FakeClock) -> AsyncIterator[Store]:
    opened = await open_store(store_url, clock, StoreLimits(max_params_bytes=1024))
    await opened.create_customer(Customer(CUSTOMER, "gold"))
    await opened.register_type(
        WorkloadType(TYPE, retry=RetryPolicy(max_attempts=2, initial_backoff_s=10, jitter=0))
    )
    yield opened
    await opened.close()


async def submit(store: Store, replicas: int = 1, **spec: object) -> str:
    result = await store.submit_workload(
        WorkloadSpec(CUSTOMER, TYPE, replicas=replicas, **spec),  # type: ignore[arg-type]
        "test",
    )
    return result.workload.id


async def assign(store: Store, key: ReplicaKey, worker: str = "w1", ttl: float = 10) -> Replica:
    current = await store.get_replica(key)
    [replica] = await store.assign_replicas([Assignment(key, worker, ttl, current.fence)])
    return replica


async def write(store: Store, w: FencedWrite) -> WriteResult:
    [result] = await store.apply_writes([w])
    return result


async def running(store: Store, worker: str = "w1") -> Replica:
    key = ReplicaKey(await submit(store), 0)
    r = await assign(store, key, worker)
    result = await write(store, MarkRunning(key, r.fence, worker))
    assert isinstance(result, Replica)
    return result


# --- migrations, tiers, customers, types -------------------------------------------------------


async def test_migrations_run_twice_and_reopen_keeps_data(store: Store, store_url: str) -> None:
    wid = await submit(store)
    version = await store.migrate()
    assert await store.migrate() == version >= 1
    again = await open_store(store_url)
    try:
        assert await again.ping()
        assert (await again.get_workload(wid)).id == wid
        assert [t.name for t in await again.list_tiers()] == [t.name for t in DEFAULT_TIERS]
    finally:
        await again.close()


async def test_concurrent_openers_migrate_once(store_url: str) -> None:
    opened = await asyncio.gather(
        *(open_store(store_url) for _ in range(4)), return_exceptions=True
    )
    stores = [s for s in opened if not isinstance(s, BaseException)]
    try:
        assert len(stores) == 4, [s for s in opened if isinstance(s, BaseException)]
        assert all([await s.ping() for s in stores])
        assert len(await stores[0].list_tiers()) == len(DEFAULT_TIERS)
    finally:
        for s in stores:
            await s.close()


async def test_default_tiers_seeded_and_tiers_upserted(store: Store) -> None:
    assert await store.list_tiers() == sorted(DEFAULT_TIERS, key=lambda t: -t.priority)
    await store.upsert_tier(Tier("gold", 350, weight=5.0, concurrency_cap=None))
    gold = next(t for t in await store.list_tiers() if t.name == "gold")
    assert (gold.priority, gold.weight, gold.concurrency_cap) == (350, 5.0, None)


async def test_a_tiers_guaranteed_cpu_and_memory_round_trip(store: Store) -> None:
    silver = Tier(
        "silver",
        200,
        guaranteed_slots=1,
        guaranteed_cpu=2.5,
        guaranteed_memory_mb=4096,
        guarantee_linger_s=0.75,
    )
    await store.upsert_tier(silver)
    assert next(t for t in await store.list_tiers() if t.name == "silver") == silver
    await store.upsert_tier(Tier("silver", 200))
    reset = next(t for t in await store.list_tiers() if t.name == "silver")
    assert (reset.guaranteed_cpu, reset.guaranteed_memory_mb, reset.guarantee_linger_s) == (
        0.0,
        0,
        0.0,
    )


async def test_customers(store: Store, clock: FakeClock) -> None:
    with pytest.raises(AlreadyExists):
        await store.create_customer(Customer(CUSTOMER, "gold"))
    with pytest.raises(UnknownTier):
        await store.create_customer(Customer("other", "diamond"))
    with pytest.raises(UnknownCustomer):
        await store.get_customer("nobody")
    updated = await store.update_customer(
        CUSTOMER, CustomerUpdate(tier="platinum", concurrency_cap=7, alert_thresholds={"x": 1.0})
    )
    assert (updated.tier, updated.concurrency_cap, dict(updated.alert_thresholds)) == (
        "platinum",
        7,
        {"x": 1.0},
    )
    cleared = await store.update_customer(CUSTOMER, CustomerUpdate(clear_concurrency_cap=True))
    assert cleared.concurrency_cap is None
    assert await store.get_customer(CUSTOMER) == cleared
    assert cleared.created_at == clock.now()
    with pytest.raises(UnknownTier):
        await store.update_customer(CUSTOMER, CustomerUpdate(tier="diamond"))
    assert [c.id for c in await store.list_customers()] == [CUSTOMER]


async def test_workload_types_are_versioned_and_idempotent(store: Store) -> None:
    v2 = WorkloadType(TYPE, version="2", timeout_s=30.0)
    assert (await store.register_type(v2)).timeout_s == 30.0
    assert (await store.register_type(v2)).version == "2"
    with pytest.raises(Conflict):
        await store.register_type(WorkloadType(TYPE, version="2", timeout_s=60.0))
    assert (await store.get_type(TYPE)).version == "2"
    assert (await store.get_type(TYPE, "1")).retry.max_attempts == 2
    with pytest.raises(UnknownWorkloadType):
        await store.get_type(TYPE, "9")
    assert [(t.name, t.version) for t in await store.list_types()] == [(TYPE, "1"), (TYPE, "2")]


# --- submit ------------------------------------------------------------------------------------


async def test_submit_creates_pending_replicas_and_an_event(store: Store) -> None:
    wid = await submit(store, replicas=3, mode=Mode.CONTINUOUS, params={"n": 1})
    workload = await store.get_workload(wid)
    assert (workload.state, workload.replicas, dict(workload.params)) == (S.PENDING, 3, {"n": 1})
    replicas = await store.list_replicas(wid)
    assert [(r.index, r.state, r.fence) for r in replicas] == [(i, S.PENDING, 0) for i in range(3)]
    events = await store.list_events(EventQuery(workload_id=wid))
    assert [e.kind for e in events] == ["workload.submitted"]


async def test_a_submit_resolves_its_type_version_and_names_what_is_unknown(store: Store) -> None:
    await store.register_type(WorkloadType(TYPE, version="2"))
    newest = await store.submit_workload(WorkloadSpec(CUSTOMER, TYPE), "test")
    pinned = await store.submit_workload(WorkloadSpec(CUSTOMER, TYPE, type_version="1"), "test")
    assert (newest.workload.type_version, pinned.workload.type_version) == ("2", "1")
    with pytest.raises(UnknownWorkloadType, match=f"{TYPE}@9"):
        await store.submit_workload(WorkloadSpec(CUSTOMER, TYPE, type_version="9"), "test")
    with pytest.raises(UnknownCustomer):  # the customer is named first when both are unknown
        await store.submit_workload(WorkloadSpec("nobody", "nothing"), "test")
    stored = await store.get_workload(newest.workload.id)
    assert stored.type_version == "2"
    [submitted] = await store.list_events(EventQuery(workload_id=newest.workload.id))
    assert submitted.data == {"type": f"{TYPE}@2"}
    listed = await store.list_workloads(WorkloadFilter())
    assert {w.id for w in listed.items} == {newest.workload.id, pinned.workload.id}  # no others


async def test_bad_input_raises_typed_errors(store: Store) -> None:
    with pytest.raises(UnknownCustomer):
        await store.submit_workload(WorkloadSpec("nobody", TYPE), "test")
    with pytest.raises(UnknownWorkloadType):
        await store.submit_workload(WorkloadSpec(CUSTOMER, "nothing"), "test")
    with pytest.raises(PayloadTooLarge):
        await store.submit_workload(WorkloadSpec(CUSTOMER, TYPE, {"blob": "x" * 2000}), "test")
    with pytest.raises(InvalidInput):
        await store.submit_workload(WorkloadSpec(CUSTOMER, TYPE, replicas=0), "test")
    with pytest.raises(InvalidInput):
        await store.submit_workload(WorkloadSpec(CUSTOMER, TYPE, {"f": object()}), "test")
    with pytest.raises(UnknownWorkload):
        await store.get_workload("w-missing")
    with pytest.raises(InvalidInput):
        await store.list_workloads(WorkloadFilter(cursor="not-a-cursor"))
    assert (await store.list_workloads(WorkloadFilter())).items == ()


@pytest.mark.parametrize("key", [None, "k-placed"])
async def test_a_placed_submit_writes_its_replicas_assigned(
    store: Store, clock: FakeClock, key: str | None
) -> None:
    """The leader's arrival placement: the submit writes what ``assign_replicas`` would."""
    spec = WorkloadSpec(CUSTOMER, TYPE, replicas=2, idempotency_key=key)
    result = await store.submit_workload(spec, "test", Placed("w-placed", ("w1", "w2"), 10))
    assert (result.created, result.workload.id, result.workload.state) == (
        True,
        "w-placed",
        S.SCHEDULED,
    )
    assert result.workload.type_version == "1"
    stored = await store.list_replicas("w-placed")
    assert list(result.placed) == stored
    assert [(r.state, r.fence, r.worker_id, r.lease_expires_at) for r in stored] == [
        (S.SCHEDULED, 1, "w1", clock.now() + 10),
        (S.SCHEDULED, 1, "w2", clock.now() + 10),
    ]
    assert (await store.get_workload("w-placed")).state is S.SCHEDULED
    assert await store.active_replicas() == stored
    assert await store.pending_replicas() == []
    events = await store.list_events(EventQuery(workload_id="w-placed"))
    assert [(e.kind, e.index, e.reason) for e in events] == [
        ("workload.submitted", None, ""),
        ("replica.scheduled", 0, "placed on w1"),
        ("replica.scheduled", 1, "placed on w2"),
    ]
    assert events[1].data == {"attempt": 1, "fence": 1, "from": "pending"}
    assert [
        (t.from_state, t.to_state, t.fence) for t in await store.list_transitions("w-placed")
    ] == [
        (S.PENDING, S.SCHEDULED, 1),
        (S.PENDING, S.SCHEDULED, 1),
    ]
    # The placed replicas' fence is the one their worker writes with.
    started = await write(store, MarkRunning(stored[0].key, 1, "w1"))
    assert isinstance(started, Replica) and started.state is S.RUNNING


async def test_a_placed_submit_is_refused_whole(store: Store) -> None:
    with pytest.raises(InvalidInput, match="2 placements for a workload of 1 replicas"):
        await store.submit_workload(
            WorkloadSpec(CUSTOMER, TYPE), "test", Placed("w-bad", ("w1", "w2"), 10)
        )
    with pytest.raises(UnknownCustomer):
        await store.submit_workload(
            WorkloadSpec("nobody", TYPE), "test", Placed("w-nobody", ("w1",), 10)
        )
    assert (await store.list_workloads(WorkloadFilter())).items == ()
    assert await store.active_replicas() == []
    spec = WorkloadSpec(CUSTOMER, TYPE, idempotency_key="k")
    first = await store.submit_workload(spec, "test")
    again = await store.submit_workload(spec, "test", Placed("w-again", ("w1",), 10))
    assert (again.created, again.workload.id, again.placed) == (False, first.workload.id, ())
    assert [r.state for r in await store.list_replicas(first.workload.id)] == [S.PENDING]


async def test_idempotent_submit(store: Store) -> None:
    spec = WorkloadSpec(CUSTOMER, TYPE, {"n": 1}, idempotency_key="k1")
    first = await store.submit_workload(spec, "test")
    again = await store.submit_workload(spec, "test")
    assert first.created and not again.created
    assert again.workload.id == first.workload.id
    with pytest.raises(IdempotencyConflict):
        await store.submit_workload(
            WorkloadSpec(CUSTOMER, TYPE, {"n": 2}, idempotency_key="k1"), "test"
        )


async def test_batch_submit_judges_each_spec_alone_in_one_transaction(store: Store) -> None:
    earlier = await store.submit_workload(
        WorkloadSpec(CUSTOMER, TYPE, {"n": 0}, idempotency_key="known"), "test"
    )
    results = await store.submit_workloads(
        [
            WorkloadSpec(CUSTOMER, TYPE, {"n": 1}, replicas=2),
            WorkloadSpec("nobody", TYPE),
            WorkloadSpec(CUSTOMER, TYPE, {"n": 0}, idempotency_key="known"),
            WorkloadSpec(CUSTOMER, "nothing"),
            WorkloadSpec(CUSTOMER, TYPE, {"blob": "x" * 2000}),
            WorkloadSpec(CUSTOMER, TYPE, {"n": 2}, idempotency_key="new"),
            WorkloadSpec(CUSTOMER, TYPE, {"n": 2}, idempotency_key="new"),
            WorkloadSpec(CUSTOMER, TYPE, {"n": 3}, idempotency_key="known"),
            WorkloadSpec("nobody", TYPE, {"n": 4}),
        ],
        "test",
    )
    assert [type(r).__name__ for r in results] == [
        "SubmitResult",
        "UnknownCustomer",
        "SubmitResult",
        "UnknownWorkloadType",
        "PayloadTooLarge",
        "SubmitResult",
        "SubmitResult",
        "IdempotencyConflict",
        "UnknownCustomer",
    ]
    created, _, known, _, _, new, new_again, _, _ = results
    assert isinstance(created, SubmitResult) and created.created
    assert isinstance(known, SubmitResult) and not known.created
    assert known.workload.id == earlier.workload.id
    assert isinstance(new, SubmitResult) and new.created
    assert isinstance(new_again, SubmitResult) and not new_again.created
    assert new_again.workload.id == new.workload.id
    replicas = await store.list_replicas(created.workload.id)
    assert [(r.index, r.state, r.fence) for r in replicas] == [(0, S.PENDING, 0), (1, S.PENDING, 0)]
    for wid in (created.workload.id, new.workload.id):
        events = await store.list_events(EventQuery(workload_id=wid))
        assert [e.kind for e in events] == ["workload.submitted"]
    page = await store.list_workloads(WorkloadFilter(customer_id=CUSTOMER))
    assert {w.id for w in page.items} == {earlier.workload.id, created.workload.id, new.workload.id}
    assert await store.submit_workloads([], "test") == []


async def test_concurrent_duplicate_submits_make_one_workload(store: Store) -> None:
    spec = WorkloadSpec(CUSTOMER, TYPE, {"n": 1}, idempotency_key="dup")
    results = await asyncio.gather(*(store.submit_workload(spec, "test") for _ in range(40)))
    assert len({r.workload.id for r in results}) == 1
    assert sum(r.created for r in results) == 1
    page = await store.list_workloads(WorkloadFilter(customer_id=CUSTOMER))
    assert len(page.items) == 1
    assert len(await store.list_replicas(page.items[0].id)) == 1


async def test_pagination_newest_first_with_cursor(store: Store) -> None:
    await store.create_customer(Customer("other", "bronze"))
    ids = [await submit(store) for _ in range(7)]
    await store.submit_workload(WorkloadSpec("other", TYPE), "test")
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        page = await store.list_workloads(
            WorkloadFilter(customer_id=CUSTOMER, limit=3, cursor=cursor)
        )
        seen += [w.id for w in page.items]
        pages += 1
        cursor = page.next_cursor
        if cursor is None:
            break
    assert pages == 3
    assert seen == list(reversed(ids))
    assert len((await store.list_workloads(WorkloadFilter(limit=100))).items) == 8
    await running(store)
    by_state = await store.list_workloads(WorkloadFilter(state=S.RUNNING))
    assert [w.state for w in by_state.items] == [S.RUNNING]
    assert (await store.list_workloads(WorkloadFilter(type_name="other-type"))).items == ()


# --- the lifecycle -----------------------------------------------------------------------------


async def replica_in(store: Store, clock: FakeClock, state: ReplicaState) -> Replica:
    """A fresh replica driven through the store into ``state``."""
    key = ReplicaKey(await submit(store), 0)
    if state is S.PENDING:
        return await store.get_replica(key)
    if state is S.PAUSED:
        await store.pause_workload(key.workload_id, "test", "hold")
        return await store.get_replica(key)
    if state is S.CANCELLED:
        await store.cancel_workload(key.workload_id, "test", "stop")
        return await store.get_replica(key)
    r = await assign(store, key)
    if state is S.SCHEDULED:
        return r
    await write(store, MarkRunning(key, r.fence, "w1"))
    final: dict[ReplicaState, FencedWrite] = {
        S.RUNNING: RecordProgress(key, r.fence, 0.1),
        S.SUCCEEDED: CompleteReplica(key, r.fence, {"ok": True}),
        S.FAILED: FailReplica(key, r.fence, ErrorInfo(ErrorClass.PERMANENT, "boom")),
        S.RETRYING: FailReplica(
            key, r.fence, ErrorInfo(ErrorClass.TRANSIENT, "flaky"), clock.now() + 60
        ),
    }
    result = await write(store, final[state])
    assert isinstance(result, Replica)
    assert result.state is state
    return result


def fenced_writes(r: Replica) -> list[tuple[FencedWrite, ReplicaState]]:
    """Every fenced write a worker can make, with the state it asks for."""
    key, fence = r.key, r.fence
    error = ErrorInfo(ErrorClass.TRANSIENT, "x")
    return [
        (MarkRunning(key, fence, r.worker_id or "w1"), S.RUNNING),
        (CompleteReplica(key, fence), S.SUCCEEDED),
        (FailReplica(key, fence, error, retry_at=1.0), S.RETRYING),
        (FailReplica(key, fence, error), S.FAILED),
        (ReleaseReplica(key, fence, "drain", S.PENDING), S.PENDING),
        (ReleaseReplica(key, fence, "pause", S.PAUSED), S.PAUSED),
        (ReleaseReplica(key, fence, "cancel", S.CANCELLED), S.CANCELLED),
    ]


def repeats(state: ReplicaState, w: FencedWrite) -> bool:
    """Whether ``w`` at the current fence repeats a write that brought the replica to ``state``
    (a retry after a lost acknowledgement): acknowledged, nothing written. A start repeats; the
    results and errors of ``fenced_writes`` differ from those ``replica_in`` recorded, so they
    are not repeats and are refused (the retries of the same ones are
    ``test_retries_of_writes_that_committed_unseen_are_recognised``)."""
    return isinstance(w, MarkRunning) and state in {S.RUNNING, S.SUCCEEDED, S.FAILED, S.RETRYING}


async def test_every_fenced_transition_legal_and_illegal(store: Store, clock: FakeClock) -> None:
    """For each state and each write: applied exactly when the table allows it (releases only
    from a worker's active states; a result from a scheduled replica implies it started);
    acknowledged without effect when it repeats the write that reached the state; otherwise
    IllegalTransition and nothing changes."""
    checked = 0
    for state in ReplicaState:
        for case in range(7):
            r = await replica_in(store, clock, state)
            w, target = fenced_writes(r)[case]
            history = await store.list_transitions(r.key.workload_id)
            implied_start = state is S.SCHEDULED and isinstance(w, CompleteReplica | FailReplica)
            legal = (can_transition(state, target) or implied_start) and (
                not isinstance(w, ReleaseReplica) or state in ACTIVE
            )
            result = await write(store, w)
            after = await store.get_replica(r.key)
            transitions = await store.list_transitions(r.key.workload_id)
            if repeats(state, w):
                assert result == Repeated(r) and after == r, (state, w, result)
                assert transitions == history
            elif legal:
                assert isinstance(result, Replica), (state, w, result)
                assert after.state is target
                steps = [(t.from_state, t.to_state) for t in transitions[len(history) :]]
                if implied_start:
                    assert steps == [(state, S.RUNNING), (S.RUNNING, target)]
                else:
                    assert steps == [(state, target)]
            else:
                assert isinstance(result, IllegalTransition), (state, w, result)
                assert after == r
                assert transitions == history
            checked += 1
    assert checked == len(ReplicaState) * 7


async def test_transitions_and_events_recorded_with_state_changes(store: Store) -> None:
    r = await running(store)
    await write(store, CompleteReplica(r.key, r.fence, {"answer": 42}))
    transitions = await store.list_transitions(r.key.workload_id)
    assert [(t.from_state, t.to_state, t.fence) for t in transitions] == [
        (S.PENDING, S.SCHEDULED, 1),
        (S.SCHEDULED, S.RUNNING, 1),
        (S.RUNNING, S.SUCCEEDED, 1),
    ]
    events = await store.list_events(EventQuery(workload_id=r.key.workload_id))
    assert [e.kind for e in events] == [
        "workload.submitted",
        "replica.scheduled",
        "replica.running",
        "replica.succeeded",
    ]
    assert dict(events[2].data) == {"from": "scheduled", "fence": 1, "attempt": 1}
    assert (events[2].actor, events[2].customer_id, events[2].index) == ("worker:w1", CUSTOMER, 0)
    done = await store.get_replica(r.key)
    assert (done.result, done.progress) == ({"answer": 42}, 1.0)
    assert (await store.get_workload(r.key.workload_id)).state is S.SUCCEEDED


async def test_api_control_cancel_pause_resume(store: Store) -> None:
    r = await running(store)
    queued = ReplicaKey(await submit(store), 0)
    paused = await store.pause_workload(queued.workload_id, "api", "hold")
    assert paused.state is S.PAUSED
    with pytest.raises(IllegalTransition):
        await store.pause_workload(queued.workload_id, "api", "again")
    resumed = await store.resume_workload(queued.workload_id, "api", "go")
    assert resumed.state is S.PENDING
    with pytest.raises(IllegalTransition):
        await store.resume_workload(queued.workload_id, "api", "again")
    # A running replica keeps running on pause: the coordinator makes it yield, then releases it.
    assert (await store.pause_workload(r.key.workload_id, "api", "hold")).state is S.RUNNING
    cancelled = await store.cancel_workload(r.key.workload_id, "api", "stop")
    assert cancelled.state is S.CANCELLED
    after = await store.get_replica(r.key)
    assert (after.state, after.fence) == (S.CANCELLED, r.fence + 1)
    stale = await write(store, SaveCheckpoint(r.key, r.fence, 1, b"late"))
    assert isinstance(stale, FencedOut)
    with pytest.raises(IllegalTransition):
        await store.cancel_workload(r.key.workload_id, "api", "again")
    with pytest.raises(UnknownWorkload):
        await store.cancel_workload("w-missing", "api", "x")


async def test_scale_continuous_workload(store: Store) -> None:
    wid = await submit(store, replicas=2, mode=Mode.CONTINUOUS)
    r0 = await assign(store, ReplicaKey(wid, 0))
    scaled = await store.scale_workload(wid, 4, "autoscaler")
    assert scaled.replicas == 4
    assert [r.index for r in await store.list_replicas(wid)] == [0, 1, 2, 3]
    await store.scale_workload(wid, 1, "autoscaler")
    states = [(r.index, r.state) for r in await store.list_replicas(wid)]
    assert states == [(0, S.SCHEDULED), (1, S.CANCELLED), (2, S.CANCELLED), (3, S.CANCELLED)]
    assert (await store.get_replica(r0.key)).fence == r0.fence
    with pytest.raises(InvalidInput):
        await store.scale_workload(await submit(store), 3, "autoscaler")


# --- leases and fencing ------------------------------------------------------------------------


async def test_assignment_skips_replicas_that_moved_on(store: Store) -> None:
    key = ReplicaKey(await submit(store), 0)
    first = await store.assign_replicas([Assignment(key, "w1", 10, 0)])
    assert [(r.fence, r.worker_id, r.state) for r in first] == [(1, "w1", S.SCHEDULED)]
    assert await store.assign_replicas([Assignment(key, "w2", 10, 0)]) == []
    assert (await store.get_replica(key)).worker_id == "w1"


async def test_lease_expiry_requeues_exactly_the_expired(store: Store, clock: FakeClock) -> None:
    short = [await assign(store, ReplicaKey(await submit(store), 0), ttl=5) for _ in range(3)]
    long = [await assign(store, ReplicaKey(await submit(store), 0), ttl=60) for _ in range(2)]
    renewed = short[0]
    clock.advance(4)
    result = await store.renew_leases("w1", [LeaseRenewal(renewed.key, renewed.fence)], 30)
    assert result.renewed == (renewed.key,)
    clock.advance(2)
    expired = await store.requeue_expired()
    assert sorted(r.key for r in expired) == sorted(r.key for r in short[1:])
    for before in short[1:]:
        after = await store.get_replica(before.key)
        assert (after.state, after.fence, after.worker_id) == (S.PENDING, before.fence + 1, None)
        assert after.previous_worker == "w1"
        late = await write(store, RecordProgress(before.key, before.fence, 0.5))
        assert isinstance(late, FencedOut)
        assert (late.presented, late.current) == (before.fence, before.fence + 1)
    for kept in [renewed, *long]:
        assert (await store.get_replica(kept.key)).state is S.SCHEDULED
    assert await store.requeue_expired() == []
    stale = await store.renew_leases("w1", [LeaseRenewal(short[1].key, short[1].fence)], 30)
    assert stale.fenced == (short[1].key,)


async def test_renew_one_thousand_leases_in_one_call(store: Store, clock: FakeClock) -> None:
    wid = await submit(store, replicas=1000, mode=Mode.CONTINUOUS)
    keys = [ReplicaKey(wid, i) for i in range(1000)]
    assigned = await store.assign_replicas([Assignment(k, "w1", 5, 0) for k in keys])
    assert len(assigned) == 1000
    renewals = [LeaseRenewal(r.key, r.fence) for r in assigned[:990]]
    renewals += [LeaseRenewal(r.key, r.fence + 7) for r in assigned[990:]]
    result = await store.renew_leases("w1", renewals, 30)
    assert len(result.renewed) == 990
    assert result.fenced == tuple(r.key for r in assigned[990:])
    assert (await store.renew_leases("w2", renewals[:5], 30)).fenced == tuple(
        r.key for r in renewals[:5]
    )
    clock.advance(10)
    assert sorted(r.key for r in await store.requeue_expired()) == list(result.fenced)
    assert await store.extend_all_leases(60) == 990


async def test_release_worker_requeues_its_replicas(store: Store) -> None:
    mine = [await running(store, "w1") for _ in range(2)]
    other = await running(store, "w2")
    released = await store.release_worker("w1", "connection lost")
    assert sorted(r.key for r in released) == sorted(r.key for r in mine)
    assert [r.key for r in await store.active_replicas()] == [other.key]
    assert [r.key for r in await store.active_replicas("w2")] == [other.key]
    assert await store.count_replicas_by_state() == {
        (CUSTOMER, "pending"): 2,
        (CUSTOMER, "running"): 1,
    }


async def test_fencing_race_only_the_current_token_wins(store: Store) -> None:
    old = await running(store, "w1")
    await store.release_worker("w1", "presumed dead")
    new = await assign(store, old.key, "w2")
    assert new.fence > old.fence
    writes: list[FencedWrite] = []
    for i in range(300):
        fence = new.fence if i % 3 == 0 else old.fence
        writes.append(RecordProgress(old.key, fence, i / 300))
    writes += [SaveCheckpoint(old.key, old.fence, 1000 + i, b"stale") for i in range(50)]
    writes.append(SaveCheckpoint(old.key, new.fence, 1, b"fresh"))
    results = await asyncio.gather(*(write(store, w) for w in writes))
    for w, result in zip(writes, results, strict=True):
        if w.fence == new.fence:
            assert isinstance(result, Replica | Checkpoint), result
        else:
            assert isinstance(result, FencedOut), result
            assert (result.presented, result.current) == (old.fence, new.fence)
    latest = await store.latest_checkpoint(old.key)
    assert latest is not None
    assert (latest.seq, latest.fence, latest.data) == (1, new.fence, b"fresh")


class CountingStore:
    """Counts the transactions the group committer opens."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.transactions = 0

    async def apply_writes(self, writes: Sequence[FencedWrite]) -> list[WriteResult]:
        self.transactions += 1
        return await self.store.apply_writes(writes)


async def test_group_committer_resolves_each_caller(store: Store) -> None:
    counting = CountingStore(store)
    committer = GroupCommitter(counting, max_in_flight=1)
    replicas = [await running(store) for _ in range(8)]

    async def checkpoints(r: Replica, fence: int) -> list[object]:
        outcomes: list[object] = []
        for seq in range(1, 21):
            try:
                outcomes.append(await committer.submit(SaveCheckpoint(r.key, fence, seq, b"s")))
            except FencedOut as refused:
                outcomes.append(refused)
        return outcomes

    current = asyncio.gather(*(checkpoints(r, r.fence) for r in replicas))
    stale = asyncio.gather(*(checkpoints(r, r.fence - 1) for r in replicas))
    good, bad = await asyncio.gather(current, stale)
    await committer.close()
    for r, outcomes in zip(replicas, good, strict=True):
        assert [o.seq for o in outcomes if isinstance(o, Checkpoint)] == list(range(1, 21))
        assert (await store.get_replica(r.key)).checkpoint_seq == 20
    assert all(isinstance(o, FencedOut) for outcomes in bad for o in outcomes)
    assert counting.transactions < 8 * 40 / 4


async def test_group_committer_keeps_each_replicas_writes_in_order(store: Store) -> None:
    replicas = [await running(store) for _ in range(4)]
    committer = GroupCommitter(store, max_batch=3)
    writes: list[FencedWrite] = [
        SaveCheckpoint(r.key, r.fence, seq, b"%d" % seq) for seq in range(1, 16) for r in replicas
    ]
    writes += [CompleteReplica(r.key, r.fence, {"seq": 15}) for r in replicas]
    results = await asyncio.gather(*(committer.submit(w) for w in writes))
    await committer.close()
    assert [c.seq for c in results if isinstance(c, Checkpoint)] == [
        seq for seq in range(1, 16) for _ in replicas
    ]
    for r in replicas:
        done = await store.get_replica(r.key)
        assert (done.state, done.checkpoint_seq) == (S.SUCCEEDED, 15)


async def test_group_committer_reports_a_failed_transaction_to_every_caller(store: Store) -> None:
    r = await running(store)
    committer = GroupCommitter(store)
    await store.close()
    outcomes = await asyncio.gather(
        *(committer.submit(RecordProgress(r.key, r.fence, 0.5)) for _ in range(5)),
        return_exceptions=True,
    )
    assert all(isinstance(o, StoreUnavailable) for o in outcomes)
    await committer.close()
    with pytest.raises(StoreUnavailable):
        await committer.submit(RecordProgress(r.key, r.fence, 0.5))


async def test_checkpoints_advance_and_resume_point(store: Store, clock: FakeClock) -> None:
    r = await running(store)
    assert await store.latest_checkpoint(r.key) is None
    saved = await write(store, SaveCheckpoint(r.key, r.fence, 3, b"three"))
    assert isinstance(saved, Checkpoint) and saved.created_at == clock.now()
    repeat = await write(store, SaveCheckpoint(r.key, r.fence, 3, b"three"))
    assert isinstance(repeat, Repeated)
    assert isinstance(repeat.state, Checkpoint) and repeat.state.seq == 3
    assert isinstance(
        await write(store, SaveCheckpoint(r.key, r.fence, 2, b"two")), CheckpointSeqConflict
    )
    assert isinstance(
        await write(store, SaveCheckpoint(r.key, r.fence, 4, b"x" * (16 * 1024 * 1024 + 1))),
        PayloadTooLarge,
    )
    await write(store, ReleaseReplica(r.key, r.fence, "preempted"))
    again = await assign(store, r.key, "w2")
    assert (again.resumed_from_seq, again.checkpoint_seq, again.previous_worker) == (3, 3, "w1")
    latest = await store.latest_checkpoint(r.key)
    assert latest is not None and (latest.seq, latest.data, latest.fence) == (3, b"three", r.fence)


async def test_retry_backoff_returns_to_pending(store: Store, clock: FakeClock) -> None:
    r = await running(store)
    error = ErrorInfo(ErrorClass.TRANSIENT, "flaky")
    retried = await write(store, FailReplica(r.key, r.fence, error, retry_at=clock.now() + 30))
    assert isinstance(retried, Replica)
    assert (retried.state, retried.attempt, retried.worker_id) == (S.RETRYING, 2, None)
    assert await store.pending_replicas() == []
    clock.advance(31)
    [pending] = await store.pending_replicas()
    assert (pending.key, pending.state, pending.attempt, pending.error) == (
        r.key,
        S.PENDING,
        2,
        error,
    )
    assert (await store.get_workload(r.key.workload_id)).state is S.PENDING


async def test_a_backoff_over_is_requeued_only_when_the_read_asks_for_it(
    store: Store, clock: FakeClock
) -> None:
    r = await running(store)
    error = ErrorInfo(ErrorClass.TRANSIENT, "flaky")
    await write(store, FailReplica(r.key, r.fence, error, retry_at=clock.now() + 30))
    clock.advance(31)
    assert await store.pending_replicas(requeue_due=False) == []
    assert (await store.get_replica(r.key)).state is S.RETRYING
    [pending] = await store.pending_replicas(requeue_due=True)
    assert (pending.key, pending.state, pending.attempt) == (r.key, S.PENDING, 2)


async def test_assignment_records_its_transition_and_derives_the_workload_state(
    store: Store,
) -> None:
    wid = await submit(store, replicas=2)
    first, second = ReplicaKey(wid, 0), ReplicaKey(wid, 1)
    placed = await assign(store, first, worker="w1", ttl=10)
    assert (placed.state, placed.fence, placed.worker_id) == (S.SCHEDULED, 1, "w1")
    assert (await store.get_workload(wid)).state is S.SCHEDULED
    [event] = [
        e
        for e in await store.list_events(EventQuery(workload_id=wid))
        if e.kind == "replica.scheduled"
    ]
    assert (event.index, event.reason, event.actor) == (0, "placed on w1", "scheduler")
    assert (event.data["fence"], event.data["from"]) == (1, "pending")
    await write(store, MarkRunning(first, placed.fence, "w1"))
    await assign(store, second, worker="w2")
    # One replica running and one scheduled: the workload runs.
    assert (await store.get_workload(wid)).state is S.RUNNING


async def test_pending_per_customer_takes_each_customer_s_head_of_queue(
    store: Store, clock: FakeClock
) -> None:
    await store.create_customer(Customer("other", "bronze"))
    old = []
    for _ in range(3):
        old.append(await submit(store))
        clock.advance(1)
    urgent = await submit(store, priority=5)  # newest, but first in acme's own queue
    clock.advance(1)
    theirs = (await store.submit_workload(WorkloadSpec("other", TYPE), "test")).workload.id
    everything = await store.pending_replicas()
    assert [r.workload_id for r in everything] == [*old, urgent, theirs]
    window = await store.pending_replicas(per_customer=2)
    assert [r.workload_id for r in window] == [old[0], urgent, theirs]  # still oldest first


async def test_placement_view_is_the_pending_window_and_the_work_in_flight(
    store: Store, clock: FakeClock
) -> None:
    await store.create_customer(Customer("other", "bronze"))
    first = await running(store)
    clock.advance(1)
    old = []
    for _ in range(3):
        old.append(await submit(store))
        clock.advance(1)
    urgent = await submit(store, priority=5)
    clock.advance(1)
    theirs = (await store.submit_workload(WorkloadSpec("other", TYPE), "test")).workload.id
    placed = await assign(store, ReplicaKey(theirs, 0), worker="w2")

    view = await store.placement_view(100, per_customer=2)
    assert [r.workload_id for r in view.pending] == [old[0], urgent]
    assert view.pending == await store.pending_replicas(100, per_customer=2)
    assert [(r.key, r.state) for r in view.active] == sorted(
        [(first.key, S.RUNNING), (placed.key, S.SCHEDULED)]
    )
    assert view.active == await store.active_replicas()
    assert (await store.placement_view(1, per_customer=2)).pending == view.pending[:1]


async def test_placement_view_reads_the_work_in_flight_when_nothing_is_pending(
    store: Store,
) -> None:
    first = await running(store)
    view = await store.placement_view(100, per_customer=16)
    assert (view.pending, [r.key for r in view.active]) == ([], [first.key])


async def test_placement_view_requeues_retries_whose_backoff_is_over(
    store: Store, clock: FakeClock
) -> None:
    r = await running(store)
    retrying = await store.fail_stalled(r.key, r.fence, "no checkpoint")
    clock.advance(retrying.not_before - clock.now() + 1)
    assert (await store.placement_view(100, 16, requeue_due=False)).pending == []
    [back] = (await store.placement_view(100, 16, requeue_due=True)).pending
    assert (back.key, back.state, back.attempt) == (r.key, S.PENDING, 2)


async def test_queue_depths_count_every_pending_replica_per_customer(
    store: Store, clock: FakeClock
) -> None:
    assert await store.queue_depths() == []
    first = clock.now()
    await submit(store, replicas=3)
    clock.advance(5)
    await store.create_customer(Customer("other", "bronze"))
    await store.submit_workload(WorkloadSpec("other", TYPE), "test")
    placed = await running(store)  # running: not queued
    assert [
        (q.customer_id, q.pending, q.oldest_enqueued_at) for q in await store.queue_depths()
    ] == [
        (CUSTOMER, 3, first),
        ("other", 1, first + 5),
    ]
    assert placed.state is S.RUNNING


async def test_fail_stalled_retries_then_fails(store: Store, clock: FakeClock) -> None:
    r = await running(store)
    with pytest.raises(FencedOut):
        await store.fail_stalled(r.key, r.fence + 1, "no checkpoint")
    stalled = await store.fail_stalled(r.key, r.fence, "no checkpoint")
    assert (stalled.state, stalled.fence, stalled.attempt) == (S.RETRYING, r.fence + 1, 2)
    assert stalled.not_before == clock.now() + 10
    assert stalled.error is not None and stalled.error.error_class is ErrorClass.STALLED
    clock.advance(11)
    await store.pending_replicas()
    second = await assign(store, r.key)
    await write(store, MarkRunning(r.key, second.fence, "w1"))
    final = await store.fail_stalled(r.key, second.fence, "no checkpoint")
    assert final.state is S.FAILED
    assert (await store.get_workload(r.key.workload_id)).state is S.FAILED


# --- events, autoscaling, leadership -----------------------------------------------------------


async def test_events_append_and_query(store: Store, clock: FakeClock) -> None:
    wid = await submit(store)
    alert = await store.append_event(
        Event(0, "alert.raised", 0.0, "monitor", customer_id=CUSTOMER, data={"rule": "queue"})
    )
    assert alert.id > 0 and alert.at == clock.now()
    await store.append_event(Event(0, "alert.raised", 1.0, "monitor", data={"rule": "errors"}))
    alerts = await store.list_events(EventQuery(kind_prefix="alert."))
    assert [e.data["rule"] for e in alerts] == ["queue", "errors"]
    only = await store.list_events(EventQuery(kind_prefix="alert.", extra={"rule": "errors"}))
    assert [e.data["rule"] for e in only] == ["errors"]
    assert [e.kind for e in await store.list_events(EventQuery(customer_id=CUSTOMER))] == [
        "workload.submitted",
        "alert.raised",
    ]
    after = await store.list_events(EventQuery(after_id=alerts[0].id))
    assert [e.id for e in after] == [alerts[1].id]
    assert [e.workload_id for e in await store.list_events(EventQuery(limit=1))] == [wid]


async def test_events_since_a_time(store: Store, clock: FakeClock) -> None:
    await store.append_event(Event(0, "slo.alert", 0.0, "slo-watch", data={"n": "old"}))
    clock.advance(60.0)
    later = clock.now()
    await store.append_event(Event(0, "slo.alert", 0.0, "slo-watch", data={"n": "new"}))
    recent = await store.list_events(EventQuery(kind_prefix="slo.", since=later))
    assert [e.data["n"] for e in recent] == ["new"]


async def test_events_without_their_data(store: Store) -> None:
    await submit(store)
    await store.append_event(Event(0, "slo.alert", 0.0, "slo-watch", data={"n": "x"}))
    whole = await store.list_events(EventQuery())
    bare = await store.list_events(EventQuery(with_data=False))
    assert [e.data for e in bare] == [{}, {}]
    assert [replace(e, data={}) for e in whole] == bare


async def test_autoscale_policies(store: Store) -> None:
    policy = AutoscalePolicy(CUSTOMER, TYPE, 1, 8, "queue_depth", 10.0)
    assert await store.put_autoscale_policy(policy) == policy
    changed = AutoscalePolicy(CUSTOMER, TYPE, 2, 9, "lag", 5.0, cooldown_s=10.0, max_step=2)
    await store.put_autoscale_policy(changed)
    assert await store.get_autoscale_policy(CUSTOMER, TYPE) == changed
    assert await store.list_autoscale_policies() == [changed]
    with pytest.raises(InvalidInput):
        await store.put_autoscale_policy(AutoscalePolicy(CUSTOMER, TYPE, 5, 2, "lag", 1.0))
    with pytest.raises(UnknownCustomer):
        await store.put_autoscale_policy(AutoscalePolicy("nobody", TYPE, 1, 2, "lag", 1.0))
    await store.delete_autoscale_policy(CUSTOMER, TYPE)
    with pytest.raises(NotFound):
        await store.get_autoscale_policy(CUSTOMER, TYPE)
    with pytest.raises(NotFound):
        await store.delete_autoscale_policy(CUSTOMER, TYPE)


async def test_leader_lease_one_leader_then_takeover(store: Store, clock: FakeClock) -> None:
    contenders = ["c1", "c2", "c3"]
    leases = await asyncio.gather(*(store.acquire_leadership("main", c, 10) for c in contenders))
    won = [lease for lease in leases if lease is not None]
    assert len(won) == 1
    leader = won[0]
    assert leader.term == 1
    assert await store.get_leader("main") == leader
    clock.advance(5)
    renewed = await store.acquire_leadership("main", leader.holder, 10)
    assert renewed is not None and renewed.term == 1
    other = next(c for c in contenders if c != leader.holder)
    assert await store.acquire_leadership("main", other, 10) is None
    clock.advance(11)
    assert await store.get_leader("main") is None
    takeover = await store.acquire_leadership("main", other, 10)
    assert takeover is not None and (takeover.holder, takeover.term) == (other, 2)
    assert await store.acquire_leadership("main", leader.holder, 10) is None
    await store.resign_leadership("main", other, 2)
    assert await store.get_leader("main") is None
    back = await store.acquire_leadership("main", leader.holder, 10)
    assert back is not None and back.term == 3


async def test_coordinators_heartbeat(store: Store, clock: FakeClock) -> None:
    await store.heartbeat_coordinator(CoordinatorInfo("c1", "http://a:8080", 0.0))
    clock.advance(3)
    await store.heartbeat_coordinator(CoordinatorInfo("c1", "http://a:8081", 0.0))
    await store.heartbeat_coordinator(CoordinatorInfo("c2", "http://b:8080", 0.0))
    assert await store.list_coordinators() == [
        CoordinatorInfo("c1", "http://a:8081", clock.now()),
        CoordinatorInfo("c2", "http://b:8080", clock.now()),
    ]


# --- faults: retries of calls that committed ----------------------------------------------------


async def test_retries_of_writes_that_committed_unseen_are_recognised(store: Store) -> None:
    """Every fenced write fails once after committing (the caller saw a lost connection) and is
    retried as is: each retry is acknowledged with the state the first delivery made, nothing
    is written twice, nothing refused."""
    faulty = FaultyStore(store, [FaultRule(FaultKind.COMMITTED, methods={"apply_writes"})])
    faults = faulty.as_store()
    key = ReplicaKey(await submit(store), 0)
    fence = (await assign(store, key)).fence
    writes: list[FencedWrite] = [
        MarkRunning(key, fence, "w1"),
        SaveCheckpoint(key, fence, 1, b"one"),
        SaveCheckpoint(key, fence, 2, b"two"),
        CompleteReplica(key, fence, {"done": True}),
    ]
    for w in writes:
        with pytest.raises(StoreUnavailable):
            await faults.apply_writes([w])
        first = await store.get_replica(key)
        [again] = await store.apply_writes([w])
        assert isinstance(again, Repeated), (w, again)
        assert await store.get_replica(key) == first
    replica = await store.get_replica(key)
    assert (replica.state, replica.checkpoint_seq, replica.result) == (
        S.SUCCEEDED,
        2,
        {"done": True},
    )
    steps = [(t.from_state, t.to_state) for t in await store.list_transitions(key.workload_id)]
    assert steps == [(S.PENDING, S.SCHEDULED), (S.SCHEDULED, S.RUNNING), (S.RUNNING, S.SUCCEEDED)]
    assert faulty.injected_into("apply_writes", FaultKind.COMMITTED) == len(writes)
    checkpoint = await store.latest_checkpoint(key)
    assert checkpoint is not None and (checkpoint.seq, checkpoint.data) == (2, b"two")
    for to_state in (S.PENDING, S.PAUSED, S.CANCELLED):  # yields: the release bumps the token
        held = await running(store)
        release = ReleaseReplica(held.key, held.fence, "yielded", to_state)
        with pytest.raises(StoreUnavailable):
            await faults.apply_writes([release])
        [again] = await store.apply_writes([release])
        assert isinstance(again, Repeated) and isinstance(again.state, Replica)
        assert (again.state.state, again.state.fence) == (to_state, held.fence + 1)
        steps = [t.to_state for t in await store.list_transitions(held.key.workload_id)]
        assert steps.count(to_state) == 1


async def test_group_committer_retries_a_batch_the_store_could_not_take(store: Store) -> None:
    """A blip is absorbed by the committer: a batch that failed before committing is applied
    by the retry; one that committed unseen is answered Repeated by it, never written twice."""
    r = await running(store)
    faulty = FaultyStore(
        store,
        [
            FaultRule(FaultKind.ERROR, methods={"apply_writes"}, calls={1}),
            FaultRule(FaultKind.COMMITTED, methods={"apply_writes"}, calls={3}),
        ],
    )
    committer = GroupCommitter(faulty.as_store(), retry_pause_s=0.001)
    first = await committer.submit(SaveCheckpoint(r.key, r.fence, 1, b"one"))
    assert isinstance(first, Checkpoint) and first.seq == 1
    second = await committer.submit(SaveCheckpoint(r.key, r.fence, 2, b"two"))
    assert isinstance(second, Repeated) and isinstance(second.state, Checkpoint)
    assert second.state.seq == 2
    assert faulty.calls["apply_writes"] == 4
    await committer.close()
    checkpoint = await store.latest_checkpoint(r.key)
    assert checkpoint is not None and (checkpoint.seq, checkpoint.data) == (2, b"two")


async def test_failure_retried_after_commit_counts_one_attempt(store: Store) -> None:
    r = await running(store)
    error = ErrorInfo(ErrorClass.TRANSIENT, "flaky")
    faulty = FaultyStore(store, [FaultRule(FaultKind.COMMITTED, calls={1})])
    with pytest.raises(StoreUnavailable):
        await faulty.as_store().apply_writes([FailReplica(r.key, r.fence, error, 1.0)])
    [again] = await store.apply_writes([FailReplica(r.key, r.fence, error, 1.0)])
    assert isinstance(again, Repeated) and isinstance(again.state, Replica)
    assert (again.state.state, again.state.attempt) == (S.RETRYING, 2)


async def _pings(faulty: FaultyStore, n: int) -> list[bool | None]:
    """``n`` pings through ``faulty``: the answer, or None for an injected fault."""
    outcomes: list[bool | None] = []
    for _ in range(n):
        try:
            outcomes.append(await faulty.as_store().ping())
        except StoreUnavailable:
            outcomes.append(None)
    return outcomes


async def test_fault_schedule_and_seeded_probability_repeat_exactly(store: Store) -> None:
    scheduled = FaultyStore(store, [FaultRule(FaultKind.ERROR, calls={2, 3}, times=1)])
    assert await _pings(scheduled, 4) == [True, None, True, True]  # call 3: over its one time
    assert scheduled.injected == [InjectedFault("ping", 2, FaultKind.ERROR)]
    rule = FaultRule(FaultKind.TIMEOUT, methods={"ping"}, probability=0.5)
    runs = [await _pings(FaultyStore(store, [rule], seed=5), 30) for _ in range(2)]
    assert runs[0] == runs[1] and 0 < runs[0].count(None) < 30


# --- cancellation ------------------------------------------------------------------------------


async def test_calls_cancelled_mid_flight_leave_the_store_usable(store: Store) -> None:
    """A caller cancelled in the middle of a store call (a shutdown, a timeout around it) leaves
    no transaction open: each cancelled call committed whole or left no trace, and every later
    call works. Cancellations land at every point of a call: before BEGIN, between statements,
    during COMMIT."""
    rng = random.Random(11)
    holders = [await running(store) for _ in range(3)]
    keys: list[str] = []
    for round_ in range(30):
        calls: list[asyncio.Task[object]] = []
        for i in range(3):
            keys.append(f"cancel-{round_}-{i}")
            spec = WorkloadSpec(CUSTOMER, TYPE, replicas=2, idempotency_key=keys[-1])
            calls.append(asyncio.create_task(store.submit_workload(spec, "test")))
        for r in holders:
            checkpoint = SaveCheckpoint(r.key, r.fence, round_ + 1, b"state")
            calls.append(asyncio.create_task(store.apply_writes([checkpoint])))
        calls.append(asyncio.create_task(store.renew_leases("w1", [], 10)))
        for _ in range(rng.randrange(12)):
            await asyncio.sleep(0)
        if rng.random() < 0.5:
            await asyncio.sleep(rng.uniform(0, 0.004))
        for call in calls:
            call.cancel()
        await asyncio.gather(*calls, return_exceptions=True)
    for key in keys:  # each cancelled submit: all of it or nothing
        again = await store.submit_workload(
            WorkloadSpec(CUSTOMER, TYPE, replicas=2, idempotency_key=key), "test"
        )
        assert len(await store.list_replicas(again.workload.id)) == 2
    for r in holders:  # checkpoints committed in order; the next one still advances
        seq = (await store.get_replica(r.key)).checkpoint_seq
        assert 0 <= seq <= 30
        [saved] = await store.apply_writes([SaveCheckpoint(r.key, r.fence, 31, b"after")])
        assert isinstance(saved, Checkpoint) and saved.seq == 31
    fresh = await running(store, "w2")
    assert (await write(store, CompleteReplica(fresh.key, fresh.fence))).state is S.SUCCEEDED


# --- durability (SQLite) -----------------------------------------------------------------------

WRITER = textwrap.dedent(
    """
    import asyncio, sys
    from niyanta.model import Customer, WorkloadSpec, WorkloadType
    from niyanta.store.factory import open_store

    async def main() -> None:
        store = await open_store(sys.argv[1])
        await store.create_customer(Customer("acme", "gold"))
        await store.register_type(WorkloadType("crunch"))
        while True:
            result = await store.submit_workload(
                WorkloadSpec("acme", "crunch", {"pad": "x" * 500}), "writer"
            )
            print(result.workload.id, flush=True)

    asyncio.run(main())
    """
)


async def test_sqlite_file_survives_sigkill_mid_write(tmp_path: Path) -> None:
    path = tmp_path / "killed.db"
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", WRITER, f"sqlite:///{path}", stdout=asyncio.subprocess.PIPE
    )
    assert child.stdout is not None
    committed: list[str] = []
    try:
        while len(committed) < 150:
            line = await asyncio.wait_for(child.stdout.readline(), 30)
            assert line, "the writer exited early"
            committed.append(line.decode().strip())
    finally:
        child.kill()
        await child.wait()
    assert child.returncode == -9
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    reopened = await open_store(f"sqlite:///{path}")
    try:
        page = await reopened.list_workloads(WorkloadFilter(limit=1000))
        assert set(committed) <= {w.id for w in page.items}
        for wid in committed[-5:]:
            assert [r.state for r in await reopened.list_replicas(wid)] == [S.PENDING]
    finally:
        await reopened.close()


# --- outage (PostgreSQL, on a server of its own) -----------------------------------------------


class OwnPostgres:
    """A throwaway PostgreSQL server on a spare port, so that stopping it harms no one else."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="niyanta-pg-"))
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self._as_owner: list[str] = []
        if os.geteuid() == 0:  # initdb and pg_ctl refuse to run as root
            shutil.chown(self.root, "postgres")
            self._as_owner = ["runuser", "-u", "postgres", "--"]

    def _run(self, *args: str) -> None:
        subprocess.run([*self._as_owner, *args], check=True, capture_output=True, timeout=60)

    def init(self) -> None:
        self._run("initdb", "-D", str(self.root / "data"), "-U", "postgres", "-A", "trust", "-N")

    def start(self) -> None:
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} -c fsync=off"
        self._run("pg_ctl", "-D", str(self.root / "data"), "-o", options, "-l",
                  str(self.root / "log"), "-w", "start")  # fmt: skip

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.root / "data"), "-m", "immediate", "-w", "stop")

    def remove(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


async def test_postgres_outage_raises_store_unavailable_then_recovers() -> None:
    if shutil.which("initdb") is None or shutil.which("pg_ctl") is None:
        if IN_CI:
            pytest.fail("initdb and pg_ctl are needed under CI=true", pytrace=False)
        pytest.skip("initdb and pg_ctl are not on PATH")
    server = OwnPostgres()
    try:
        await asyncio.to_thread(server.init)
        await asyncio.to_thread(server.start)
        store = await open_store(server.url)
        try:
            await store.create_customer(Customer(CUSTOMER, "gold"))
            await asyncio.to_thread(server.stop)
            with pytest.raises(StoreUnavailable):
                await store.get_customer(CUSTOMER)
            assert not await store.ping()
            await asyncio.to_thread(server.start)
            assert (await store.get_customer(CUSTOMER)).tier == "gold"
            assert await store.ping()
        finally:
            await store.close()
    finally:
        await asyncio.to_thread(server.remove)
