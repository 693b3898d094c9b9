-- +goose Up
-- The Merkle tree of migrations/postgres/00013_merkle.sql; sealed_at is
-- text in UTC with microseconds, as in the events table. Append-only: an
-- update, a delete or an insert over an existing row is refused.
CREATE TABLE merkle_leaves (
    leaf_index INTEGER NOT NULL PRIMARY KEY CHECK (leaf_index >= 0),
    position   INTEGER NOT NULL,
    hash       BLOB    NOT NULL CHECK (length(hash) = 32),
    CONSTRAINT merkle_leaves_position_key UNIQUE (position)
) STRICT;

CREATE TABLE merkle_nodes (
    level INTEGER NOT NULL CHECK (level BETWEEN 1 AND 63),
    idx   INTEGER NOT NULL CHECK (idx >= 0),
    hash  BLOB    NOT NULL CHECK (length(hash) = 32),
    PRIMARY KEY (level, idx)
) STRICT;

CREATE TABLE merkle_checkpoints (
    size      INTEGER NOT NULL PRIMARY KEY CHECK (size > 0),
    position  INTEGER NOT NULL,
    root      BLOB    NOT NULL CHECK (length(root) = 32),
    sealed_at TEXT    NOT NULL,
    note      TEXT    NOT NULL
) STRICT;

CREATE TRIGGER merkle_leaves_no_update BEFORE UPDATE ON merkle_leaves
BEGIN SELECT RAISE(ABORT, 'the Merkle tree is append-only: UPDATE on merkle_leaves is not allowed'); END;
CREATE TRIGGER merkle_leaves_no_delete BEFORE DELETE ON merkle_leaves
BEGIN SELECT RAISE(ABORT, 'the Merkle tree is append-only: DELETE on merkle_leaves is not allowed'); END;
CREATE TRIGGER merkle_nodes_no_update BEFORE UPDATE ON merkle_nodes
BEGIN SELECT RAISE(ABORT, 'the Merkle tree is append-only: UPDATE on merkle_nodes is not allowed'); END;
CREATE TRIGGER merkle_nodes_no_delete BEFORE DELETE ON merkle_nodes
BEGIN SELECT RAISE(ABORT, 'the Merkle tree is append-only: DELETE on merkle_nodes is not allowed'); END;
CREATE TRIGGER merkle_checkpoints_no_update BEFORE UPDATE ON merkle_checkpoints
BEGIN SELECT RAISE(ABORT, 'the Merkle tree is append-only: UPDATE on merkle_checkpoints is not allowed'); END;
CREATE TRIGGER merkle_checkpoints_no_delete BEFORE DELETE ON merkle_checkpoints
BEGIN SELECT RAISE(ABORT, 'the Merkle tree is append-only: DELETE on merkle_checkpoints is not allowed'); END;

-- +goose Down
DROP TABLE merkle_checkpoints;
DROP TABLE merkle_nodes;
DROP TABLE merkle_leaves;
