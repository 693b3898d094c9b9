-- +goose Up
-- The read model keeps each handoff's notes sealed under its session's data
-- key (docs/data-protection.md), tagged 'sealed:'; notes of a session
-- without a key (its events predate encryption) stay as they are, tagged
-- 'plain:' only when they would otherwise read as tagged. A migration
-- cannot seal (the master key never enters the database): the rows written
-- before stay readable as they are, this escapes the few that would read as
-- tagged, and `ledgerd projections rebuild` seals the rest.
UPDATE handoffs SET engineer_notes = 'plain:' || engineer_notes
WHERE engineer_notes LIKE 'sealed:%' OR engineer_notes LIKE 'plain:%';

-- +goose Down
UPDATE handoffs SET engineer_notes = substr(engineer_notes, length('plain:') + 1)
WHERE engineer_notes LIKE 'plain:%';
