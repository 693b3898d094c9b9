-- +goose Up
-- The skipped events of migrations/postgres/00008_projection_skipped.sql;
-- skipped_at is text in UTC with microseconds, as in the events table.
CREATE TABLE projection_skipped (
    projector  TEXT    NOT NULL,
    position   INTEGER NOT NULL,
    event_id   TEXT    NOT NULL,
    type       TEXT    NOT NULL,
    error      TEXT    NOT NULL,
    skipped_at TEXT    NOT NULL,
    PRIMARY KEY (projector, position)
) STRICT;

-- +goose Down
DROP TABLE projection_skipped;
