-- +goose Up
-- The RFC 6962 Merkle tree over the global log (package audit,
-- docs/audit-merkle.md). The sealer writes each checkpoint, the leaves it
-- adds and the nodes they complete in one transaction; nothing is ever
-- updated or deleted.

-- Leaf leaf_index is the event at position: the leaf_index-th event of the
-- log in position order. hash is its RFC 6962 leaf hash,
-- SHA-256(0x00 || event hash).
CREATE TABLE merkle_leaves (
    leaf_index bigint NOT NULL CHECK (leaf_index >= 0),
    position   bigint NOT NULL,
    hash       bytea  NOT NULL CHECK (length(hash) = 32),
    CONSTRAINT merkle_leaves_pkey PRIMARY KEY (leaf_index),
    CONSTRAINT merkle_leaves_position_key UNIQUE (position)
);

-- The root of each perfect subtree of level >= 1: it covers the leaves
-- [idx * 2^level, (idx + 1) * 2^level), and its hash is
-- SHA-256(0x01 || left child || right child).
CREATE TABLE merkle_nodes (
    level smallint NOT NULL CHECK (level BETWEEN 1 AND 63),
    idx   bigint   NOT NULL CHECK (idx >= 0),
    hash  bytea    NOT NULL CHECK (length(hash) = 32),
    CONSTRAINT merkle_nodes_pkey PRIMARY KEY (level, idx)
);

-- The signed checkpoints: the tree of size leaves has root hash root, its
-- last leaf is the event at position, and note is the signed note that
-- says so, made at sealed_at.
CREATE TABLE merkle_checkpoints (
    size      bigint      NOT NULL CHECK (size > 0),
    position  bigint      NOT NULL,
    root      bytea       NOT NULL CHECK (length(root) = 32),
    sealed_at timestamptz NOT NULL,
    note      text        NOT NULL,
    CONSTRAINT merkle_checkpoints_pkey PRIMARY KEY (size)
);

-- +goose StatementBegin
CREATE FUNCTION merkle_immutable() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the Merkle tree is append-only: % on % is not allowed', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END
$$;
-- +goose StatementEnd

CREATE TRIGGER merkle_leaves_no_update_delete BEFORE UPDATE OR DELETE ON merkle_leaves
    FOR EACH STATEMENT EXECUTE FUNCTION merkle_immutable();
CREATE TRIGGER merkle_leaves_no_truncate BEFORE TRUNCATE ON merkle_leaves
    FOR EACH STATEMENT EXECUTE FUNCTION merkle_immutable();
CREATE TRIGGER merkle_nodes_no_update_delete BEFORE UPDATE OR DELETE ON merkle_nodes
    FOR EACH STATEMENT EXECUTE FUNCTION merkle_immutable();
CREATE TRIGGER merkle_nodes_no_truncate BEFORE TRUNCATE ON merkle_nodes
    FOR EACH STATEMENT EXECUTE FUNCTION merkle_immutable();
CREATE TRIGGER merkle_checkpoints_no_update_delete BEFORE UPDATE OR DELETE ON merkle_checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION merkle_immutable();
CREATE TRIGGER merkle_checkpoints_no_truncate BEFORE TRUNCATE ON merkle_checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION merkle_immutable();

-- +goose Down
DROP TABLE merkle_checkpoints;
DROP TABLE merkle_nodes;
DROP TABLE merkle_leaves;
DROP FUNCTION merkle_immutable();
