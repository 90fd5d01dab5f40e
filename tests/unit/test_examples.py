"""The example workloads, run with ``niyanta.testing`` (and the prime counter also in a real
child process): each finishes, checkpoints at its logical boundaries and resumes from a
checkpoint without repeating or losing work."""

from __future__ import annotations

import asyncio
import csv
import json
import sqlite3
from collections.abc import Mapping
from contextlib import closing
from pathlib import Path

import pytest
from examples.cpu_primes import count_primes, primes_between
from examples.csv_ingest import ingest
from examples.demo_jobs import counter, dependency, flaky, noop, partial_batch, permanent
from examples.fenced_downstream import current_fence, fenced_ledger, write_fenced
from examples.paginated_fetch import PageServer, fetch_all

from niyanta import WorkloadContext, default_registry
from niyanta.testing import run_workload
from niyanta.worker.process_executor import CpuPlanner, run_in_child

# --- csv-ingest ----------


def write_csv(path: Path, rows: int) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "name"])
        for i in range(rows):
            writer.writerow([i, f"name-{i}"])


def table_rows(database: Path) -> list[dict[str, str]]:
    with closing(sqlite3.connect(database)) as db:
        records = db.execute("SELECT record FROM records ORDER BY source_offset").fetchall()
    return [json.loads(r[0]) for r in records]


async def test_csv_ingest_loads_every_row_in_batches(tmp_path: Path) -> None:
    source, database = tmp_path / "in.csv", tmp_path / "out.db"
    write_csv(source, 25)
    run = await run_workload(
        ingest, {"source": str(source), "database": str(database), "batch_size": 10}
    )
    assert run.result["rows"] == 25
    assert [c["rows"] for c in run.checkpoints] == [10, 20, 25]
    assert run.checkpoints[-1]["offset"] == source.stat().st_size
    rows = table_rows(database)
    assert rows[0] == {"id": "0", "name": "name-0"}
    assert [r["id"] for r in rows] == [str(i) for i in range(25)]


async def test_csv_ingest_resumed_from_an_older_checkpoint_does_not_duplicate_rows(
    tmp_path: Path,
) -> None:
    source, database = tmp_path / "in.csv", tmp_path / "out.db"
    write_csv(source, 25)
    params = {"source": str(source), "database": str(database), "batch_size": 10}
    first = await run_workload(ingest, params, stop_after_checkpoints=2)
    assert first.outcome == "yielded"
    assert len(table_rows(database)) == 20
    # As if the replica died after its second batch committed but before its checkpoint did.
    resumed = await run_workload(ingest, params, checkpoint=first.checkpoints[0])
    assert resumed.outcome == "succeeded"
    assert len(table_rows(database)) == 25
    assert [r["id"] for r in table_rows(database)] == [str(i) for i in range(25)]


async def test_jsonl_ingest(tmp_path: Path) -> None:
    source, database = tmp_path / "in.jsonl", tmp_path / "out.db"
    source.write_text("".join(json.dumps({"n": i}) + "\n" for i in range(7)))
    run = await run_workload(
        ingest, {"source": str(source), "database": str(database), "batch_size": 3}
    )
    assert run.result["rows"] == 7
    assert table_rows(database) == [{"n": i} for i in range(7)]


async def test_csv_ingest_missing_source_fails_permanently(tmp_path: Path) -> None:
    run = await run_workload(
        ingest, {"source": str(tmp_path / "none.csv"), "database": str(tmp_path / "o.db")}
    )
    assert (run.outcome, run.error_class) == ("failed", "permanent")


# --- paginated-fetch ----------


