"""PostgreSQL backend (production): ``postgresql://user@host:port/db``, through an asyncpg pool.

Rows are locked with ``SELECT ... FOR UPDATE`` in (workload, index) order, so concurrent
transactions on the same replicas serialise; a deadlock the server still detects (a multi-row
UPDATE locks in plan order) is retried. The hot batched paths are single statements over the
whole batch (``UPDATE ... FROM <rows of a JSON array>``) rather than one round trip per row.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any, TypeVar

import asyncpg

from niyanta.clock import Clock
from niyanta.errors import Conflict, StoreUnavailable
from niyanta.model import Replica, ReplicaKey, WorkloadSpec
from niyanta.store import migrate
from niyanta.store.base import Assignment, LeaseRenewal, Placed, StoreLimits, SubmitResult
from niyanta.store.codec import REPLICA_COLUMNS, Row, event_values, replica_from_row
from niyanta.store.sql import (
    ACTIVE_SELECT,
    PENDING_CUSTOMERS_CTE,
    Many,
    SqlStore,
    Tx,
    new_rows,
    new_workload,
    submitted_event,
    workload_values,
)

T = TypeVar("T")

MIGRATION_LOCK = 0x6E69_7961_6E74_61  # "niyanta": serialises concurrent openers' migrations
_RETRIES = 5
_UNAVAILABLE = (
    OSError,  # refused, reset, timed out
    asyncpg.InterfaceError,  # the connection was closed under us
    asyncpg.PostgresConnectionError,
    asyncpg.OperatorInterventionError,  # shutting down, starting up
    asyncpg.TooManyConnectionsError,
)
"""Errors that mean the server cannot be reached now (StoreUnavailable: a 503, retry later)."""

_REPLICA_TYPES = {
    "workload_id": "text",
    "idx": "int",
    "customer_id": "text",
    "state": "text",
    "fence": "bigint",
    "attempt": "int",
    "worker_id": "text",
    "lease_expires_at": "float8",
    "previous_worker": "text",
    "enqueued_at": "float8",
    "not_before": "float8",
    "started_at": "float8",
    "finished_at": "float8",
    "progress": "float8",
    "checkpoint_seq": "bigint",
    "checkpoint_fence": "bigint",
    "checkpoint_at": "float8",
    "result": "text",
    "error": "text",
    "resumed_from_seq": "bigint",
}


def rowset(columns: Sequence[tuple[str, str]], param: int) -> str:
    """A relation over the rows bound at ``$param`` as one JSON array of arrays.

    Why JSON: asyncpg encodes a Python list per column element by element; one ``json.dumps``
    of the whole batch and PostgreSQL's JSON parser are several times faster for batches of
    hundreds of rows (floats round-trip exactly: ``repr`` out, ``float8`` in)."""
    fields = ", ".join(f"(e->>{i})::{kind} AS {name}" for i, (name, kind) in enumerate(columns))
    return f"(SELECT {fields} FROM niyanta_rows(${param}::jsonb) AS e)"


_HISTORY_COLUMNS = [
    ("workload_id", "text"),
    ("idx", "int"),
    ("from_state", "text"),
    ("to_state", "text"),
    ("fence", "bigint"),
    ("at", "float8"),
    ("actor", "text"),
    ("reason", "text"),
    ("customer_id", "text"),
    ("attempt", "int"),
]


_TRANSITIONS_WRITTEN = (
    "transitions_written AS (INSERT INTO transitions (workload_id, idx, from_state, to_state,"
    " fence, at, actor, reason) SELECT workload_id, idx, from_state, to_state, fence, at, actor,"
    " reason FROM history)"
)
_HISTORY_EVENTS = (
    # The ``replica.<to_state>`` event of each transition of ``history``.
    "SELECT 'replica.' || to_state, at, actor, workload_id, idx, customer_id, NULL, reason,"
    " json_build_object('attempt', attempt, 'fence', fence, 'from', from_state)::text"
    " FROM history"
)


def _ctes(what: Many, param: int) -> list[str]:
    """``ROW_SQL[what]`` over a whole batch bound at ``$param``, as clauses of one ``WITH``."""
    match what:
        case Many.REPLICAS:
            sets = ", ".join(f"{c} = u.{c}" for c in REPLICA_COLUMNS[2:])
            rows = rowset([(c, _REPLICA_TYPES[c]) for c in REPLICA_COLUMNS], param)
            return [
                f"replicas_written AS (UPDATE replicas AS r SET {sets} FROM {rows} AS u"
                " WHERE r.workload_id = u.workload_id AND r.idx = u.idx)"
            ]
        case Many.HISTORY:
            return [
                f"history AS {rowset(_HISTORY_COLUMNS, param)}",
                _TRANSITIONS_WRITTEN,
                "events_written AS (INSERT INTO events (kind, at, actor, workload_id, idx,"
                f" customer_id, correlation_id, reason, data) {_HISTORY_EVENTS})",
            ]
        case Many.CHECKPOINTS:
            # Checkpoint data is binary: bound as arrays (bytea[]), not as JSON.
            p = [f"${param + i}" for i in range(6)]
            return [
                "checkpoints_written AS (INSERT INTO checkpoints (workload_id, idx, seq, fence,"
                f" data, created_at) SELECT * FROM unnest({p[0]}::text[], {p[1]}::int[],"
                f" {p[2]}::bigint[], {p[3]}::bigint[], {p[4]}::bytea[], {p[5]}::float8[])"
                " ON CONFLICT (workload_id, idx) DO UPDATE SET seq = excluded.seq,"
                " fence = excluded.fence, data = excluded.data, created_at = excluded.created_at)"
            ]
        case Many.WORKLOAD_STATES:
            rows = rowset([("id", "text"), ("state", "text"), ("at", "float8")], param)
            return [
                "workloads_written AS (UPDATE workloads AS w SET state = u.state,"
                f" updated_at = u.at FROM {rows} AS u WHERE w.id = u.id AND w.state <> u.state)"
            ]


_WORKLOAD_TYPES = [
    ("id", "text"),
    ("customer_id", "text"),
    ("type_name", "text"),
    ("type_version", "text"),
    ("params", "text"),
    ("spec_digest", "text"),
    ("mode", "text"),
    ("replicas", "int"),
    ("affinity", "text"),
    ("priority", "int"),
    ("idempotency_key", "text"),
    ("labels", "text"),
    ("state", "text"),
    ("created_at", "float8"),
    ("updated_at", "float8"),
    ("traceparent", "text"),
]
"""INSERT_WORKLOAD's columns in the order of ``workload_values``."""


