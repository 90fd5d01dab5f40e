-- Niyanta state store, version 1 (PostgreSQL). Times are float seconds since the epoch from the
-- store's Clock; JSON values are stored as text so that both backends share the same codec.

CREATE TABLE tiers (
    name             TEXT PRIMARY KEY,
    priority         INTEGER NOT NULL,
    weight           DOUBLE PRECISION NOT NULL,
    guaranteed_slots INTEGER NOT NULL,
    concurrency_cap  INTEGER,
    may_preempt      INTEGER NOT NULL,
    slo              TEXT NOT NULL
);

CREATE TABLE customers (
    id               TEXT PRIMARY KEY,
    tier             TEXT NOT NULL REFERENCES tiers (name),
    name             TEXT NOT NULL,
    weight           DOUBLE PRECISION,
    concurrency_cap  INTEGER,
    alert_thresholds TEXT NOT NULL,
    created_at       DOUBLE PRECISION NOT NULL
);

CREATE TABLE workload_types (
    seq        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name       TEXT NOT NULL,
    version    TEXT NOT NULL,
    spec       TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    UNIQUE (name, version)
);

CREATE TABLE workloads (
    seq             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
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
    created_at      DOUBLE PRECISION NOT NULL,
    updated_at      DOUBLE PRECISION NOT NULL
) WITH (fillfactor = 50);
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
    lease_expires_at DOUBLE PRECISION,
    previous_worker  TEXT,
    enqueued_at      DOUBLE PRECISION NOT NULL,
    not_before       DOUBLE PRECISION NOT NULL,
    started_at       DOUBLE PRECISION,
    finished_at      DOUBLE PRECISION,
    progress         DOUBLE PRECISION NOT NULL,
    checkpoint_seq   BIGINT NOT NULL,
    checkpoint_fence BIGINT NOT NULL,
    checkpoint_at    DOUBLE PRECISION,
    result           TEXT,
    error            TEXT,
    resumed_from_seq BIGINT NOT NULL,
    PRIMARY KEY (workload_id, idx)
) WITH (fillfactor = 70);
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
    data        BYTEA NOT NULL,
    created_at  DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (workload_id, idx)
) WITH (fillfactor = 70);

CREATE TABLE events (
    id             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind           TEXT NOT NULL,
    at             DOUBLE PRECISION NOT NULL,
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

-- Read only per workload (by transitions_workload): no primary key index to maintain on the
-- hottest insert path.
CREATE TABLE transitions (
    id          BIGINT GENERATED ALWAYS AS IDENTITY,
    workload_id TEXT NOT NULL,
    idx         INTEGER NOT NULL,
    from_state  TEXT NOT NULL,
    to_state    TEXT NOT NULL,
    fence       BIGINT NOT NULL,
    at          DOUBLE PRECISION NOT NULL,
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
    target       DOUBLE PRECISION NOT NULL,
    cooldown_s   DOUBLE PRECISION NOT NULL,
    max_step     INTEGER NOT NULL,
    PRIMARY KEY (customer_id, type_name)
);

CREATE TABLE leader_leases (
    name       TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    term       BIGINT NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL
);

CREATE TABLE coordinators (
    id        TEXT PRIMARY KEY,
    url       TEXT NOT NULL,
    last_seen DOUBLE PRECISION NOT NULL
);