async def test_paginated_fetch_resumes_at_the_failed_page_after_a_transient_error() -> None:
    with PageServer(total=95, fail_cursors={40}) as server:
        params = {"base_url": server.url, "page_size": 20}
        first = await run_workload(fetch_all, params)
        assert (first.outcome, first.error_class) == ("failed", "transient")
        assert first.last_checkpoint["cursor"] == 40
        second = await run_workload(fetch_all, params, checkpoint=first.last_checkpoint)
        assert second.outcome == "succeeded"
        assert second.result == {"pages": 5, "items": 95, "sum": sum(i * i for i in range(95))}
        assert server.requests == 6  # five pages, one of them asked for twice
        assert [c["cursor"] for c in second.checkpoints] == [60, 80, None]


async def test_paginated_fetch_client_errors_are_permanent() -> None:
    with PageServer(total=10) as server:
        run = await run_workload(fetch_all, {"base_url": server.url + "/missing"})
    assert (run.outcome, run.error_class) == ("failed", "permanent")


# --- count-primes ----------


def test_segmented_sieve_counts_primes() -> None:
    naive = [n for n in range(2, 3000) if all(n % d for d in range(2, int(n**0.5) + 1))]
    assert primes_between(0, 3000) == len(naive)
    assert primes_between(1000, 2000) == len([p for p in naive if 1000 <= p < 2000])
    assert primes_between(0, 2) == 0


async def test_count_primes_checkpoints_each_chunk_and_resumes() -> None:
    params = {"limit": 10_000, "chunk_size": 1_000}
    first = await run_workload(count_primes, params, stop_after_checkpoints=3)
    assert first.outcome == "yielded"
    assert first.last_checkpoint == {"chunk": 3, "found": primes_between(0, 3_000)}
    second = await run_workload(count_primes, params, checkpoint=first.last_checkpoint)
    assert second.result == {"found": 1229, "chunks": 10}
    assert second.checkpoints[0]["chunk"] == 4


class _Recorder:
    def __init__(self) -> None:
        self.checkpoints: list[tuple[int, bytes]] = []
        self.progress: list[float] = []

    async def write_checkpoint(self, seq: int, data: bytes) -> None:
        self.checkpoints.append((seq, data))

    def report(self, progress: float | None, metrics: Mapping[str, float]) -> None:
        if progress is not None:
            self.progress.append(progress)

    async def acquire_dependency(self, dependency: str) -> None:
        return None

    def release_dependency(self, dependency: str, failure: bool | None) -> None:
        return None


async def test_count_primes_runs_in_a_child_process() -> None:
    definition = default_registry.get("count-primes", "1")
    assert definition.type.isolation == "process"
    recorder = _Recorder()
    ctx = WorkloadContext(
        backend=recorder,
        params={"limit": 20_000, "chunk_size": 5_000},
        checkpoint={"chunk": 1, "found": primes_between(0, 5_000)},
        checkpoint_seq=1,
        fence_token=1,
        attempt=1,
        customer="c",
        workload_id="w",
        replica=0,
        worker_id="test",
        type_name="count-primes",
    )
    result = await run_in_child(definition, ctx, recorder, CpuPlanner())
    assert result == {"found": 2262, "chunks": 4}
    assert [seq for seq, _ in recorder.checkpoints] == [2, 3, 4]
    assert ctx.checkpoint == {"chunk": 4, "found": 2262}
    assert recorder.progress[-1] == 1.0


# --- demo jobs ---------------------------------------------------------------------------------


async def test_demo_counter_yields_when_stopped_and_resumes() -> None:
    first = await run_workload(counter, {"steps": 5, "step_s": 0}, stop_after_checkpoints=2)
    assert first.outcome == "yielded"
    second = await run_workload(
        counter, {"steps": 5, "step_s": 0}, checkpoint=first.last_checkpoint
    )
    assert second.result == {"count": 5, "resumed_from": 2}


async def test_demo_flaky_fails_transiently_n_times_then_succeeds() -> None:
    checkpoint = None
    outcomes = []
    for attempt in range(1, 4):
        run = await run_workload(flaky, {"fail_times": 2}, checkpoint, attempt=attempt)
        outcomes.append((run.outcome, run.error_class))
        checkpoint = run.last_checkpoint or checkpoint
    assert outcomes == [("failed", "transient"), ("failed", "transient"), ("succeeded", None)]


