// Package sqliteverify reads an embedded (SQLite) ledger's log for package
// verify: one streaming query in a read transaction, so that every check
// sees the database as of one instant.
package sqliteverify

import (
	"context"
	"database/sql"
	"fmt"
	"time"

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

// scanSQL reads the whole log in position order.
const scanSQL = `SELECT position, id, stream, version, type, data, metadata, recorded_at, prev_hash, hash
FROM events ORDER BY position`

// Scan streams the log, one row at a time.
func (s snapshot) Scan(ctx context.Context, fn func(*verify.Row) error) error {
	rows, err := s.tx.QueryContext(ctx, scanSQL)
	if err != nil {
		return fmt.Errorf("read the log: %w", err)
	}
	defer rows.Close()
	var (
		r                    verify.Row
		data, meta, at       sql.RawBytes
		prevHash, hash       sql.RawBytes
		id, stream, typeName sql.RawBytes
	)
	e := &r.Event
	for rows.Next() {
		if err := rows.Scan(&e.Position, &id, &stream, &e.Version, &typeName, &data, &meta, &at, &prevHash, &hash); err != nil {
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
		if err := fn(&r); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read the log: %w", err)
	}
	return nil
}
