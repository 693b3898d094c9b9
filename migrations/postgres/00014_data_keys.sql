-- +goose Up
-- Crypto-shredding (docs/data-protection.md). Each session stream's personal
-- data (engineer_notes, the client address) is stored in its events
-- encrypted under the stream's data key. The data keys live here, each
-- wrapped (AES-256-GCM) by the master key named by master_key_id. The table
-- is not immutable: erasing a session deletes its row, and with it the only
-- way to read what the events hold. An append that starts a stream's key
-- inserts its row in the same statement as its first event; reads of the
-- log join it by stream.
CREATE TABLE data_keys (
    stream_id     text        COLLATE "C" PRIMARY KEY,
    key_id        text        NOT NULL,
    wrapped       bytea       NOT NULL,
    master_key_id text        NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);

-- The read model says when a handoff's notes were erased; its notes are
-- then the empty string.
ALTER TABLE handoffs ADD COLUMN notes_erased boolean NOT NULL DEFAULT false;

-- Stored Idempotency-Key responses name the session of their route, so
-- that erasing a session deletes them.
ALTER TABLE idempotency_keys ADD COLUMN session_id uuid;
CREATE INDEX idempotency_keys_session ON idempotency_keys (account_id, session_id) WHERE session_id IS NOT NULL;

-- +goose Down
DROP INDEX idempotency_keys_session;
ALTER TABLE idempotency_keys DROP COLUMN session_id;
ALTER TABLE handoffs DROP COLUMN notes_erased;
DROP TABLE data_keys;