def _submit_one() -> str:
    """One workload without an idempotency key, bound as ``workload_values`` at $1..$16 (the
    type version at $4 is the one asked for, or NULL for the newest), its replicas as a JSON
    array at $17, its ``workload.submitted`` event's first eight values at $18..$25 and its
    replicas' assignment history (``Many.HISTORY`` rows; empty unless ``Placed``) as a JSON
    array at $26: the type resolved, the customer checked and every row written in one
    statement. It returns the version written, and no row when the customer or the type is
    unknown (nothing is written then)."""
    resolved = {"type_name": "wanted.name", "type_version": "wanted.version"}
    workload = ", ".join(
        resolved.get(name, f"${i}::{kind}")
        for i, (name, kind) in enumerate(_WORKLOAD_TYPES, start=1)
    )
    replica_columns = [(c, _REPLICA_TYPES[c]) for c in REPLICA_COLUMNS] + [("priority", "int")]
    return (
        "WITH wanted AS (SELECT name, version FROM workload_types WHERE name = $3::text"
        " AND ($4::text IS NULL OR version = $4::text)"
        " AND EXISTS (SELECT 1 FROM customers WHERE id = $2::text) ORDER BY seq DESC LIMIT 1),"
        f" workload_written AS (INSERT INTO workloads ({', '.join(c for c, _ in _WORKLOAD_TYPES)})"
        f" SELECT {workload} FROM wanted RETURNING type_version),"
        f" replicas_written AS (INSERT INTO replicas ({', '.join(c for c, _ in replica_columns)})"
        f" SELECT u.* FROM {rowset(replica_columns, 17)} AS u WHERE EXISTS (SELECT 1 FROM wanted)),"
        f" history AS (SELECT * FROM {rowset(_HISTORY_COLUMNS, 26)} AS h"
        " WHERE EXISTS (SELECT 1 FROM wanted)),"
        f" {_TRANSITIONS_WRITTEN},"
        # One INSERT for the submitted event and the assignments' after it: the event ids
        # follow the order of its rows (two inserts of one statement run in no set order).
        " events_written AS (INSERT INTO events (kind, at, actor, workload_id, idx, customer_id,"
        " correlation_id, reason, data) SELECT $18::text, $19::float8, $20::text, $21::text,"
        " $22::int, $23::text, $24::text, $25::text,"
        " json_build_object('type', name || '@' || version)::text FROM wanted"
        f" UNION ALL {_HISTORY_EVENTS})"
        " SELECT type_version FROM workload_written"
    )


