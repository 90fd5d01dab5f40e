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
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
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
WORKLOADS = 3000
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


async def submit_all(store: Store) -> float:
    remaining = list(range(WORKLOADS))

    async def submitter() -> None:
        while remaining:
            remaining.pop()
            await store.submit_workload(WorkloadSpec("acme", "bench", {"n": 1}), "bench")

    async def work() -> None:
        await asyncio.gather(*(submitter() for _ in range(16)))

    return await timed("submit (16 concurrent callers)", WORKLOADS, work)


async def assign_all(store: Store, assigned: list[Replica]) -> float:
    pending = await store.pending_replicas()

    async def work() -> None:
        for part in chunks(pending, BATCH):
            placements = [Assignment(r.key, "w1", 300, r.fence) for r in part]
            assigned.extend(await store.assign_replicas(placements))

    return await timed(f"assign + lease (batches of {BATCH})", len(pending), work)


async def renew_1000(store: Store, assigned: Sequence[Replica]) -> float:
    renewals = [LeaseRenewal(r.key, r.fence) for r in assigned[:1000]]
    samples = []
    for _ in range(7):
        started = time.perf_counter()
        result = await store.renew_leases("w1", renewals, 300)
        samples.append((time.perf_counter() - started) * 1000)
        assert len(result.renewed) == 1000
    median = statistics.median(samples)
    print(f"  {'renew 1,000 leases in one call (median of 7)':<44} {median:.1f} ms")
    return median


async def in_batches(store: Store, writes: Sequence[FencedWrite]) -> None:
    for part in chunks(writes, BATCH):
        results = await store.apply_writes(part)
        assert all(isinstance(x, Replica) for x in results)


async def one_commit_each(store: Store, writes: Sequence[FencedWrite]) -> None:
    for write in writes:
        [result] = await store.apply_writes([write])
        assert isinstance(result, Replica)


async def checkpoints(store: Store, writers: Sequence[Replica]) -> dict[str, float]:
    """Each writer saves checkpoints one after another, all through one GroupCommitter."""
    committer = GroupCommitter(store)
    latencies: list[float] = []

    async def writer(key: ReplicaKey, fence: int) -> None:
        for seq in range(1, CHECKPOINTS_PER_WRITER + 1):
            started = time.perf_counter()
            await committer.submit(SaveCheckpoint(key, fence, seq, b'{"n": %d}' % seq))
            latencies.append((time.perf_counter() - started) * 1000)

    async def work() -> None:
        await asyncio.gather(*(writer(r.key, r.fence) for r in writers))

    rate = await timed(
        f"checkpoints, {len(writers)} writers via GroupCommitter",
        len(writers) * CHECKPOINTS_PER_WRITER,
        work,
    )
    await committer.close()
    latencies.sort()
    p50, p99 = latencies[len(latencies) // 2], latencies[int(len(latencies) * 0.99) - 1]
    print(f"  {'checkpoint latency p50 / p99':<44} {p50:.2f} / {p99:.2f} ms")
    return {"ckpt_per_s": rate, "ckpt_p50_ms": p50, "ckpt_p99_ms": p99}


async def run(store: Store, name: str) -> dict[str, float]:
    print(f"{name}:")
    await store.create_customer(Customer("acme", "gold"))
    await store.register_type(WorkloadType("bench"))
    figures = {"submits_per_s": await submit_all(store)}
    assigned: list[Replica] = []
    figures["assigns_per_s"] = await assign_all(store, assigned)
    figures["renew_1000_ms"] = await renew_1000(store, assigned)
    single = assigned[:SINGLE]
    writers = assigned[SINGLE : SINGLE + WRITERS]
    batched = assigned[SINGLE + WRITERS :]

    def started(replicas: Sequence[Replica]) -> list[FencedWrite]:
        return [MarkRunning(r.key, r.fence, "w1") for r in replicas]

    figures["single_tps"] = await timed(
        "transitions, one commit each", len(single), lambda: one_commit_each(store, started(single))
    )
    figures["batched_tps"] = await timed(
        f"transitions, group commit (batches of {BATCH})",
        len(batched),
        lambda: in_batches(store, started(batched)),
    )
    figures["batched_over_single"] = figures["batched_tps"] / figures["single_tps"]
    await in_batches(store, started(writers))
    figures.update(await checkpoints(store, writers))
    completions = [CompleteReplica(r.key, r.fence, {"ok": 1}) for r in batched]
    figures["completions_per_s"] = await timed(
        f"completions (batches of {BATCH})", len(batched), lambda: in_batches(store, completions)
    )
    return figures


async def commit_latency(url: str) -> dict[str, float]:
    """The floor under every durable write: one-row INSERTs, each its own commit (fsync)."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("CREATE TABLE commit_probe (n int)")
        samples = []
        for n in range(300):
            started = time.perf_counter()
            await conn.execute("INSERT INTO commit_probe VALUES ($1)", n)
            samples.append((time.perf_counter() - started) * 1000)
    finally:
        await conn.close()
    samples.sort()
    p50, p99 = samples[len(samples) // 2], samples[int(len(samples) * 0.99) - 1]
    print(f"  bare commit of one row (server floor): p50 {p50:.2f} ms, p99 {p99:.2f} ms")
    return {"commit_p50_ms": p50, "commit_p99_ms": p99}


@asynccontextmanager
async def pg_database() -> AsyncIterator[str]:
    """The URL of a fresh database on ``PG_ADMIN``'s server, dropped afterwards."""
    name = f"niyanta_bench_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(PG_ADMIN)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield PG_ADMIN.rsplit("/", 1)[0] + "/" + name
    finally:
        admin = await asyncpg.connect(PG_ADMIN)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


async def bench_postgres() -> dict[str, float]:
    async with pg_database() as url:
        conn = await asyncpg.connect(url)
        try:
            fsync = await conn.fetchval("SHOW fsync")
        finally:
            await conn.close()
        floor = await commit_latency(url)
        store = await open_store(url)
        try:
            figures = await run(store, f"PostgreSQL (fsync={fsync})")
            figures.update(floor)
        finally:
            await store.close()
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