async def test_demo_permanent_and_noop() -> None:
    failed = await run_workload(permanent, {"message": "bad input"})
    assert (failed.outcome, failed.error_class) == ("failed", "permanent")
    assert "bad input" in str(failed.error)
    assert (await run_workload(noop)).outcome == "succeeded"


async def test_demo_partial_batch_reports_failed_items() -> None:
    run = await run_workload(partial_batch, {"items": 10, "fail": [2, 5]})
    assert run.outcome == "succeeded"
    assert run.result == {"total": 10, "succeeded": 8, "failed": 2}
    assert [f["item"] for f in run.failed_items] == [2, 5]


async def test_demo_dependency_waits_behind_the_open_breaker_and_finishes_when_healthy(
    tmp_path: Path,
) -> None:
    health = tmp_path / "health"
    health.write_text("down")
    task = asyncio.create_task(run_workload(dependency, {"health_file": str(health), "calls": 3}))
    await asyncio.sleep(1.2)
    assert not task.done()
    health.write_text("up")
    run = await asyncio.wait_for(task, 5)
    assert run.result["done"] == 3
    # Without the breaker it would have retried every 50 ms (~24 times in 1.2 s); open, it
    # tries three times, then once per 0.5 s cool-down.
    assert run.result["attempts"] <= 3 + 3 + 3


@pytest.mark.parametrize("name", ["csv-ingest", "paginated-fetch", "count-primes", "demo-counter"])
def test_example_types_are_registered_with_importable_entrypoints(name: str) -> None:
    definition = default_registry.get(name, "1")
    assert definition.type.entrypoint is not None
    assert definition.type.entrypoint.startswith("examples.")


# --- fenced-ledger ----------


def ledger(database: Path) -> dict[int, tuple[str, int]]:
    with closing(sqlite3.connect(database)) as db:
        rows = db.execute("SELECT item, value, fence FROM ledger ORDER BY item").fetchall()
    return {item: (value, fence) for item, value, fence in rows}


async def test_fenced_ledger_writes_every_item_with_its_token(tmp_path: Path) -> None:
    database = tmp_path / "ledger.db"
    run = await run_workload(fenced_ledger, {"database": str(database), "items": 4}, fence=3)
    assert run.result == {"written": 4}
    assert [c["next"] for c in run.checkpoints] == [1, 2, 3, 4]
    assert {fence for _, fence in ledger(database).values()} == {3}


async def test_fenced_ledger_refuses_a_zombie_s_late_write_downstream(tmp_path: Path) -> None:
    """Token 1 runs two items and is paused (the zombie); the replica is reassigned with token 2,
    which resumes from the checkpoint and finishes. The zombie wakes and writes item 2 with its
    token 1: refused downstream, nothing changed, and the run ends fenced out (silent)."""
    database = tmp_path / "ledger.db"
    params = {"database": str(database), "items": 4}
    zombie = await run_workload(
        fenced_ledger, params, fence=1, worker_id="w1", stop_after_checkpoints=2
    )
    assert zombie.checkpoints[-1] == {"next": 2}
    successor = await run_workload(
        fenced_ledger, params, zombie.checkpoints[-1], fence=2, worker_id="w2"
    )
    assert successor.result == {"written": 4}
    before = ledger(database)
    assert not write_fenced(database, "test-workload/0", 1, 2, "late write by w1")
    woken = await run_workload(fenced_ledger, params, {"next": 2}, fence=1, worker_id="w1")
    assert woken.outcome == "silent" and woken.checkpoints == []
    assert ledger(database) == before
    assert {item: fence for item, (_, fence) in before.items()} == {0: 1, 1: 1, 2: 2, 3: 2}
    assert current_fence(database, "test-workload/0") == 2
