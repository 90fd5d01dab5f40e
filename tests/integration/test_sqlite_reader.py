"""Reads on SQLite wait for no write: while a write holds the one writer (a checkpoint batch's
commit under a flood, or here a turn held open), the API's and the catalog's reads (a workload,
its events, the customers and tiers a scheduling round refreshes) are served from the last
commit on the read-only connection."""

from __future__ import annotations

import asyncio
from pathlib import Path

from niyanta.model import Customer, WorkloadSpec, WorkloadType
from niyanta.store.base import EventQuery
from niyanta.store.sqlite import SqliteStore


async def test_reads_are_served_while_a_write_holds_the_writer(tmp_path: Path) -> None:
    store = SqliteStore(str(tmp_path / "reads.db"))
    await store.open()
    try:
        await store.create_customer(Customer("acme", "gold"))
        await store.register_type(WorkloadType("steps"))
        submitted = await store.submit_workload(WorkloadSpec("acme", "steps"), "test")
        workload_id = submitted.workload.id

        async with store._writer.turn():
            write = asyncio.create_task(store.create_customer(Customer("later", "bronze")))
            reads = asyncio.gather(
                store.get_workload(workload_id),
                store.list_events(EventQuery(workload_id=workload_id)),
                store.list_customers(),
                store.list_tiers(),
            )
            workload, events, customers, tiers = await asyncio.wait_for(reads, timeout=5)
            assert not write.done()  # the write waits for its turn; the reads did not
        await write

        assert workload.customer_id == "acme"
        assert [e.kind for e in events] == ["workload.submitted"]
        assert [c.id for c in customers] == ["acme"]  # the last commit: not the waiting write
        assert "gold" in {t.name for t in tiers}
        assert {c.id for c in await store.list_customers()} == {"acme", "later"}
    finally:
        await store.close()