_SUBMIT_ONE = _submit_one()

_ASSIGNMENT_COLUMNS = [
    ("workload_id", "text"),
    ("idx", "int"),
    ("fence", "bigint"),
    ("worker_id", "text"),
    ("lease_expires_at", "float8"),
]

_ASSIGN = (
    # ``changes.assign`` as one statement: pending -> scheduled where the fence is still the one
    # the scheduler saw, with its transition, its event and its workload's derived state (a
    # workload with a scheduled replica is running if another of its replicas is, else
    # scheduled: ``workload_state``).
    f"WITH a AS {rowset(_ASSIGNMENT_COLUMNS, 1)},"
    " assigned AS (UPDATE replicas AS r SET state = 'scheduled', fence = r.fence + 1,"
    " worker_id = a.worker_id, lease_expires_at = a.lease_expires_at,"
    " previous_worker = coalesce(r.worker_id, r.previous_worker),"
    " resumed_from_seq = r.checkpoint_seq,"
    " progress = CASE WHEN r.checkpoint_seq = 0 THEN 0 ELSE r.progress END"
    " FROM a WHERE r.workload_id = a.workload_id AND r.idx = a.idx AND r.fence = a.fence"
    " AND r.state = 'pending' RETURNING r.*),"
    " transitions_written AS (INSERT INTO transitions (workload_id, idx, from_state, to_state,"
    " fence, at, actor, reason) SELECT workload_id, idx, 'pending', 'scheduled', fence, $2,"
    " 'scheduler', 'placed on ' || worker_id FROM assigned),"
    " events_written AS (INSERT INTO events (kind, at, actor, workload_id, idx, customer_id,"
    " reason, data) SELECT 'replica.scheduled', $2, 'scheduler', workload_id, idx, customer_id,"
    " 'placed on ' || worker_id, json_build_object('attempt', attempt, 'fence', fence,"
    " 'from', 'pending')::text FROM assigned),"
    " derived AS (SELECT t.workload_id, CASE WHEN EXISTS (SELECT 1 FROM replicas AS s"
    " WHERE s.workload_id = t.workload_id AND s.state = 'running') THEN 'running'"
    " ELSE 'scheduled' END AS state FROM (SELECT DISTINCT workload_id FROM assigned) AS t),"
    " workloads_written AS (UPDATE workloads AS w SET state = d.state, updated_at = $2"
    " FROM derived AS d WHERE w.id = d.workload_id AND w.state <> d.state)"
    " SELECT * FROM assigned"
)

_PENDING_WINDOW = PENDING_CUSTOMERS_CTE + (
    "SELECT r.* FROM queued CROSS JOIN LATERAL (SELECT * FROM replicas q"
    " WHERE q.state = 'pending' AND q.customer_id = queued.customer_id"
    " AND q.not_before <= $1 ORDER BY q.priority DESC, q.enqueued_at, q.workload_id, q.idx"
    " LIMIT $3) AS r ORDER BY r.enqueued_at, r.workload_id, r.idx LIMIT $2"
)

_PENDING_AND_ACTIVE = (
    # A round's two reads as one statement: the pending window, then the active replicas.
    f"WITH p AS ({_PENDING_WINDOW}) SELECT true AS queued, p.* FROM p"
    f" UNION ALL SELECT false, a.* FROM ({ACTIVE_SELECT}) AS a"
)

