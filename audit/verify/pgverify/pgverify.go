// Package pgverify reads a PostgreSQL ledger's log for package verify: one
// streaming query in a read-only, repeatable-read transaction, so that
// every check sees the database as of one instant.
package pgverify

import (
	"context"
	"encoding/binary"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/resolutionflow/ledgerd/audit/verify"
)

// Verify checks the log of the database pool connects to (verify.Verify),
// as of one instant.
func Verify(ctx context.Context, pool *pgxpool.Pool, opts verify.Options) (verify.Result, error) {
	tx, err := pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return verify.Result{}, fmt.Errorf("begin the verification's snapshot: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // read only: nothing to undo
	return verify.Verify(ctx, snapshot{tx}, opts)
}

// snapshot is the database as a read-only transaction sees it.
type snapshot struct{ tx pgx.Tx }

// scanSQL reads the whole log in position order. Every column comes in
// PostgreSQL's binary form: for text and json, the stored text itself.
const scanSQL = `SELECT position, id, stream, version, type, data, metadata, recorded_at, prev_hash, hash
FROM events ORDER BY position`

// binaryResults asks for the binary form of every column of scanSQL.
var binaryResults = pgx.QueryResultFormats{
	pgx.BinaryFormatCode, pgx.BinaryFormatCode, pgx.BinaryFormatCode, pgx.BinaryFormatCode, pgx.BinaryFormatCode,
	pgx.BinaryFormatCode, pgx.BinaryFormatCode, pgx.BinaryFormatCode, pgx.BinaryFormatCode, pgx.BinaryFormatCode,
}

// postgresEpoch is the zero of PostgreSQL's binary timestamps, which count
// microseconds from it.
var postgresEpoch = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

// Scan streams the log: the server sends the rows as the client reads
// them, so memory stays constant whatever the log's size.
func (s snapshot) Scan(ctx context.Context, fn func(*verify.Row) error) error {
	rows, err := s.tx.Query(ctx, scanSQL, binaryResults)
	if err != nil {
		return fmt.Errorf("read the log: %w", err)
	}
	defer rows.Close()
	var r verify.Row
	for rows.Next() {
		if err := decode(rows.RawValues(), &r); err != nil {
			return err
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

// decode fills r from the binary columns of a row of scanSQL. Its strings
// and slices share the row's buffer, which the next row reuses
// (verify.Row): no copy is made of the bytes of a million events.
func decode(v [][]byte, r *verify.Row) error {
	e := &r.Event
	for _, i := range [...]int{0, 3, 7} {
		if len(v[i]) != 8 {
			return fmt.Errorf("read the log: column %d: want 8 bytes, got %d", i, len(v[i]))
		}
	}
	e.Position = int64(binary.BigEndian.Uint64(v[0]))
	e.ID, e.Stream, e.Type = verify.BorrowString(v[1]), verify.BorrowString(v[2]), verify.BorrowString(v[4])
	e.Version = int64(binary.BigEndian.Uint64(v[3]))
	e.Data, e.RawMetadata = v[5], v[6]
	e.RecordedAt = postgresEpoch.Add(time.Duration(int64(binary.BigEndian.Uint64(v[7]))) * time.Microsecond)
	if len(v[8]) != len(e.PrevHash) || len(v[9]) != len(e.Hash) {
		return &verify.Failure{Position: e.Position, Stream: string(v[2]), Reason: "a stored hash is not 32 bytes"}
	}
	copy(e.PrevHash[:], v[8])
	copy(e.Hash[:], v[9])
	return nil
}
