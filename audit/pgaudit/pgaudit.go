// Package pgaudit keeps the ledger's Merkle tree in PostgreSQL (tables
// merkle_leaves, merkle_nodes and merkle_checkpoints): it implements
// audit.Store on a pgx pool.
package pgaudit

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/transparency-dev/merkle/compact"

	"github.com/resolutionflow/ledgerd/audit"
	"github.com/resolutionflow/ledgerd/leader/pgleader"
)

// Store is an audit.Store on a PostgreSQL pool of a migrated database.
type Store struct {
	pool *pgxpool.Pool
	// duringSeal, when set (by tests), runs inside Seal's transaction
	// after its writes, before the commit.
	duringSeal func()
}

var _ audit.Store = (*Store)(nil)

// New returns a store on pool.
func New(pool *pgxpool.Pool) *Store { return &Store{pool: pool} }

const checkpointColumns = `size, position, root, sealed_at, note`

// Latest implements audit.Store.
func (s *Store) Latest(ctx context.Context) (audit.Checkpoint, bool, error) {
	c, err := s.checkpoint(ctx, `SELECT `+checkpointColumns+` FROM merkle_checkpoints ORDER BY size DESC LIMIT 1`)
	if errors.Is(err, audit.ErrNotFound) {
		return audit.Checkpoint{}, false, nil
	}
	return c, err == nil, err
}

// CheckpointOfSize implements audit.Store.
func (s *Store) CheckpointOfSize(ctx context.Context, size uint64) (audit.Checkpoint, error) {
	return s.checkpoint(ctx, `SELECT `+checkpointColumns+` FROM merkle_checkpoints WHERE size = $1`, int64(size))
}

func (s *Store) checkpoint(ctx context.Context, query string, args ...any) (audit.Checkpoint, error) {
	var c audit.Checkpoint
	var size int64
	err := s.pool.QueryRow(ctx, query, args...).Scan(&size, &c.Position, &c.Root, &c.Time, &c.Note)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return c, fmt.Errorf("checkpoint: %w", audit.ErrNotFound)
	case err != nil:
		return c, fmt.Errorf("read checkpoint: %w", err)
	}
	c.Size, c.Time = uint64(size), c.Time.UTC()
	return c, nil
}

// LeafAt implements audit.Store.
func (s *Store) LeafAt(ctx context.Context, position int64) (audit.StoredLeaf, error) {
	l := audit.StoredLeaf{Position: position}
	var index int64
	err := s.pool.QueryRow(ctx, `SELECT leaf_index, hash FROM merkle_leaves WHERE position = $1`, position).Scan(&index, &l.Hash)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return l, fmt.Errorf("leaf of position %d: %w", position, audit.ErrNotFound)
	case err != nil:
		return l, fmt.Errorf("read leaf of position %d: %w", position, err)
	}
	l.Index = uint64(index)
	return l, nil
}

// hashesSQL looks up nodes by (level, idx), keeping the order asked for:
// level 0 in merkle_leaves, the others in merkle_nodes. Each is one index
// lookup.
const hashesSQL = `SELECT CASE WHEN q.level = 0
    THEN (SELECT hash FROM merkle_leaves WHERE leaf_index = q.idx)
    ELSE (SELECT hash FROM merkle_nodes WHERE level = q.level AND idx = q.idx) END
FROM unnest($1::smallint[], $2::bigint[]) WITH ORDINALITY AS q(level, idx, ord)
ORDER BY q.ord`

// Hashes implements audit.Store.
func (s *Store) Hashes(ctx context.Context, ids []compact.NodeID) ([][]byte, error) {
	levels, indexes := make([]int16, len(ids)), make([]int64, len(ids))
	for i, id := range ids {
		levels[i], indexes[i] = int16(id.Level), int64(id.Index)
	}
	// pgx.CollectRows reports the query's error.
	rows, _ := s.pool.Query(ctx, hashesSQL, levels, indexes)
	hashes, err := pgx.CollectRows(rows, pgx.RowTo[[]byte])
	if err != nil {
		return nil, fmt.Errorf("read %d tree nodes: %w", len(ids), err)
	}
	for i, h := range hashes {
		if h == nil {
			return nil, fmt.Errorf("node (level %d, index %d): %w", ids[i].Level, ids[i].Index, audit.ErrNotFound)
		}
	}
	return hashes, nil
}

// Seal implements audit.Store. The leaves' primary key is the
// compare-and-set: a sealer that read the tree before another sealed
// inserts a leaf index that is taken, and gets audit.ErrStale.
func (s *Store) Seal(ctx context.Context, seal audit.Seal) error {
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		leaves := make([][]any, len(seal.Leaves))
		for i, l := range seal.Leaves {
			leaves[i] = []any{int64(l.Index), l.Position, l.Hash}
		}
		if _, err := tx.CopyFrom(ctx, pgx.Identifier{"merkle_leaves"}, []string{"leaf_index", "position", "hash"}, pgx.CopyFromRows(leaves)); err != nil {
			return fmt.Errorf("insert %d leaves: %w", len(leaves), err)
		}
		nodes := make([][]any, len(seal.Nodes))
		for i, n := range seal.Nodes {
			nodes[i] = []any{int16(n.Level), int64(n.Index), n.Hash}
		}
		if _, err := tx.CopyFrom(ctx, pgx.Identifier{"merkle_nodes"}, []string{"level", "idx", "hash"}, pgx.CopyFromRows(nodes)); err != nil {
			return fmt.Errorf("insert %d nodes: %w", len(nodes), err)
		}
		c := seal.Checkpoint
		if _, err := tx.Exec(ctx, `INSERT INTO merkle_checkpoints (`+checkpointColumns+`) VALUES ($1, $2, $3, $4, $5)`,
			int64(c.Size), c.Position, c.Root, c.Time, c.Note); err != nil {
			return fmt.Errorf("insert checkpoint: %w", err)
		}
		if s.duringSeal != nil {
			s.duringSeal()
		}
		return pgleader.CheckFence(ctx, tx, seal.Fence)
	})
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "23505" {
		return fmt.Errorf("seal checkpoint of size %d: %w: %w", seal.Checkpoint.Size, audit.ErrStale, err)
	}
	if err != nil {
		return fmt.Errorf("seal checkpoint of size %d: %w", seal.Checkpoint.Size, err)
	}
	return nil
}
