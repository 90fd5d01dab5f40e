"""Fencing a store of your own: a workload whose writes to a downstream database carry its fence
token, so that a zombie (a worker that lost its lease but does not know it yet) cannot overwrite
the work of the replica's new holder there either.

Niyanta refuses a stale token's checkpoints and results in its own store; a database the
workload writes to directly must check the token itself. ``write_fenced`` does it with one
conditional write per transaction: the resource's fence column is raised to the writer's token
only ``WHERE fence <= :token``; when that updates nothing, a newer holder has written already and
the whole transaction is rolled back.

Workload ``fenced-ledger`` writes items ``0 .. items-1`` to the ``ledger`` table of ``database``
(a SQLite file), one fenced transaction per item, checkpointing the next item after each. A write
refused downstream raises ``niyanta.FencedOut``: the replica stops at once, as it does when the
coordinator refuses a write. Params: ``database``, ``items``.
"""

from __future__ import annotations

import asyncio
import sqlite3
from contextlib import closing
from pathlib import Path

from niyanta import FencedOut, WorkloadContext, workload

SCHEMA = """
CREATE TABLE IF NOT EXISTS fences (resource TEXT PRIMARY KEY, fence INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS ledger (
    resource TEXT NOT NULL, item INTEGER NOT NULL, value TEXT NOT NULL, fence INTEGER NOT NULL,
    PRIMARY KEY (resource, item)
);
"""

_RAISE_FENCE = (
    "INSERT INTO fences (resource, fence) VALUES (:resource, :token)"
    " ON CONFLICT (resource) DO UPDATE SET fence = excluded.fence"
    " WHERE fences.fence <= excluded.fence"
)
_WRITE_ITEM = (
    "INSERT INTO ledger (resource, item, value, fence) VALUES (:resource, :item, :value, :token)"
    " ON CONFLICT (resource, item) DO UPDATE SET value = excluded.value, fence = excluded.fence"
)


def create_schema(database: Path) -> None:
    with closing(sqlite3.connect(database)) as db:
        db.executescript(SCHEMA)


def write_fenced(database: Path, resource: str, token: int, item: int, value: str) -> bool:
    """Write ``item`` of ``resource`` if ``token`` is the newest fence seen for it; False (and
    nothing written) when a newer token has written already."""
    with closing(sqlite3.connect(database, isolation_level=None)) as db:
        db.execute("BEGIN IMMEDIATE")
        try:
            raised = db.execute(_RAISE_FENCE, {"resource": resource, "token": token})
            if raised.rowcount == 0:
                db.execute("ROLLBACK")
                return False
            db.execute(
                _WRITE_ITEM, {"resource": resource, "item": item, "value": value, "token": token}
            )
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        return True


def current_fence(database: Path, resource: str) -> int | None:
    with closing(sqlite3.connect(database)) as db:
        row = db.execute("SELECT fence FROM fences WHERE resource = ?", (resource,)).fetchone()
    return None if row is None else int(row[0])


@workload("fenced-ledger")
async def fenced_ledger(ctx: WorkloadContext) -> dict[str, int]:
    database = Path(str(ctx.params["database"]))
    items = int(ctx.params["items"])
    resource = f"{ctx.workload_id}/{ctx.replica}"  # one fence per replica: the token's scope
    await asyncio.to_thread(create_schema, database)
    state = ctx.checkpoint or {"next": 0}
    item = int(state["next"])
    while item < items and not ctx.cancelled:
        value = f"item {item} by {ctx.worker_id}"
        written = await asyncio.to_thread(
            write_fenced, database, resource, ctx.fence_token, item, value
        )
        if not written:
            newer = await asyncio.to_thread(current_fence, database, resource)
            raise FencedOut(ctx.workload_id, ctx.replica, ctx.fence_token, newer or -1)
        item += 1
        await ctx.save_checkpoint({"next": item})
    return {"written": item}
