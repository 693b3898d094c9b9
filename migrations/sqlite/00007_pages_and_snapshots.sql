-- +goose Up
-- Keyset pages of the queue and the history, and snapshots of session
-- streams: see migrations/postgres/00009_pages_and_snapshots.sql. SQLite
-- adds only virtual generated columns to an existing table; an index on
-- one stores its values.
ALTER TABLE handoffs ADD COLUMN queue_class INTEGER
    GENERATED ALWAYS AS (CASE WHEN intent = 'escalate' THEN 0 ELSE 4 END + 3 - priority_rank) VIRTUAL;
DROP INDEX handoffs_queue;
CREATE INDEX handoffs_queue ON handoffs (account_id, team_id, queue_class, created_at, id)
    WHERE status = 'open';
DROP INDEX handoffs_history;
CREATE INDEX handoffs_history ON handoffs (account_id, session_id, created_at, id);

CREATE TABLE snapshots (
    stream   TEXT    PRIMARY KEY,
    version  INTEGER NOT NULL CHECK (version > 0),
    event_id TEXT    NOT NULL,
    data     BLOB    NOT NULL
) STRICT;

-- +goose Down
DROP TABLE snapshots;
DROP INDEX handoffs_history;
CREATE INDEX handoffs_history ON handoffs (account_id, session_id, created_at DESC);
DROP INDEX handoffs_queue;
ALTER TABLE handoffs DROP COLUMN queue_class;
CREATE INDEX handoffs_queue ON handoffs
    (account_id, team_id, (intent = 'escalate') DESC, priority_rank DESC, created_at, id)
    WHERE status = 'open';
