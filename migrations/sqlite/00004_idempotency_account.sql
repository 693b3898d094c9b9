-- +goose Up
-- An idempotency key belongs to a user within an account, as on
-- PostgreSQL (migrations/postgres/00007_idempotency_account.sql): one user
-- id may act in several accounts, and a key used in one must never replay
-- its stored response in another. SQLite cannot change a primary key, so
-- the table is made anew. The keys stored so far do not say their account
-- and are dropped rather than guessed: they would expire within 24 hours
-- anyway, and a retry of an earlier request runs it again.
DROP TABLE idempotency_keys;
CREATE TABLE idempotency_keys (
    account_id   TEXT    NOT NULL,
    user_id      TEXT    NOT NULL,
    key          TEXT    NOT NULL,
    request_hash TEXT    NOT NULL,
    status_code  INTEGER,
    response     BLOB,
    created_at   TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f000Z', 'now')),
    PRIMARY KEY (account_id, user_id, key)
) STRICT;
CREATE INDEX idempotency_keys_created_at ON idempotency_keys (created_at);

-- +goose Down
DROP TABLE idempotency_keys;
CREATE TABLE idempotency_keys (
    user_id      TEXT    NOT NULL,
    key          TEXT    NOT NULL,
    request_hash TEXT    NOT NULL,
    status_code  INTEGER,
    response     BLOB,
    created_at   TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f000Z', 'now')),
    PRIMARY KEY (user_id, key)
) STRICT;
CREATE INDEX idempotency_keys_created_at ON idempotency_keys (created_at);
