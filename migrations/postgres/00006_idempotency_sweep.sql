-- +goose NO TRANSACTION
-- +goose Up
-- Expired idempotency keys are deleted by a periodic sweep
-- (idempotency.Sweep) instead of on every reservation, which scanned all
-- of the user's keys of the last 24 hours each time. The sweep finds them
-- through this index. It is built CONCURRENTLY, outside a transaction, so
-- that processes already serving keep writing keys while a new one starts.
CREATE INDEX CONCURRENTLY IF NOT EXISTS idempotency_keys_created_at ON idempotency_keys (created_at);

-- +goose Down
DROP INDEX CONCURRENTLY IF EXISTS idempotency_keys_created_at;
