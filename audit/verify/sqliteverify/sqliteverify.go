// Package sqliteverify reads an embedded (SQLite) ledger's log for package
// verify: one streaming query in a read transaction, so that every check
// sees the database as of one instant.
package sqliteverify

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/resolutionflow/ledgerd/audit"
	"github.com/resolutionflow/ledgerd/audit/verify"
	"github.com/resolutionflow/ledgerd/eventstore"
)

// Verify checks the log of the SQLite database db (verify.Verify), as of
// one instant.
func Verify(ctx context.Context, db *sql.DB, opts verify.Options) (verify.Result, error) {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return verify.Result{}, fmt.Errorf("begin the verification's snapshot: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // read only: nothing to undo
	return verify.Verify(ctx, snapshot{tx}, opts)
}

// snapshot is the database as a read transaction sees it.
type snapshot struct{ tx *sql.Tx }

// scanSQL reads the whole log in position order, each event with its
// leaf and the checkpoint that ends at it, if any.
const scanSQL = `SELECT e.position, e.id, e.stream, e.version, e.type, e.data, e.metadata, e.recorded_at, e.prev_hash, e.hash,
    l.leaf_index, l.hash, c.position, c.root, c.note
FROM events e
LEFT JOIN merkle_leaves l ON l.position = e.position
LEFT JOIN merkle_checkpoints c ON c.size = l.leaf_index + 1
ORDER BY e.position`

// Scan streams the log, one row at a time.
func (s snapshot) Scan(ctx context.Context, fn func(*verify.Row) error) error {
	rows, err := s.tx.QueryContext(ctx, scanSQL)
	if err != nil {
		return fmt.Errorf("read the log: %w", err)
	}
	defer rows.Close()
	var (
		r                     verify.Row
		cp                    verify.StoredCheckpoint
		id, stream, typeName  sql.RawBytes
		data, meta, at        sql.RawBytes
		prevHash, hash        sql.RawBytes
		leafHash, root, note  sql.RawBytes
		leafIndex, cpPosition sql.NullInt64
	)
	e := &r.Event
	for rows.Next() {
		if err := rows.Scan(&e.Position, &id, &stream, &e.Version, &typeName, &data, &meta, &at, &prevHash, &hash,
			&leafIndex, &leafHash, &cpPosition, &root, &note); err != nil {
			return fmt.Errorf("read the log: %w", err)
		}
		// The row's bytes, which the next row may reuse (verify.Row).
		e.ID, e.Stream, e.Type = verify.BorrowString(id), verify.BorrowString(stream), verify.BorrowString(typeName)
		e.Data, e.RawMetadata = []byte(data), []byte(meta)
		if e.RecordedAt, err = time.Parse(eventstore.TimeLayout, verify.BorrowString(at)); err != nil {
			return &verify.Failure{Position: e.Position, Stream: string(stream), Reason: fmt.Sprintf("recorded_at %q is not a recorded time", at)}
		}
		if len(prevHash) != len(e.PrevHash) || len(hash) != len(e.Hash) {
			return &verify.Failure{Position: e.Position, Stream: string(stream), Reason: "a stored hash is not 32 bytes"}
		}
		copy(e.PrevHash[:], prevHash)
		copy(e.Hash[:], hash)
		r.Sealed, r.LeafIndex, r.LeafHash, r.Checkpoint = leafIndex.Valid, uint64(leafIndex.Int64), leafHash, nil
		if cpPosition.Valid {
			cp = verify.StoredCheckpoint{Size: r.LeafIndex + 1, Position: cpPosition.Int64, Root: root, Note: note}
			r.Checkpoint = &cp
		}
		if err := fn(&r); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read the log: %w", err)
	}
	return nil
}

// LeafFrom implements verify.Log.
func (s snapshot) LeafFrom(ctx context.Context, index uint64) (audit.StoredLeaf, bool, error) {
	var (
		l     audit.StoredLeaf
		found int64
	)
	err := s.tx.QueryRowContext(ctx, `SELECT leaf_index, position, hash FROM merkle_leaves WHERE leaf_index >= ? ORDER BY leaf_index LIMIT 1`, int64(index)).
		Scan(&found, &l.Position, &l.Hash)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return l, false, nil
	case err != nil:
		return l, false, fmt.Errorf("read the leaves from %d: %w", index, err)
	}
	l.Index = uint64(found)
	return l, true, nil
}

// CheckpointBeyond implements verify.Log.
func (s snapshot) CheckpointBeyond(ctx context.Context, size uint64) (verify.StoredCheckpoint, bool, error) {
	var (
		c     verify.StoredCheckpoint
		found int64
	)
	err := s.tx.QueryRowContext(ctx, `SELECT size, position, root, note FROM merkle_checkpoints WHERE size > ? ORDER BY size LIMIT 1`, int64(size)).
		Scan(&found, &c.Position, &c.Root, &c.Note)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return c, false, nil
	case err != nil:
		return c, false, fmt.Errorf("read the checkpoints beyond %d: %w", size, err)
	}
	c.Size = uint64(found)
	return c, true, nil
}
