-- Read models of projections and their bookkeeping (see the PostgreSQL migration of the
-- same number for the design). Writers are serialised by BEGIN IMMEDIATE, so no row locks
-- are needed here: a batch's transaction sees, and changes, the state alone.

CREATE TABLE projections (
    name                TEXT PRIMARY KEY,
    active_generation   INTEGER NOT NULL,
    active_version      INTEGER NOT NULL,
    building_generation INTEGER,
    building_version    INTEGER,
    last_generation     INTEGER NOT NULL,
    updated_at          TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE projection_positions (
    projection TEXT NOT NULL,
    generation INTEGER NOT NULL,
    position   INTEGER NOT NULL,
    PRIMARY KEY (projection, generation)
) WITHOUT ROWID;

CREATE TABLE projection_stats (
    projection    TEXT PRIMARY KEY,
    handoff_at    TEXT,
    dead_lettered INTEGER NOT NULL DEFAULT 0,
    last_error    TEXT,
    last_error_at TEXT
) WITHOUT ROWID;

CREATE TABLE projection_checkpoints (
    projection   TEXT NOT NULL,
    generation   INTEGER NOT NULL,
    aggregate_id TEXT NOT NULL,
    version      INTEGER NOT NULL,
    position     INTEGER NOT NULL,
    PRIMARY KEY (projection, generation, aggregate_id)
) WITHOUT ROWID;

CREATE TABLE projection_documents (
    projection TEXT NOT NULL,
    generation INTEGER NOT NULL,
    key        TEXT NOT NULL,
    doc        TEXT NOT NULL CHECK (json_valid(doc)),
    PRIMARY KEY (projection, generation, key)
) WITHOUT ROWID;

CREATE TABLE projection_failures (
    projection   TEXT NOT NULL,
    generation   INTEGER NOT NULL,
    aggregate_id TEXT NOT NULL,
    version      INTEGER NOT NULL,
    event_id     TEXT NOT NULL,
    position     INTEGER NOT NULL,
    event_type   TEXT NOT NULL,
    policy       TEXT NOT NULL CHECK (policy IN ('park', 'skip')),
    error_type   TEXT NOT NULL,
    message      TEXT NOT NULL,
    failed_at    TEXT NOT NULL,
    held_version INTEGER NOT NULL,
    PRIMARY KEY (projection, generation, aggregate_id, version)
) WITHOUT ROWID;
