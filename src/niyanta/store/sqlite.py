"""SQLite backend: the embedded default (``sqlite:///path/to/niyanta.db``).

One connection in WAL mode for transactions, taken in turn (``WriterQueue``: submits and
assignments first) and opened with
``BEGIN IMMEDIATE`` (which also orders writers from other processes, with a busy timeout), and a
second, read-only one for single-statement reads: WAL lets it read the last commit while a write
is in progress, so a scheduling round's reads wait for no checkpoint batch's fsync.
``synchronous=FULL``: in WAL mode every commit syncs the log, so a write the coordinator has
acknowledged (a checkpoint, a completion) survives a power loss, not only a process crash. The
fsync this costs per commit is what group commit (``apply_writes``) amortises.
"""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from functools import lru_cache
from typing import TypeVar

import aiosqlite

from niyanta.clock import Clock
from niyanta.errors import StoreUnavailable
from niyanta.model import ReplicaKey
from niyanta.store import migrate
from niyanta.store.base import LeaseRenewal, StoreLimits
from niyanta.store.codec import Row
from niyanta.store.sql import PENDING_CUSTOMERS_CTE, SqlStore, Tx
from niyanta.store.writer_queue import WriterQueue

T = TypeVar("T")

_PLACEHOLDER = re.compile(r"\$(\d+)")


@lru_cache(maxsize=512)
def _to_sqlite(sql: str) -> str:
    """``$1`` -> ``?1``: SQLite's numbered parameters."""
    return _PLACEHOLDER.sub(r"?\1", sql)


_BUSY_TIMEOUT_S = 10.0


