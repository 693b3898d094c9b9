-- +goose Up
-- Metadata is written once with its event and read back whole; nothing
-- queries inside it. As json it is stored as the text the ledger wrote,
-- which spares every append the conversion to jsonb's binary form.
ALTER TABLE events ALTER COLUMN metadata TYPE json USING metadata::json;

-- +goose Down
ALTER TABLE events ALTER COLUMN metadata TYPE jsonb USING metadata::jsonb;
