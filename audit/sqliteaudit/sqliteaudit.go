// Package sqliteaudit keeps the ledger's Merkle tree in the embedded SQLite
// store (tables merkle_leaves, merkle_nodes and merkle_checkpoints): it
// implements audit.Store on the store's connections.
package sqliteaudit

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/transparency-dev/merkle/compact"

	"github.com/resolutionflow/ledgerd/audit"
	"github.com/resolutionflow/ledgerd/eventstore/sqlitestore"
)

// Store is an audit.Store on a SQLite file of the embedded store.
//
// SQLite lets one transaction write at a time, so an append waits while a
// seal commits. The sealer does all its work (hashing, signing) before it
// begins, so its transaction is only the inserts of one batch: at most
// audit.DefaultBatchSize leaves, about as many nodes, and a checkpoint.
type Store struct {
	write, read *sql.DB
}

var _ audit.Store = (*Store)(nil)

// New returns a store writing through write (sqlitestore.Store.DB) and
// reading through read (sqlitestore.Store.ReadDB).
func New(write, read *sql.DB) *Store { return &Store{write: write, read: read} }

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
	return s.checkpoint(ctx, `SELECT `+checkpointColumns+` FROM merkle_checkpoints WHERE size = ?`, int64(size))
}

func (s *Store) checkpoint(ctx context.Context, query string, args ...any) (audit.Checkpoint, error) {
	var c audit.Checkpoint
	var size int64
	var at string
	err := s.read.QueryRowContext(ctx, query, args...).Scan(&size, &c.Position, &c.Root, &at, &c.Note)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return c, fmt.Errorf("checkpoint: %w", audit.ErrNotFound)
	case err != nil:
		return c, fmt.Errorf("read checkpoint: %w", err)
	}
	if c.Time, err = time.Parse(sqlitestore.TimeLayout, at); err != nil {
		return c, fmt.Errorf("read checkpoint of size %d: time: %w", size, err)
	}
	c.Size = uint64(size)
	return c, nil
}

// LeafAt implements audit.Store.
func (s *Store) LeafAt(ctx context.Context, position int64) (audit.StoredLeaf, error) {
	l := audit.StoredLeaf{Position: position}
	var index int64
	err := s.read.QueryRowContext(ctx, `SELECT leaf_index, hash FROM merkle_leaves WHERE position = ?`, position).Scan(&index, &l.Hash)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return l, fmt.Errorf("leaf of position %d: %w", position, audit.ErrNotFound)
	case err != nil:
		return l, fmt.Errorf("read leaf of position %d: %w", position, err)
	}
	l.Index = uint64(index)
	return l, nil
}

// hashesSQL looks up nodes by (level, idx), given as a JSON array of
// [level, idx] pairs, keeping their order: level 0 in merkle_leaves, the
// others in merkle_nodes. Each is one primary-key lookup.
const hashesSQL = `SELECT coalesce(l.hash, n.hash)
FROM json_each(?) AS q
LEFT JOIN merkle_leaves l ON q.value ->> 0 = 0 AND l.leaf_index = q.value ->> 1
LEFT JOIN merkle_nodes n ON q.value ->> 0 > 0 AND n.level = q.value ->> 0 AND n.idx = q.value ->> 1
ORDER BY q.key`

// Hashes implements audit.Store.
func (s *Store) Hashes(ctx context.Context, ids []compact.NodeID) ([][]byte, error) {
	pairs := make([][2]uint64, len(ids))
	for i, id := range ids {
		pairs[i] = [2]uint64{uint64(id.Level), id.Index}
	}
	arg, err := json.Marshal(pairs)
	if err != nil {
		return nil, fmt.Errorf("read %d tree nodes: %w", len(ids), err)
	}
	rows, err := s.read.QueryContext(ctx, hashesSQL, string(arg))
	if err != nil {
		return nil, fmt.Errorf("read %d tree nodes: %w", len(ids), err)
	}
	defer rows.Close()
	hashes := make([][]byte, 0, len(ids))
	for rows.Next() {
		var h []byte
		if err := rows.Scan(&h); err != nil {
			return nil, fmt.Errorf("read %d tree nodes: %w", len(ids), err)
		}
		if h == nil {
			id := ids[len(hashes)]
			return nil, fmt.Errorf("node (level %d, index %d): %w", id.Level, id.Index, audit.ErrNotFound)
		}
		hashes = append(hashes, h)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read %d tree nodes: %w", len(ids), err)
	}
	return hashes, nil
}

// Seal implements audit.Store. Its transaction begins IMMEDIATE (the
// write connection's), so it reads the tree's size knowing no other writer
// can change it before the commit.
func (s *Store) Seal(ctx context.Context, seal audit.Seal) (err error) {
	if seal.Fence.Checked() {
		return fmt.Errorf("seal checkpoint of size %d: the embedded store cannot check lease %q's fence", seal.Checkpoint.Size, seal.Fence.Name)
	}
	tx, err := s.write.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("seal checkpoint of size %d: %w", seal.Checkpoint.Size, err)
	}
	defer func() {
		if err != nil {
			err = errors.Join(fmt.Errorf("seal checkpoint of size %d: %w", seal.Checkpoint.Size, err), tx.Rollback())
		}
	}()
	var size uint64
	if err := tx.QueryRowContext(ctx, `SELECT coalesce(max(leaf_index) + 1, 0) FROM merkle_leaves`).Scan(&size); err != nil {
		return err
	}
	if len(seal.Leaves) > 0 && seal.Leaves[0].Index != size {
		return fmt.Errorf("%w: it has %d leaves, the seal starts at %d", audit.ErrStale, size, seal.Leaves[0].Index)
	}
	for _, l := range seal.Leaves {
		if _, err := tx.ExecContext(ctx, `INSERT INTO merkle_leaves (leaf_index, position, hash) VALUES (?, ?, ?)`, int64(l.Index), l.Position, l.Hash); err != nil {
			return fmt.Errorf("insert leaf %d: %w", l.Index, err)
		}
	}
	for _, n := range seal.Nodes {
		if _, err := tx.ExecContext(ctx, `INSERT INTO merkle_nodes (level, idx, hash) VALUES (?, ?, ?)`, n.Level, int64(n.Index), n.Hash); err != nil {
			return fmt.Errorf("insert node (level %d, index %d): %w", n.Level, n.Index, err)
		}
	}
	c := seal.Checkpoint
	if _, err := tx.ExecContext(ctx, `INSERT INTO merkle_checkpoints (`+checkpointColumns+`) VALUES (?, ?, ?, ?, ?)`,
		int64(c.Size), c.Position, c.Root, c.Time.UTC().Format(sqlitestore.TimeLayout), c.Note); err != nil {
		return fmt.Errorf("insert checkpoint: %w", err)
	}
	return tx.Commit()
}
