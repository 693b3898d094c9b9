-- +goose Up
-- An account's events in position order: see
-- migrations/postgres/00012_events_by_account.sql. SQLite has no
-- split_part; the account is the 36 characters after the stream name's
-- first colon. Every index entry ends with the rowid, which is the
-- position, so the index serves the order too.
CREATE INDEX events_account ON events (substr(stream, instr(stream, ':') + 1, 36));

-- +goose Down
DROP INDEX events_account;
