"""SQLite backend: the embedded default (``sqlite:///path/to/niyanta.db``).

Two connections, each used by one thread of its own, to which a whole call goes in one hop from
the event loop. The writer runs transactions in WAL mode, taken in turn (``WriterQueue``:
submits and assignments first), from ``BEGIN IMMEDIATE`` (which also orders writers from other
processes, with a busy timeout) to ``COMMIT``. The second, read-only connection serves single
statements and read-only transactions (``_snapshot``): WAL lets it read the last commit while a
write is in progress, so a scheduling round's reads and the API's wait for no checkpoint
batch's fsync. ``synchronous=FULL``: in WAL mode every commit syncs the log, so a write the
coordinator has acknowledged (a checkpoint, a completion) survives a power loss, not only a
process crash. The fsync this costs per commit is what group commit (``apply_writes``)
amortises.

Not aiosqlite: it sends each statement to its thread on its own, and a transaction of five
statements held the one writer for five passes of a busy event loop.
"""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache, partial
from typing import TypeVar

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


def _use_wal(conn: sqlite3.Connection) -> None:
    """``PRAGMA journal_mode=WAL``, tried again while another opener of a new file is switching
    it: SQLite answers that opener "database is locked" at once, without waiting out the busy
    timeout (seen with 4 stores opening one new file together, about 1 open in 25)."""
    deadline = time.monotonic() + _BUSY_TIMEOUT_S
    pause = 0.005
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.1)


def _connect(path: str, *pragmas: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        conn.row_factory = sqlite3.Row
        # The busy timeout first: switching a new file to WAL takes a lock that another
        # process opening the same file at the same moment holds too.
        conn.execute(f"PRAGMA busy_timeout={int(_BUSY_TIMEOUT_S * 1000)}")
        for pragma in pragmas:
            conn.execute(f"PRAGMA {pragma}")
    except BaseException:
        conn.close()
        raise
    return conn


def _connect_writer(path: str, synchronous: str) -> sqlite3.Connection:
    conn = _connect(path)
    try:
        _use_wal(conn)
        conn.execute(f"PRAGMA synchronous={synchronous}")
        conn.execute("PRAGMA foreign_keys=ON")
    except BaseException:
        conn.close()
        raise
    return conn


class _ThreadTx:
    """The open transaction, on its connection's thread: each statement runs at once, so a
    body awaiting only these never suspends."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    async def fetch(self, sql: str, *args: object) -> list[Row]:
        return _fetch(self._conn, sql, args)

    async def fetchrow(self, sql: str, *args: object) -> Row | None:
        rows = await self.fetch(sql, *args)
        return rows[0] if rows else None

    async def execute(self, sql: str, *args: object) -> None:
        self._conn.execute(_to_sqlite(sql), args)

    async def executemany(self, sql: str, args: Sequence[Sequence[object]]) -> None:
        self._conn.executemany(_to_sqlite(sql), args)


def _fetch(conn: sqlite3.Connection, sql: str, args: Sequence[object]) -> list[Row]:
    return conn.execute(_to_sqlite(sql), args).fetchall()


def _transaction(conn: sqlite3.Connection, body: Callable[[Tx], Awaitable[T]], begin: str) -> T:
    """``body`` from ``begin`` to COMMIT on the connection's thread. ``body`` is a coroutine
    function only to share its code with PostgreSQL's driver; here it is driven to its end
    without a loop."""
    conn.execute(begin)
    try:
        steps = body(_ThreadTx(conn)).__await__()
        try:
            next(steps)
        except StopIteration as finished:
            result: T = finished.value
        else:
            steps.close()
            raise RuntimeError("a SQLite transaction body awaited more than its statements")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return result


class _ThreadConnection:
    """A connection and the one thread that uses it: a call runs there whole, and calls run in
    the order made (a cancelled caller's call still runs, before the next one)."""

    def __init__(self, name: str) -> None:
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._conn: sqlite3.Connection | None = None

    async def open(self, connect: Callable[[], sqlite3.Connection]) -> None:
        self._conn = await self._call(connect)

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        """``fn(connection, *args)`` on the connection's thread."""
        if self._conn is None:
            raise StoreUnavailable("the SQLite store is not open")
        return await self._call(fn, self._conn, *args)

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await self._call(conn.close)
        self._thread.shutdown(wait=False)

    async def _call(self, fn: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)


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
        self._conn: _ThreadConnection | None = None
        self._reader: _ThreadConnection | None = None
        self._writer = WriterQueue()

    async def open(self) -> None:
        conn = self._conn = _ThreadConnection("sqlite-writer")
        reader = self._reader = _ThreadConnection("sqlite-reader")
        try:
            await conn.open(partial(_connect_writer, self.path, self._synchronous))
            await self.migrate()
            await reader.open(partial(_connect, self.path, "query_only=ON"))
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
            # Cancelled, the transaction still runs to its COMMIT or ROLLBACK on the thread, and
            # the next one queues behind it there.
            return await conn.run(_transaction, body, "BEGIN IMMEDIATE")

    async def _snapshot(self, body: Callable[[Tx], Awaitable[T]]) -> T:
        # A deferred transaction on the read-only connection: WAL gives it the last commit as
        # one snapshot, whatever the writer commits meanwhile.
        if self._reader is None:
            raise StoreUnavailable("the SQLite store is not open")
        return await self._reader.run(_transaction, body, "BEGIN")

    async def _read(self, sql: str, *args: object) -> list[Row]:
        if self._reader is None:
            raise StoreUnavailable("the SQLite store is not open")
        return await self._reader.run(_fetch, sql, args)

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
