-- +goose Up
-- Every event stores its hash and its stream predecessor's (the chain: see
-- eventstore.HashEvent and docs/audit.md). A hash covers the bytes stored,
-- so data becomes json, which keeps the text written byte for byte (jsonb
-- normalizes it; nothing queries inside it, and the append is no slower).
-- New events get their hashes as they are appended; this gives the events
-- recorded before it theirs, stream by stream in version order, computed
-- here as eventstore.HashEvent computes them. The update trigger is off for
-- the backfill only; the table stays locked throughout.
ALTER TABLE events
    ALTER COLUMN data TYPE json USING data::json,
    ADD COLUMN prev_hash bytea,
    ADD COLUMN hash bytea;

ALTER TABLE events DISABLE TRIGGER events_no_update_delete;

WITH RECURSIVE chain (position, stream, version, prev_hash, hash) AS (
    SELECT NULL::bigint, stream, 0::bigint, NULL::bytea, '\x0000000000000000000000000000000000000000000000000000000000000000'::bytea
    FROM events WHERE version = 1
    UNION ALL
    SELECT e.position, e.stream, e.version, c.hash,
        sha256('ledgerd-event-v1'::bytea || c.hash || int8send(e.version)
            || int8send(length(f.id)::bigint) || f.id
            || int8send(length(f.stream)::bigint) || f.stream
            || int8send(length(f.type)::bigint) || f.type
            || int8send(length(f.data)::bigint) || f.data
            || int8send(length(f.metadata)::bigint) || f.metadata
            || int8send(length(f.recorded_at)::bigint) || f.recorded_at)
    FROM chain c
    JOIN events e ON e.stream = c.stream AND e.version = c.version + 1
    CROSS JOIN LATERAL (SELECT
        convert_to(e.id, 'UTF8') AS id,
        convert_to(e.stream, 'UTF8') AS stream,
        convert_to(e.type, 'UTF8') AS type,
        convert_to(e.data::text, 'UTF8') AS data,
        convert_to(e.metadata::text, 'UTF8') AS metadata,
        convert_to(to_char(e.recorded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'), 'UTF8') AS recorded_at
    ) f
)
UPDATE events SET prev_hash = chain.prev_hash, hash = chain.hash
FROM chain WHERE events.position = chain.position;

ALTER TABLE events ENABLE TRIGGER events_no_update_delete;

ALTER TABLE events
    ALTER COLUMN prev_hash SET NOT NULL,
    ALTER COLUMN hash SET NOT NULL;

-- +goose Down
ALTER TABLE events
    DROP COLUMN hash,
    DROP COLUMN prev_hash,
    ALTER COLUMN data TYPE jsonb USING data::jsonb;
