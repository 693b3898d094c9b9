-- +goose Up
-- Where each projector and the relay have got to in the global log.
CREATE TABLE checkpoints (
    name     text   PRIMARY KEY,
    position bigint NOT NULL
);

-- One row per handoff: the queue is the open rows, the history all of them.
CREATE TABLE handoffs (
    id             uuid        PRIMARY KEY,
    account_id     uuid        NOT NULL,
    team_id        uuid        NOT NULL,
    session_id     uuid        NOT NULL,
    intent         text        NOT NULL,
    engineer_notes text        NOT NULL,
    priority       text        NOT NULL,
    priority_rank  integer     NOT NULL,
    status         text        NOT NULL,
    created_by     uuid        NOT NULL,
    created_at     timestamptz NOT NULL,
    claimed_by     uuid,
    claimed_at     timestamptz,
    withdrawn_at   timestamptz,
    position       bigint      NOT NULL
);

CREATE INDEX handoffs_queue ON handoffs
    (account_id, team_id, (intent = 'escalate') DESC, priority_rank DESC, created_at, id)
    WHERE status = 'open';
CREATE INDEX handoffs_history ON handoffs (account_id, session_id, created_at DESC);

-- Responses kept for retried POSTs that carry an Idempotency-Key.
CREATE TABLE idempotency_keys (
    user_id      uuid        NOT NULL,
    key          text        NOT NULL,
    request_hash text        NOT NULL,
    status_code  integer,
    response     bytea,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, key)
);

-- +goose Down
DROP TABLE idempotency_keys;
DROP TABLE handoffs;
DROP TABLE checkpoints;
