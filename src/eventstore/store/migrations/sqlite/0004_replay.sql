-- Replay: snapshots of aggregate state (a cache, never events: they never reach the outbox),
-- the aggregates index (first events only) for paging through the world, and the record of
-- control requests that must not run twice. See the PostgreSQL migration for the reasons.

CREATE TABLE snapshots (
    aggregate_id    TEXT NOT NULL,
    version         INTEGER NOT NULL CHECK (version >= 1),
    aggregate_type  TEXT NOT NULL,
    position        INTEGER NOT NULL,
    timestamp       TEXT NOT NULL,
    max_timestamp   TEXT NOT NULL,
    reducer_version INTEGER NOT NULL,
    fingerprint     TEXT NOT NULL,
    state           TEXT NOT NULL,
    digest          TEXT NOT NULL,
    created_at      TEXT NOT NULL,
    PRIMARY KEY (aggregate_id, version)
) WITHOUT ROWID;
CREATE INDEX snapshots_type ON snapshots (aggregate_type);

CREATE INDEX events_aggregates ON events (aggregate_type, aggregate_id) WHERE version = 1;

CREATE TABLE control_requests (
    request_id  TEXT PRIMARY KEY,
    kind        TEXT NOT NULL,
    claimed_by  TEXT NOT NULL,
    claimed_at  TEXT NOT NULL,
    reply       TEXT,
    finished_at TEXT
) WITHOUT ROWID;
