-- +goose Up
-- Keyset pages of the queue and the history. The queue sorts escalations
-- first, then higher priorities, then oldest first, then by id; its first
-- two keys sort in the opposite direction of the last two, so a page's
-- start could not be one row comparison on them. queue_class folds intent
-- and priority into one ascending number (projections.QueueClass: 0 to 3
-- for escalations, urgent first, 4 to 7 for parks), and each index holds
-- its list's whole sort key, with the id as the unique tiebreaker, so a
-- page after a cursor is one index range scan.
ALTER TABLE handoffs ADD COLUMN queue_class smallint NOT NULL
    GENERATED ALWAYS AS (CASE WHEN intent = 'escalate' THEN 0 ELSE 4 END + 3 - priority_rank) STORED;
DROP INDEX handoffs_queue;
CREATE INDEX handoffs_queue ON handoffs (account_id, team_id, queue_class, created_at, id)
    WHERE status = 'open';
DROP INDEX handoffs_history;
CREATE INDEX handoffs_history ON handoffs (account_id, session_id, created_at, id);

-- Snapshots of session streams: a cache of a stream's folded state at a
-- version, so that a command reads only the events after it. event_id is
-- the id of the event at that version: a snapshot whose event is not the
-- stream's at that version is not used. Rows may be deleted at any time.
CREATE TABLE snapshots (
    stream   text COLLATE "C" PRIMARY KEY,
    version  bigint NOT NULL CHECK (version > 0),
    event_id text COLLATE "C" NOT NULL,
    data     bytea  NOT NULL
);

-- +goose Down
DROP TABLE snapshots;
DROP INDEX handoffs_history;
CREATE INDEX handoffs_history ON handoffs (account_id, session_id, created_at DESC);
DROP INDEX handoffs_queue;
ALTER TABLE handoffs DROP COLUMN queue_class;
CREATE INDEX handoffs_queue ON handoffs
    (account_id, team_id, (intent = 'escalate') DESC, priority_rank DESC, created_at, id)
    WHERE status = 'open';
