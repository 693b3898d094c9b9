-- +goose Up
-- The read models of migrations/postgres/00002_read_models.sql. UUIDs are
-- text in canonical lower-case form; times are text in UTC with
-- microseconds, 2006-01-02T15:04:05.000000Z, as in the events table.

-- Where each projector and the relay have got to in the global log.
CREATE TABLE checkpoints (
    name     TEXT    PRIMARY KEY,
    position INTEGER NOT NULL
) STRICT;

-- One row per handoff: the queue is the open rows, the history all of them.
CREATE TABLE handoffs (
    id             TEXT    PRIMARY KEY,
    account_id     TEXT    NOT NULL,
    team_id        TEXT    NOT NULL,
    session_id     TEXT    NOT NULL,
    intent         TEXT    NOT NULL,
    engineer_notes TEXT    NOT NULL,
    priority       TEXT    NOT NULL,
    priority_rank  INTEGER NOT NULL,
    status         TEXT    NOT NULL,
    created_by     TEXT    NOT NULL,
    created_at     TEXT    NOT NULL,
    claimed_by     TEXT,
    claimed_at     TEXT,
    withdrawn_at   TEXT,
    position       INTEGER NOT NULL
) STRICT;

CREATE INDEX handoffs_queue ON handoffs
    (account_id, team_id, (intent = 'escalate') DESC, priority_rank DESC, created_at, id)
    WHERE status = 'open';
CREATE INDEX handoffs_history ON handoffs (account_id, session_id, created_at DESC);

-- Responses kept for retried POSTs that carry an Idempotency-Key.
CREATE TABLE idempotency_keys (
    user_id      TEXT    NOT NULL,
    key          TEXT    NOT NULL,
    request_hash TEXT    NOT NULL,
    status_code  INTEGER,
    response     BLOB,
    created_at   TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f000Z', 'now')),
    PRIMARY KEY (user_id, key)
) STRICT;

-- +goose Down
DROP TABLE idempotency_keys;
DROP TABLE handoffs;
DROP TABLE checkpoints;
