-- +goose Up
-- Leadership of the background jobs (a projector, the relay): one lease per
-- job, held by one process at a time (package leader). holder names the
-- holding process; token grows at each new tenure and fences the leader's
-- checkpoint moves; expires_at is set by the database server's clock,
-- which alone decides expiry.
CREATE TABLE leader_leases (
    name       text COLLATE "C" PRIMARY KEY,
    holder     text NOT NULL,
    token      bigint NOT NULL CHECK (token > 0),
    expires_at timestamptz NOT NULL
);

-- +goose Down
DROP TABLE leader_leases;
