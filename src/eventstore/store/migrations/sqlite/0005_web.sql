-- The HTTP API: its bearer tokens (only a digest of each secret), and the index that follows
-- causes and effects. See the PostgreSQL migration for the reasons.

CREATE TABLE api_tokens (
    token_id   TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    scopes     TEXT NOT NULL,
    digest     TEXT NOT NULL,
    created_at TEXT NOT NULL,
    revoked_at TEXT
) WITHOUT ROWID;
CREATE UNIQUE INDEX api_tokens_live_name ON api_tokens (name) WHERE revoked_at IS NULL;

CREATE INDEX events_correlation ON events (json_extract(metadata, '$.correlation_id'), position)
    WHERE json_extract(metadata, '$.correlation_id') IS NOT NULL;
