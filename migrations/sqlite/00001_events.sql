-- +goose Up
-- The same log as on PostgreSQL. Positions come from AUTOINCREMENT: SQLite
-- lets one transaction write at a time, so a transaction draws its
-- positions only after every earlier writer has committed or rolled back,
-- and positions become visible in order. A reader that has seen a position
-- has seen every lower one; there is no late commit to wait for.
--
-- Times are text in UTC with microseconds, 2006-01-02T15:04:05.000000Z:
-- readable, and fixed-width so that they sort as text.
CREATE TABLE events (
    position    INTEGER PRIMARY KEY AUTOINCREMENT,
    id          TEXT    NOT NULL,
    stream      TEXT    NOT NULL,
    version     INTEGER NOT NULL CHECK (version > 0),
    type        TEXT    NOT NULL,
    data        TEXT    NOT NULL CHECK (json_valid(data)),
    metadata    TEXT    NOT NULL CHECK (json_valid(metadata)),
    recorded_at TEXT    NOT NULL CHECK (recorded_at GLOB
        '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z'),
    CONSTRAINT events_stream_version_key UNIQUE (stream, version),
    CONSTRAINT events_id_key UNIQUE (id)
) STRICT;

-- SQLite has no TRUNCATE; a DELETE without WHERE fires the delete trigger
-- like any other (triggers turn off SQLite's truncate shortcut).
-- +goose StatementBegin
CREATE TRIGGER events_no_update BEFORE UPDATE ON events
BEGIN
    SELECT RAISE(ABORT, 'events are immutable: UPDATE on events is not allowed');
END;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE TRIGGER events_no_delete BEFORE DELETE ON events
BEGIN
    SELECT RAISE(ABORT, 'events are immutable: DELETE on events is not allowed');
END;
-- +goose StatementEnd

-- +goose Down
DROP TABLE events;
