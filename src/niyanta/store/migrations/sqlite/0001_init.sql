-- Niyanta state store, version 1 (SQLite). Times are float seconds since the epoch from the
-- store's Clock; JSON values are stored as text so that both backends share the same codec.

CREATE TABLE tiers (
    name             TEXT PRIMARY KEY,
    priority         INTEGER NOT NULL,
    weight           REAL NOT NULL,
    guaranteed_slots INTEGER NOT NULL,
    concurrency_cap  INTEGER,
    may_preempt      INTEGER NOT NULL,
    slo              TEXT NOT NULL
);

CREATE TABLE customers (
    id               TEXT PRIMARY KEY,
    tier             TEXT NOT NULL REFERENCES tiers (name),
    name             TEXT NOT NULL,
    weight           REAL,
    concurrency_cap  INTEGER,
    alert_thresholds TEXT NOT NULL,
    created_at       REAL NOT NULL
);

CREATE TABLE workload_types (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    name       TEXT NOT NULL,
    version    TEXT NOT NULL,
    spec       TEXT NOT NULL,
    created_at REAL NOT NULL,
    UNIQUE (name, version)
);

CREATE TABLE workloads (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    id              TEXT NOT NULL UNIQUE,
    customer_id     TEXT NOT NULL REFERENCES customers (id),
    type_name       TEXT NOT NULL,
    type_version    TEXT NOT NULL,
    params          TEXT NOT NULL,
    spec_digest     TEXT NOT NULL,
    mode            TEXT NOT NULL,
    replicas        INTEGER NOT NULL,
    affinity        TEXT NOT NULL,
    priority        INTEGER NOT NULL,
    idempotency_key TEXT,
    labels          TEXT NOT NULL,
    state           TEXT NOT NULL,
    created_at      REAL NOT NULL,
    updated_at      REAL NOT NULL
);
-- Idempotent submit: concurrent duplicates race on this index and exactly one insert wins.
CREATE UNIQUE INDEX workloads_idempotency ON workloads (customer_id, idempotency_key);
CREATE INDEX workloads_customer ON workloads (customer_id, seq);

CREATE TABLE replicas (
    workload_id      TEXT NOT NULL REFERENCES workloads (id),
    idx              INTEGER NOT NULL,
    customer_id      TEXT NOT NULL,
    state            TEXT NOT NULL,
    fence            BIGINT NOT NULL,
    attempt          INTEGER NOT NULL,
    worker_id        TEXT,
    lease_expires_at REAL,
    previous_worker  TEXT,
    enqueued_at      REAL NOT NULL,
    not_before       REAL NOT NULL,
    started_at       REAL,
    finished_at      REAL,
    progress         REAL NOT NULL,
    checkpoint_seq   BIGINT NOT NULL,
    checkpoint_fence BIGINT NOT NULL,
    checkpoint_at    REAL,
    result           TEXT,
    error            TEXT,
    resumed_from_seq BIGINT NOT NULL,
    PRIMARY KEY (workload_id, idx)
);
CREATE INDEX replicas_queue ON replicas (state, enqueued_at) WHERE state IN ('pending', 'retrying');
-- Lease renewals change only lease_expires_at, which no index holds: on PostgreSQL they are
-- heap-only (HOT) updates, with no index writes.
CREATE INDEX replicas_active ON replicas (worker_id) WHERE state IN ('scheduled', 'running');

-- Only the latest checkpoint of each replica is kept: it is all a resumed attempt needs.
CREATE TABLE checkpoints (
    workload_id TEXT NOT NULL,
    idx         INTEGER NOT NULL,
    seq         BIGINT NOT NULL,
    fence       BIGINT NOT NULL,
    data        BLOB NOT NULL,
    created_at  REAL NOT NULL,
    PRIMARY KEY (workload_id, idx)
);

CREATE TABLE events (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    kind           TEXT NOT NULL,
    at             REAL NOT NULL,
    actor          TEXT NOT NULL,
    workload_id    TEXT,
    idx            INTEGER,
    customer_id    TEXT,
    correlation_id TEXT,
    reason         TEXT NOT NULL,
    data           TEXT NOT NULL
);
-- Every transition adds an event: one index besides the key, for a workload's event log.
CREATE INDEX events_workload ON events (workload_id, id);

CREATE TABLE transitions (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    workload_id TEXT NOT NULL,
    idx         INTEGER NOT NULL,
    from_state  TEXT NOT NULL,
    to_state    TEXT NOT NULL,
    fence       BIGINT NOT NULL,
    at          REAL NOT NULL,
    actor       TEXT NOT NULL,
    reason      TEXT NOT NULL
);
CREATE INDEX transitions_workload ON transitions (workload_id, id);

CREATE TABLE autoscale_policies (
    customer_id  TEXT NOT NULL,
    type_name    TEXT NOT NULL,
    min_replicas INTEGER NOT NULL,
    max_replicas INTEGER NOT NULL,
    metric       TEXT NOT NULL,
    target       REAL NOT NULL,
    cooldown_s   REAL NOT NULL,
    max_step     INTEGER NOT NULL,
    PRIMARY KEY (customer_id, type_name)
);

CREATE TABLE leader_leases (
    name       TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    term       BIGINT NOT NULL,
    expires_at REAL NOT NULL
);

CREATE TABLE coordinators (
    id        TEXT PRIMARY KEY,
    url       TEXT NOT NULL,
    last_seen REAL NOT NULL
);
