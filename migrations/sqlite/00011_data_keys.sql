-- +goose Up
-- Crypto-shredding: see migrations/postgres/00014_data_keys.sql.
CREATE TABLE data_keys (
    stream_id     TEXT PRIMARY KEY,
    key_id        TEXT NOT NULL,
    wrapped       BLOB NOT NULL,
    master_key_id TEXT NOT NULL,
    created_at    TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f000Z', 'now'))
) STRICT;

ALTER TABLE handoffs ADD COLUMN notes_erased INTEGER NOT NULL DEFAULT 0;

ALTER TABLE idempotency_keys ADD COLUMN session_id TEXT;
CREATE INDEX idempotency_keys_session ON idempotency_keys (account_id, session_id) WHERE session_id IS NOT NULL;

-- +goose Down
DROP INDEX idempotency_keys_session;
ALTER TABLE idempotency_keys DROP COLUMN session_id;
ALTER TABLE handoffs DROP COLUMN notes_erased;
DROP TABLE data_keys;
