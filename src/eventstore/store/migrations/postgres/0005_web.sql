-- The HTTP API: its bearer tokens, and the index that follows causes and effects.

-- A token's secret is never stored: only its SHA-256 digest (the secret is 256 random bits,
-- so a fast hash is enough), looked up by the token's public id and compared in constant
-- time by the server. Revoked tokens are kept (revoked_at) so that `eventstore tokens list
-- --revoked` says what existed; a name is unique among live tokens only.
CREATE TABLE api_tokens (
    token_id   text PRIMARY KEY,
    name       text NOT NULL,
    scopes     text NOT NULL,
    digest     text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz
);
CREATE UNIQUE INDEX api_tokens_live_name ON api_tokens (name) WHERE revoked_at IS NULL;

-- Events by correlation id (the time-travel page's links along correlation and causation
-- ids): only events that carry one are indexed.
CREATE INDEX events_correlation ON events ((metadata ->> 'correlation_id'), position)
    WHERE metadata ? 'correlation_id';
