-- Hardening of append_events(), and what role separation and the outbox relays need.
--
-- append_events() is now SECURITY DEFINER with a fixed search_path: it resolves the store's
-- tables in its own schema whatever the caller's search_path says (a caller could otherwise
-- shadow `events` with a table of its own in pg_temp or an earlier schema), and it runs with
-- its owner's rights, so an application role granted only EXECUTE on it (and SELECT) can
-- append without being able to write, change or remove rows itself (`eventstore migrate
-- --app-role NAME`, PostgresEventStore.grant_app_role). It also checks the batch limit itself.
-- The function body is otherwise that of 0001 (see there for the ordering argument).
-- Run migrations as a role that owns the schema and is not a superuser: a SECURITY DEFINER
-- function runs with its owner's rights.

CREATE OR REPLACE FUNCTION append_events(p_events json, p_follows json) RETURNS SETOF bigint
LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
    first_position bigint;
    horizon bigint;
    stored_max bigint;
    conflict record;
BEGIN
    -- Positions are ((xid + base) << 16) + n: a batch must fit in 16 bits. The client checks
    -- this too; this check holds for every caller of the function.
    IF json_array_length(p_events) > 10000 THEN
        RAISE EXCEPTION 'a batch holds at most 10000 events, not %', json_array_length(p_events)
            USING ERRCODE = 'ES413', HINT = 'split the batch into appends of at most 10000 events';
    END IF;

    -- Positions must come from this call's own transaction id, taken below: a transaction
    -- that already holds one (it wrote before calling) could order events wrongly.
    IF pg_current_xact_id_if_assigned() IS NOT NULL THEN
        RAISE EXCEPTION 'append_events() must run in a transaction of its own'
            USING ERRCODE = 'ES400', HINT = 'call it as a single statement, outside any transaction that writes';
    END IF;

    -- Each aggregate continuing its history must follow a stored event of the same type.
    -- This check runs before the transaction id is taken, on purpose: the predecessor it sees
    -- has committed, so its transaction id is smaller than the one taken next, and every
    -- aggregate's positions follow its versions.
    -- p_follows lists them, [{aggregate_id, aggregate_type, version}] with the aggregate's
    -- first version in the batch (> 1); the client derives it from the batch.
    SELECT f.aggregate_id INTO conflict
    FROM json_to_recordset(p_follows) AS f(aggregate_id text, aggregate_type text, version bigint)
    WHERE NOT EXISTS (
        SELECT FROM events e
        WHERE e.aggregate_id = f.aggregate_id AND e.version = f.version - 1
          AND e.aggregate_type = f.aggregate_type)
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'version conflict on aggregate %', conflict.aggregate_id USING ERRCODE = 'ES409';
    END IF;

    -- Every row a statement sees was written by a transaction below its snapshot's xmax, so
    -- in a healthy database every stored position is below `horizon`. One at or above it
    -- comes from another cluster's transaction counter: a restore from a logical dump. (One
    -- statement, so that the maximum and the horizon come from the same snapshot.)
    SELECT (pg_current_xact_id()::text::bigint + b.base) << 16,
           (pg_snapshot_xmax(pg_current_snapshot())::text::bigint + b.base) << 16,
           (SELECT max(position) FROM events)
    INTO first_position, horizon, stored_max
    FROM position_base b;
    IF stored_max >= horizon THEN
        RAISE EXCEPTION 'the transaction counter is behind the stored positions'
            USING ERRCODE = 'ES412',
                  HINT = 'the database was restored from a logical dump: stop all writers and run `eventstore migrate --rebase-positions`';
    END IF;

    RETURN QUERY
    WITH batch AS (
        SELECT * FROM ROWS FROM (json_to_recordset(p_events) AS (
            id text, aggregate_id text, aggregate_type text, event_type text, version bigint,
            schema_version integer, "timestamp" timestamptz, payload jsonb, metadata jsonb,
            bucket smallint))
        WITH ORDINALITY AS e(id, aggregate_id, aggregate_type, event_type, version,
                             schema_version, "timestamp", payload, metadata, bucket, n)
    ), stored AS (
        INSERT INTO events (position, id, aggregate_id, aggregate_type, event_type, version,
                            schema_version, "timestamp", payload, metadata)
        SELECT first_position + b.n, b.id, b.aggregate_id, b.aggregate_type, b.event_type,
               b.version, b.schema_version, b."timestamp", b.payload, b.metadata
        FROM batch b
        RETURNING events.position
    ), queued AS (
        INSERT INTO outbox (position, bucket)
        SELECT first_position + b.n, b.bucket FROM batch b
        RETURNING outbox.position
    )
    SELECT q.position FROM queued q ORDER BY q.position;
END
$$;

-- The schema the function was created in, fixed as its search_path (pg_temp last, so that
-- temporary objects can never shadow ours). Only the owner and granted roles may call it.
DO $$
BEGIN
    EXECUTE format('ALTER FUNCTION append_events(json, json) SET search_path = %I, pg_temp',
                   current_schema());
END
$$;
-- Until now any role allowed to INSERT into events could append (the function ran with the
-- caller's rights). Those roles keep appending, now through EXECUTE; nobody else may.
DO $$
DECLARE
    grantee text;
BEGIN
    FOR grantee IN
        SELECT DISTINCT g.grantee FROM information_schema.role_table_grants g
        WHERE g.table_schema = current_schema() AND g.table_name = 'events'
          AND g.privilege_type = 'INSERT' AND g.grantee <> 'PUBLIC'
    LOOP
        EXECUTE format('GRANT EXECUTE ON FUNCTION append_events(json, json) TO %I', grantee);
    END LOOP;
END
$$;
REVOKE ALL ON FUNCTION append_events(json, json) FROM PUBLIC;

-- A relay shard finds its oldest row with one probe per bucket of the shard, instead of
-- scanning the whole outbox by `bucket % shards` (an idle shard scanned every other shard's
-- backlog on every poll).
CREATE INDEX outbox_bucket_position ON outbox (bucket, position);