async def _use_wal(conn: aiosqlite.Connection) -> None:
    """``PRAGMA journal_mode=WAL``, tried again while another opener of a new file is switching
    it: SQLite answers that opener "database is locked" at once, without waiting out the busy
    timeout (seen with 4 stores opening one new file together, about 1 open in 25)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + _BUSY_TIMEOUT_S
    pause = 0.005
    while True:
        try:
            await conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or loop.time() >= deadline:
                raise
        await asyncio.sleep(pause)
        pause = min(pause * 2, 0.1)


async def _rollback(conn: aiosqlite.Connection) -> None:
    """End the open transaction, if any (none is open when a cancelled COMMIT went through)."""
    try:
        await conn.execute("ROLLBACK")
    except sqlite3.OperationalError as exc:
        if "no transaction is active" not in str(exc):
            raise


class SqliteTx:
    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn

    async def fetch(self, sql: str, *args: object) -> list[Row]:
        return list(await self._conn.execute_fetchall(_to_sqlite(sql), args))

    async def fetchrow(self, sql: str, *args: object) -> Row | None:
        rows = await self.fetch(sql, *args)
        return rows[0] if rows else None

    async def execute(self, sql: str, *args: object) -> None:
        await self._conn.execute(_to_sqlite(sql), args)

    async def executemany(self, sql: str, args: Sequence[Sequence[object]]) -> None:
        await self._conn.executemany(_to_sqlite(sql), args)


class SqliteStore(SqlStore):
    dialect = "sqlite"
    parallel_writes = 1
    lock_replicas_sql = (
        "SELECT * FROM replicas WHERE workload_id IN (SELECT value FROM json_each($1))"
        " ORDER BY workload_id, idx"
    )
    # No LATERAL in SQLite: each customer's head of queue as the rowids of a correlated LIMIT.
    pending_window_sql = PENDING_CUSTOMERS_CTE + (
        "SELECT r.* FROM queued JOIN replicas r ON r.rowid IN (SELECT q.rowid FROM replicas q"
        " WHERE q.state = 'pending' AND q.customer_id = queued.customer_id"
        " AND q.not_before <= $1 ORDER BY q.priority DESC, q.enqueued_at, q.workload_id, q.idx"
        " LIMIT $3) ORDER BY r.enqueued_at, r.workload_id, r.idx LIMIT $2"
    )

    def __init__(
        self,
        path: str,
        clock: Clock | None = None,
        limits: StoreLimits | None = None,
        synchronous: str = "FULL",
    ) -> None:
        super().__init__(clock, limits)
        self.path = path
        self._synchronous = synchronous
        self._conn: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._writer = WriterQueue()

    async def open(self) -> None:
        conn = await aiosqlite.connect(self.path, isolation_level=None)
        self._conn = conn
        try:
            conn.row_factory = sqlite3.Row
            # The busy timeout first: switching a new file to WAL takes a lock that another
            # process opening the same file at the same moment holds too.
            await conn.execute(f"PRAGMA busy_timeout={int(_BUSY_TIMEOUT_S * 1000)}")
            await _use_wal(conn)
            await conn.execute(f"PRAGMA synchronous={self._synchronous}")
            await conn.execute("PRAGMA foreign_keys=ON")
            await self.migrate()
            reader = await aiosqlite.connect(self.path, isolation_level=None)
            self._reader = reader
            reader.row_factory = sqlite3.Row
            await reader.execute(f"PRAGMA busy_timeout={int(_BUSY_TIMEOUT_S * 1000)}")
            await reader.execute("PRAGMA query_only=ON")
        except BaseException:
            await self.close()  # else each connection's thread outlives the failed open
            raise

    async def close(self) -> None:
        for conn in (self._reader, self._conn):
            if conn is not None:
                await conn.close()
        self._reader = self._conn = None

    async def migrate(self) -> int:
        now = self._now()

        async def body(tx: Tx) -> int:
            return await migrate.apply(tx, self.dialect, now, "REAL")

        return await self._run(body)

    async def ping(self) -> bool:
        async def body(tx: Tx) -> int:
            row = await tx.fetchrow("SELECT max(version) AS v FROM schema_version")
            return int(row["v"]) if row is not None and row["v"] is not None else 0

        try:
            return await self._run(body) == migrate.latest_version(self.dialect)
        except (sqlite3.Error, StoreUnavailable):
            return False

    async def _run(
        self, body: Callable[[Tx], Awaitable[T]], urgent: bool = False, autocommit: bool = False
    ) -> T:
        # ``autocommit`` is moot: the writer's turn is held either way, and BEGIN and COMMIT
        # are calls on the database thread, not round trips to a server.
        conn = self._conn
        if conn is None:
            raise StoreUnavailable("the SQLite store is not open")
        async with self._writer.turn(urgent):
            try:
                await conn.execute("BEGIN IMMEDIATE")
                result = await body(SqliteTx(conn))
                await conn.execute("COMMIT")
            except BaseException:
                # Failed or cancelled anywhere, BEGIN and COMMIT included. A cancelled await does
                # not stop its statement: aiosqlite runs it on the connection's thread anyway.
                # The ROLLBACK is queued behind it on that thread (so it ends whatever is open,
                # or finds nothing open after a COMMIT that went through) and is shielded, so a
                # second cancellation cannot skip it.
                await asyncio.shield(_rollback(conn))
                raise
            return result

    async def _read(self, sql: str, *args: object) -> list[Row]:
        if self._reader is None:
            raise StoreUnavailable("the SQLite store is not open")
        return list(await self._reader.execute_fetchall(_to_sqlite(sql), args))

    def _json_field_equals(self, column: str, key_param: int, value_param: int) -> str:
        return f"json_extract({column}, '$.\"' || ${key_param} || '\"') = ${value_param}"

    async def _renew(
        self, tx: Tx, worker_id: str, renewals: Sequence[LeaseRenewal], expires_at: float
    ) -> set[ReplicaKey]:
        rows = await tx.fetch(
            "UPDATE replicas SET lease_expires_at = $1 WHERE worker_id = $2"
            " AND state IN ('scheduled', 'running') AND (workload_id, idx, fence) IN"
            " (SELECT value ->> 0, value ->> 1, value ->> 2 FROM json_each($3))"
            " RETURNING workload_id, idx",
            expires_at,
            worker_id,
            json.dumps([[r.key.workload_id, r.key.index, r.fence] for r in renewals]),
        )
        return {ReplicaKey(r["workload_id"], r["idx"]) for r in rows}