_RENEW = (
    "UPDATE replicas AS r SET lease_expires_at = $1"
    f" FROM {rowset([('workload_id', 'text'), ('idx', 'int'), ('fence', 'bigint')], 3)} AS u"
    " WHERE r.workload_id = u.workload_id AND r.idx = u.idx AND r.fence = u.fence"
    " AND r.worker_id = $2 AND r.state IN ('scheduled', 'running')"
    " RETURNING r.workload_id, r.idx"
)


async def _keep_session(connection: object) -> None:
    """Released connections need no reset: the store leaves no session state behind (its only
    advisory lock is transaction-scoped; no LISTEN, no SET). asyncpg's default reset costs a
    round trip on every release, on the path of every write."""


class PostgresStore(SqlStore):
    dialect = "postgres"
    for_update = " FOR UPDATE"
    one_statement_submit = True
    # Driven from the id list (estimated at a few rows, migration 0002), so that every plan,
    # generic ones included, probes the primary key rather than scanning the table.
    lock_replicas_sql = (
        "SELECT r.* FROM niyanta_texts($1::jsonb) AS ids(id)"
        " JOIN replicas AS r ON r.workload_id = ids.id"
        " ORDER BY r.workload_id, r.idx FOR UPDATE OF r"
    )
    pending_window_sql = _PENDING_WINDOW

    def __init__(
        self,
        dsn: str,
        clock: Clock | None = None,
        limits: StoreLimits | None = None,
        min_connections: int = 2,
        max_connections: int = 10,
    ) -> None:
        super().__init__(clock, limits)
        self.dsn = dsn
        self._pool_size = (min_connections, max_connections)
        self.parallel_writes = max(1, max_connections // 2)
        self._pool: Any = None

    async def open(self) -> None:
        low, high = self._pool_size
        try:
            self._pool = await asyncpg.create_pool(
                self.dsn, min_size=low, max_size=high, reset=_keep_session
            )
        except (*_UNAVAILABLE, asyncpg.PostgresError) as exc:
            raise StoreUnavailable(f"cannot connect to PostgreSQL: {exc}") from exc
        await self.migrate()

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def migrate(self) -> int:
        now = self._now()

        async def body(tx: Tx) -> int:
            await tx.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
            return await migrate.apply(tx, self.dialect, now, "DOUBLE PRECISION")

        return await self._run(body)

    async def ping(self) -> bool:
        async def body(tx: Tx) -> int:
            row = await tx.fetchrow("SELECT max(version) AS v FROM schema_version")
            return int(row["v"]) if row is not None and row["v"] is not None else 0

        try:
            return await self._run(body) == migrate.latest_version(self.dialect)
        except (*_UNAVAILABLE, asyncpg.PostgresError, StoreUnavailable):
            return False

    async def _run(
        self, body: Callable[[Tx], Awaitable[T]], urgent: bool = False, autocommit: bool = False
    ) -> T:
        if self._pool is None:
            raise StoreUnavailable("the PostgreSQL store is not open")
        for attempt in range(_RETRIES):
            try:
                async with self._pool.acquire() as conn:
                    if autocommit:
                        return await body(conn)
                    async with conn.transaction():
                        return await body(conn)
            except (asyncpg.DeadlockDetectedError, asyncpg.SerializationError):
                if attempt == _RETRIES - 1:
                    raise
            except _UNAVAILABLE as exc:
                raise StoreUnavailable(f"PostgreSQL: {exc}") from exc
        raise AssertionError("unreachable")

    async def _snapshot(self, body: Callable[[Tx], Awaitable[T]]) -> T:
        # PostgreSQL's readers wait for no writer, and at READ COMMITTED each statement takes
        # its own snapshot inside a transaction block as well: no BEGIN and COMMIT round trips.
        return await self._run(body, autocommit=True)

    async def _read(self, sql: str, *args: object) -> list[Row]:
        if self._pool is None:
            raise StoreUnavailable("the PostgreSQL store is not open")
        try:
            async with self._pool.acquire() as conn:
                return list(await conn.fetch(sql, *args))
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(f"PostgreSQL: {exc}") from exc

    async def _pending_and_active(
        self, now: float, limit: int, per_customer: int
    ) -> tuple[list[Row], list[Row]]:
        rows = await self._read(_PENDING_AND_ACTIVE, now, limit, per_customer)
        pending = [r for r in rows if r["queued"]]
        # UNION ALL promises no order across its parts: the window's own order, restored (a
        # linear pass when it came through, as PostgreSQL's Append returns it).
        pending.sort(key=lambda r: (r["enqueued_at"], r["workload_id"], r["idx"]))
        return pending, [r for r in rows if not r["queued"]]

    def _json_field_equals(self, column: str, key_param: int, value_param: int) -> str:
        return f"({column}::jsonb ->> ${key_param}) = ${value_param}"

    async def _write(self, tx: Tx, parts: Mapping[Many, Sequence[Sequence[object]]]) -> None:
        """Everything a batch writes in one statement: one round trip whatever its size."""
        clauses: list[str] = []
        args: list[object] = []
        for what, rows in parts.items():
            clauses += _ctes(what, len(args) + 1)
            if what is Many.CHECKPOINTS:
                args += [list(column) for column in zip(*rows, strict=True)]
            else:
                args.append(json.dumps(rows))
        await tx.execute(f"WITH {', '.join(clauses)} SELECT 1", *args)

    async def assign_replicas(self, assignments: Sequence[Assignment]) -> list[Replica]:
        """One statement outside a transaction block (``_ASSIGN``), where the shared path takes
        four round trips (BEGIN, lock, write, COMMIT): a placement's start waits on it."""
        if not assignments:
            return []
        now = self._now()
        rows = json.dumps(
            [
                (a.key.workload_id, a.key.index, a.expected_fence, a.worker_id, now + a.lease_ttl_s)
                for a in assignments
            ]
        )

        async def body(tx: Tx) -> list[Replica]:
            written = (replica_from_row(r).replica for r in await tx.fetch(_ASSIGN, rows, now))
            by_key = {r.key: r for r in written}
            return [by_key[a.key] for a in assignments if a.key in by_key]

        return await self._run(body, urgent=True, autocommit=True)

    async def _submit_in_one_statement(
        self,
        spec: WorkloadSpec,
        params: str,
        digest: str,
        now: float,
        actor: str,
        placed: Placed | None,
    ) -> SubmitResult:
        """``_SUBMIT_ONE`` outside a transaction block: a single submit is one round trip. Only
        when it writes nothing does a read tell which of customer and type is unknown."""
        workload_id = placed.workload_id if placed is not None else None
        rows = new_rows(
            new_workload(spec, spec.type_version or "", params, now, workload_id), placed, now
        )
        values = list(workload_values(rows.workload, params, digest))
        values[3] = spec.type_version  # NULL: the newest version, resolved in the statement
        replicas = json.dumps(rows.replicas)
        event = event_values(submitted_event(rows.workload, actor))[:8]
        history = json.dumps(rows.history)

        async def body(tx: Tx) -> SubmitResult:
            for _ in range(2):
                row = await tx.fetchrow(_SUBMIT_ONE, *values, replicas, *event, history)
                if row is not None:
                    workload = replace(rows.workload, type_version=row["type_version"])
                    return SubmitResult(workload, True, rows.placed)
                # Raises for the unknown one; both known now: created since, write again.
                await self._submitted_type(tx, spec.customer_id, spec.type_name, spec.type_version)
            raise Conflict("the customer or the workload type changed during the submit; retry")

        return await self._run(body, urgent=True, autocommit=True)

    async def _renew(
        self, tx: Tx, worker_id: str, renewals: Sequence[LeaseRenewal], expires_at: float
    ) -> set[ReplicaKey]:
        ordered = sorted(renewals, key=lambda r: r.key)
        rows = await tx.fetch(
            _RENEW,
            expires_at,
            worker_id,
            json.dumps([(r.key.workload_id, r.key.index, r.fence) for r in ordered]),
        )
        return {ReplicaKey(r["workload_id"], r["idx"]) for r in rows}
