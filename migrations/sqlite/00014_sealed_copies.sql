-- +goose Up
-- Sealed notes in the read model: see migrations/postgres/00018_sealed_copies.sql.
UPDATE handoffs SET engineer_notes = 'plain:' || engineer_notes
WHERE engineer_notes LIKE 'sealed:%' OR engineer_notes LIKE 'plain:%';

-- +goose Down
UPDATE handoffs SET engineer_notes = substr(engineer_notes, length('plain:') + 1)
WHERE engineer_notes LIKE 'plain:%';
