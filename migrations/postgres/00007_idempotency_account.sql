-- +goose Up
-- An idempotency key belongs to a user within an account: one user id may
-- act in several accounts, and a key used in one must never replay its
-- stored response in another. The key gains the account, and the primary
-- key becomes (account_id, user_id, key).
--
-- The keys stored so far do not say their account, and nothing else does,
-- so they are deleted rather than guessed: they would expire within 24
-- hours anyway. A client retrying, after the upgrade, a request it made
-- before it runs the request again (a park or escalate on a session that
-- already has an open handoff then gets 409, a claim of a claimed handoff
-- 409). Processes of the previous version still serving cannot store keys
-- (the column has no default): their requests with an Idempotency-Key get
-- 500, which clients retry, until they are replaced.
DELETE FROM idempotency_keys;
ALTER TABLE idempotency_keys
    ADD COLUMN account_id uuid NOT NULL,
    DROP CONSTRAINT idempotency_keys_pkey,
    ADD PRIMARY KEY (account_id, user_id, key);

-- +goose Down
DELETE FROM idempotency_keys;
ALTER TABLE idempotency_keys
    DROP CONSTRAINT idempotency_keys_pkey,
    DROP COLUMN account_id,
    ADD PRIMARY KEY (user_id, key);
