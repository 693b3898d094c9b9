-- +goose Up
-- Every event stores its hash and its stream predecessor's (the chain: see
-- eventstore.HashEvent and docs/audit.md). New events get them as they are
-- appended; this gives the events recorded before it theirs, stream by
-- stream in version order. ledgerd_event_hash is eventstore.HashEvent,
-- registered by the ledger's SQLite store (SQLite has no SHA-256 of its
-- own). The update trigger is dropped for the backfill and made again.
ALTER TABLE events ADD COLUMN prev_hash BLOB NOT NULL DEFAULT x'';
ALTER TABLE events ADD COLUMN hash BLOB NOT NULL DEFAULT x'';

DROP TRIGGER events_no_update;

WITH RECURSIVE chain (position, stream, version, prev_hash, hash) AS (
    SELECT NULL, stream, 0, NULL, zeroblob(32) FROM events WHERE version = 1
    UNION ALL
    SELECT e.position, e.stream, e.version, c.hash,
        ledgerd_event_hash(c.hash, e.id, e.stream, e.version, e.type, e.data, e.metadata, e.recorded_at)
    FROM chain c JOIN events e ON e.stream = c.stream AND e.version = c.version + 1
)
UPDATE events SET prev_hash = chain.prev_hash, hash = chain.hash
FROM chain WHERE events.position = chain.position;

-- +goose StatementBegin
CREATE TRIGGER events_no_update BEFORE UPDATE ON events
BEGIN
    SELECT RAISE(ABORT, 'events are immutable: UPDATE on events is not allowed');
END;
-- +goose StatementEnd

-- +goose Down
DROP TRIGGER events_no_update;
ALTER TABLE events DROP COLUMN hash;
ALTER TABLE events DROP COLUMN prev_hash;
-- +goose StatementBegin
CREATE TRIGGER events_no_update BEFORE UPDATE ON events
BEGIN
    SELECT RAISE(ABORT, 'events are immutable: UPDATE on events is not allowed');
END;
-- +goose StatementEnd
