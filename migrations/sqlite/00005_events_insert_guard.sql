-- +goose Up
-- An insert may only add a new event. The ledger's own connections turn
-- recursive_triggers on, so the row an INSERT OR REPLACE would delete fires
-- events_no_delete; a connection opened without it (the sqlite3 tool, any
-- other program) skips delete triggers on REPLACE and could rewrite an
-- event. This trigger refuses, on every connection, a row whose position,
-- id, or (stream, version) is already taken, before any conflict
-- resolution runs. The store still reports a lost (stream, version) race as
-- a conflict: it looks the version up after any failed insert.
-- +goose StatementBegin
CREATE TRIGGER events_insert_only_new BEFORE INSERT ON events
WHEN EXISTS (SELECT 1 FROM events WHERE position = NEW.position)
  OR EXISTS (SELECT 1 FROM events WHERE id = NEW.id)
  OR EXISTS (SELECT 1 FROM events WHERE stream = NEW.stream AND version = NEW.version)
BEGIN
    SELECT RAISE(ABORT, 'events are immutable: an event with this position, id or stream version exists');
END;
-- +goose StatementEnd

-- +goose Down
DROP TRIGGER events_insert_only_new;
