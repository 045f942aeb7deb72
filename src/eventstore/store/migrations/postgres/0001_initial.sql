-- The event store's tables, in the store's own schema (search_path is set by the store).

-- Positions are derived from the writing transaction's id (see append_events below). `base`
-- is added to it; it stays 0 unless the database was restored from a logical dump, whose
-- fresh transaction counter would otherwise hand out positions below the stored ones.
CREATE TABLE position_base (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    base      bigint NOT NULL DEFAULT 0
);
INSERT INTO position_base DEFAULT VALUES;

CREATE TABLE events (
    position       bigint PRIMARY KEY,
    id             text NOT NULL UNIQUE,
    aggregate_id   text NOT NULL,
    aggregate_type text NOT NULL,
    event_type     text NOT NULL,
    version        bigint NOT NULL CHECK (version >= 1),
    schema_version integer NOT NULL CHECK (schema_version >= 1),
    "timestamp"    timestamptz NOT NULL,
    payload        jsonb NOT NULL CHECK (jsonb_typeof(payload) = 'object'),
    metadata       jsonb NOT NULL CHECK (jsonb_typeof(metadata) = 'object'),
    recorded_at    timestamptz NOT NULL DEFAULT now(),
    -- The writing transaction's id: read_all() returns only rows of finished transactions.
    tx_id          xid8 NOT NULL DEFAULT pg_current_xact_id(),
    -- At most one event per aggregate and version: of concurrent appends of a version, one wins.
    UNIQUE (aggregate_id, version)
);
CREATE INDEX events_type_position ON events (event_type, position);
CREATE INDEX events_timestamp_position ON events ("timestamp", position);

-- Events are immutable: the database itself refuses to change or remove them.
CREATE FUNCTION reject_event_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'stored events are immutable: % on events is not allowed', TG_OP
        USING ERRCODE = 'ES405',
              HINT = 'append a new event that corrects the earlier one instead';
END
$$;
CREATE TRIGGER events_immutable_rows BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION reject_event_change();
CREATE TRIGGER events_immutable_truncate BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION reject_event_change();

-- Events waiting to be published to Kafka, written in the same transaction as the events.
-- The outbox relay deletes a row once the broker has acknowledged its event. `bucket` is
-- crc32(aggregate_id) mod 256, computed by the client: relays shard the outbox by bucket, so
-- one aggregate's events always go through one relay, in order.
CREATE TABLE outbox (
    position    bigint PRIMARY KEY,
    bucket      smallint NOT NULL CHECK (bucket BETWEEN 0 AND 255),
    enqueued_at timestamptz NOT NULL DEFAULT now()
);

-- append_events(): the only code that writes events. One call is one transaction (the client
-- runs it as a single autocommit statement), so a batch is stored whole or not at all. The
-- batch is a JSON array of event objects.
--
-- Versions: an event of version v > 1 is stored only if version v - 1 of its aggregate is
-- already stored (and committed); UNIQUE (aggregate_id, version) lets one of several
-- concurrent appends of v win. Together: versions are contiguous and each is won once.
--
-- Why no reader of the global log can miss an event
-- -------------------------------------------------
-- A position is handed out when a transaction inserts, not when it commits. With positions
-- from a sequence, a transaction holding 10 may commit after one holding 11, and a reader that
-- returned 11 and resumed "after 11" would never see 10. Here a position is built from the
-- writing transaction's id instead: ((xid + base) << 16) + n for the n-th event of the batch
-- (a batch holds at most 10,000 < 2^16 events). So position order is transaction-id order.
-- read_all() returns only positions below ((xmin + base) << 16), xmin being that of its
-- snapshot: every transaction below xmin has finished, and any transaction that may still
-- commit has an id >= xmin, hence positions at or above that bound. Nothing can later appear
-- below a position a reader has passed. (The bound is on the position itself, not on tx_id:
-- rows restored from another cluster's dump keep that cluster's tx_id, and must still be
-- readable once `rebase_positions` has lifted the base above them.)
--
-- Nothing here is serialised: no lock, no shared counter; concurrent appends overlap fully.
-- (A sequence read under an advisory lock gives the same ordering, but on this 2-core machine
-- the lock convoy cost 16 writers about 80% of their time.) Positions are sparse but strictly
-- increasing. A long-running transaction that writes anywhere in the cluster holds back
-- read_all() (not appends) until it ends: readers then lag, they never skip.
--
-- Per aggregate, positions follow versions: see the order of the steps below.
--
-- Errors: ES400 = called inside a transaction that already wrote, ES409 = version conflict
-- (the client looks up the details), ES412 = the
-- transaction counter is behind the stored positions (restored from a logical dump).
CREATE FUNCTION append_events(p_events json, p_follows json) RETURNS SETOF bigint LANGUAGE plpgsql AS $$
DECLARE
    first_position bigint;
    horizon bigint;
    stored_max bigint;
    conflict record;
BEGIN
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
