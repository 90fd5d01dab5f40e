"""What the SQLite store runs on a scheduling round, a heartbeat and a worker's writes reads only
the work in flight, not the history: SQLite has no statistics to go by, and a statement whose
plan walks every replica ever run (the primary key, for an ``ORDER BY workload_id, idx``, or a
full scan for a condition that does not repeat a partial index's own) costs each round time in
proportion to how long the system has run (2 ms a round at 5,000 replicas)."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

from niyanta.model import Customer, ReplicaKey, WorkloadSpec, WorkloadType
from niyanta.store.base import (
    Assignment,
    CompleteReplica,
    LeaseRenewal,
    MarkRunning,
    SaveCheckpoint,
)
from niyanta.store.sqlite import SqliteStore

HISTORY_TABLES = ("replicas", "workloads", "events", "transitions", "checkpoints")
BOUNDED_INDEXES = ("replicas_active", "replicas_queue", "replicas_customer_queue")
"""Partial indexes: they hold the replicas in flight (active, queued) only."""


def unbounded_scans(db: Path, statements: list[str]) -> dict[str, list[str]]:
    """Each statement's plan lines that walk a history table whole."""
    found: dict[str, list[str]] = {}
    scan = re.compile(rf"^SCAN ({'|'.join(HISTORY_TABLES)})\b(?: AS \w+)?")
    with sqlite3.connect(db) as conn:
        for sql in statements:
            if not sql.lstrip().upper().startswith(("SELECT", "UPDATE", "DELETE", "WITH")):
                continue
            plan = [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}")]
            bad = [
                line
                for line in plan
                if scan.match(line) and not any(f"INDEX {i}" in line for i in BOUNDED_INDEXES)
            ]
            if bad:
                found[sql] = bad
    return found


async def test_rounds_heartbeats_and_writes_read_only_the_work_in_flight(tmp_path: Path) -> None:
    db = tmp_path / "plans.db"
    store = SqliteStore(str(db))
    await store.open()
    try:
        await store.create_customer(Customer("bulk", "bronze"))
        await store.register_type(WorkloadType("steps"))
        specs = [WorkloadSpec("bulk", "steps", {"n": n}) for n in range(200)]
        await store.submit_workloads(specs, "test")

        statements: list[str] = []
        for conn in (store._reader, store._conn):
            assert conn is not None
            await conn.run(sqlite3.Connection.set_trace_callback, statements.append)

        pending = await store.pending_replicas(100, per_customer=24, requeue_due=True)
        assigned = await store.assign_replicas(
            [Assignment(r.key, "w1", 10.0, r.fence) for r in pending[:4]]
        )
        assert len(assigned) == 4
        view = await store.placement_view(100, per_customer=24, requeue_due=True)
        assert [r.key for r in view.active] == sorted(r.key for r in assigned)
        await store.active_replicas()
        await store.active_replicas("w1")
        key: ReplicaKey = assigned[0].key
        fence = assigned[0].fence
        await store.renew_leases("w1", [LeaseRenewal(r.key, r.fence) for r in assigned], 10.0)
        await store.apply_writes(
            [
                MarkRunning(key, fence, "w1"),
                SaveCheckpoint(key, fence, 1, b"{}"),
                CompleteReplica(key, fence, {"ok": True}),
            ]
        )
        await store.requeue_expired()
        await store.queue_depths()
        await store.latest_checkpoint(key)

        assert len(statements) > 10
        assert unbounded_scans(db, statements) == {}
    finally:
        await store.close()
