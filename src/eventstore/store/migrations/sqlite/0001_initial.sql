-- The embedded store's tables. Writers are serialised by BEGIN IMMEDIATE, so positions are
-- handed out in commit order and a reader of the global log can never skip an event.
-- Timestamps are stored as fixed-width ISO 8601 UTC text, so text order is time order.

CREATE TABLE streams (
    aggregate_id   TEXT PRIMARY KEY,
    aggregate_type TEXT NOT NULL,
    version        INTEGER NOT NULL CHECK (version >= 1)
) WITHOUT ROWID;

CREATE TABLE events (
    position       INTEGER PRIMARY KEY,
    id             TEXT NOT NULL UNIQUE,
    aggregate_id   TEXT NOT NULL,
    aggregate_type TEXT NOT NULL,
    event_type     TEXT NOT NULL,
    version        INTEGER NOT NULL CHECK (version >= 1),
    schema_version INTEGER NOT NULL CHECK (schema_version >= 1),
    timestamp      TEXT NOT NULL,
    payload        TEXT NOT NULL CHECK (json_type(payload) = 'object'),
    metadata       TEXT NOT NULL CHECK (json_type(metadata) = 'object'),
    recorded_at    TEXT NOT NULL,
    UNIQUE (aggregate_id, version)
);
CREATE INDEX events_type_position ON events (event_type, position);
CREATE INDEX events_timestamp_position ON events (timestamp, position);

CREATE TRIGGER events_no_update BEFORE UPDATE ON events
BEGIN
    SELECT RAISE(ABORT, 'stored events are immutable: UPDATE on events is not allowed');
END;
CREATE TRIGGER events_no_delete BEFORE DELETE ON events
BEGIN
    SELECT RAISE(ABORT, 'stored events are immutable: DELETE on events is not allowed');
END;

-- Events waiting to be published; bucket = crc32(aggregate_id) mod 256 (see PostgreSQL's).
CREATE TABLE outbox (
    position    INTEGER PRIMARY KEY REFERENCES events (position),
    bucket      INTEGER NOT NULL CHECK (bucket BETWEEN 0 AND 255),
    enqueued_at TEXT NOT NULL
);
