"""State store benchmark, on SQLite (a temporary file, WAL, synchronous=FULL) and PostgreSQL (a
fresh database on 127.0.0.1:5432, created and dropped here; fsync as the server has it).

Measures submits/s, assignments/s (placement + lease), transitions/s through group commit
(``apply_writes`` with batches of 200) against one commit per transition in the same run,
checkpoint write latency with 64 concurrent writers through the GroupCommitter, completions/s,
and the time to renew 1,000 leases in one call. Last line: one JSON object.

    .venv/bin/python bench/store.py
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import asyncpg

from niyanta.model import Customer, Replica, ReplicaKey, WorkloadSpec, WorkloadType
from niyanta.store.base import (
    Assignment,
    CompleteReplica,
    FencedWrite,
    LeaseRenewal,
    MarkRunning,
    SaveCheckpoint,
    Store,
)
from niyanta.store.factory import open_store
from niyanta.store.group_commit import GroupCommitter

PG_ADMIN = os.environ.get("NIYANTA_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
WORKLOADS = 4000
BATCH = 200
SINGLE = 400
WRITERS = 64
CHECKPOINTS_PER_WRITER = 40
T = TypeVar("T")


def chunks(items: Sequence[T], size: int) -> list[Sequence[T]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


async def timed(label: str, count: int, work: Callable[[], Awaitable[object]]) -> float:
    started = time.perf_counter()
    await work()
    elapsed = time.perf_counter() - started
    rate = count / elapsed
    print(f"  {label:<44} {count:>6} in {elapsed * 1000:8.1f} ms = {rate:>9.0f}/s")
    return rate


async def run(store: Store, name: str) -> dict[str, float]:
    print(f"{name}:")
    await store.create_customer(Customer("acme", "gold"))
    await store.register_type(WorkloadType("bench"))
    figures: dict[str, float] = {}

    async def submit_all() -> None:
        queue = list(range(WORKLOADS))

        async def submitter() -> None:
            while queue:
                queue.pop()
                await store.submit_workload(WorkloadSpec("acme", "bench", {"n": 1}), "bench")

        await asyncio.gather(*(submitter() for _ in range(16)))

    figures["submits_per_s"] = await timed("submit (16 concurrent callers)", WORKLOADS, submit_all)

    pending = await store.pending_replicas()
    assigned: list[Replica] = []

    async def assign_all() -> None:
        for part in chunks(pending, BATCH):
            assigned.extend(
                await store.assign_replicas([Assignment(r.key, "w1", 300, r.fence) for r in part])
            )

    figures["assigns_per_s"] = await timed(
        f"assign + lease (batches of {BATCH})", len(pending), assign_all
    )

    renewals = [LeaseRenewal(r.key, r.fence) for r in assigned[:1000]]
    samples = []
    for _ in range(7):
        started = time.perf_counter()
        result = await store.renew_leases("w1", renewals, 300)
        samples.append((time.perf_counter() - started) * 1000)
        assert len(result.renewed) == 1000
    figures["renew_1000_ms"] = statistics.median(samples)
    print(f"  {'renew 1,000 leases in one call (median of 7)':<44} {figures['renew_1000_ms']:.1f} ms")

    single, checkpointed, batched = (
        assigned[:SINGLE],
        assigned[SINGLE : SINGLE + WRITERS],
        assigned[SINGLE + WRITERS :],
    )

    async def one_commit_each() -> None:
        for r in single:
            [result] = await store.apply_writes([MarkRunning(r.key, r.fence, "w1")])
            assert isinstance(result, Replica)

    figures["single_tps"] = await timed(
        "transitions, one commit each", len(single), one_commit_each
    )

    async def group_commit() -> None:
        for part in chunks(batched, BATCH):
            results = await store.apply_writes([MarkRunning(r.key, r.fence, "w1") for r in part])
            assert all(isinstance(x, Replica) for x in results)

    figures["batched_tps"] = await timed(
        f"transitions, group commit (batches of {BATCH})", len(batched), group_commit
    )
    figures["batched_over_single"] = figures["batched_tps"] / figures["single_tps"]

    for part in chunks(checkpointed, BATCH):
        await store.apply_writes([MarkRunning(r.key, r.fence, "w1") for r in part])
    committer = GroupCommitter(store)
    latencies: list[float] = []

    async def writer(key: ReplicaKey, fence: int) -> None:
        for seq in range(1, CHECKPOINTS_PER_WRITER + 1):
            started = time.perf_counter()
            await committer.submit(SaveCheckpoint(key, fence, seq, b'{"n": %d}' % seq))
            latencies.append((time.perf_counter() - started) * 1000)

    async def checkpoint_all() -> None:
        await asyncio.gather(*(writer(r.key, r.fence) for r in checkpointed))

    figures["ckpt_per_s"] = await timed(
        f"checkpoints, {WRITERS} writers via GroupCommitter",
        WRITERS * CHECKPOINTS_PER_WRITER,
        checkpoint_all,
    )
    await committer.close()
    latencies.sort()
    figures["ckpt_p50_ms"] = latencies[len(latencies) // 2]
    figures["ckpt_p99_ms"] = latencies[int(len(latencies) * 0.99) - 1]
    print(
        f"  {'checkpoint latency p50 / p99':<44} "
        f"{figures['ckpt_p50_ms']:.2f} / {figures['ckpt_p99_ms']:.2f} ms"
    )

    completions: list[FencedWrite] = [CompleteReplica(r.key, r.fence, {"ok": 1}) for r in batched]

    async def complete_all() -> None:
        for part in chunks(completions, BATCH):
            await store.apply_writes(part)

    figures["completions_per_s"] = await timed(
        f"completions (batches of {BATCH})", len(completions), complete_all
    )
    return figures


async def bench_postgres() -> dict[str, float]:
    name = f"niyanta_bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(PG_ADMIN)
    try:
        fsync = await admin.fetchval("SHOW fsync")
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    base = PG_ADMIN.rsplit("/", 1)[0]
    try:
        store = await open_store(f"{base}/{name}")
        try:
            figures = await run(store, f"PostgreSQL (fsync={fsync})")
        finally:
            await store.close()
    finally:
        admin = await asyncpg.connect(PG_ADMIN)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()
    return figures


async def bench_sqlite() -> dict[str, float]:
    with tempfile.TemporaryDirectory() as folder:
        store = await open_store(f"sqlite:///{Path(folder) / 'bench.db'}")
        try:
            return await run(store, "SQLite (WAL, synchronous=FULL)")
        finally:
            await store.close()


async def main() -> None:
    summary: dict[str, Any] = {}
    for prefix, bench in (("sqlite", bench_sqlite), ("pg", bench_postgres)):
        for key, value in (await bench()).items():
            summary[f"{prefix}_{key}"] = round(value, 2)
    summary["baseline"] = "one commit per transition, same store, same run (*_single_tps)"
    print(json.dumps(summary, sort_keys=True))


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
