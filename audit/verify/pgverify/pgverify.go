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

	"github.com/resolutionflow/ledgerd/audit"
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
	// The checkpoints' join must not become a loop over the checkpoints
	// for every event, as it could with outdated statistics.
	if _, err := tx.Exec(ctx, `SET LOCAL enable_nestloop = off`); err != nil {
		return verify.Result{}, fmt.Errorf("plan the verification: %w", err)
	}
	return verify.Verify(ctx, snapshot{tx}, opts)
}

// snapshot is the database as a read-only transaction sees it.
type snapshot struct{ tx pgx.Tx }

// scanSQL reads the whole log in position order, each event with its
// leaf and the checkpoint that ends at it, if any. Every column comes in
// PostgreSQL's binary form: for text and json, the stored text itself.
const scanSQL = `SELECT e.position, e.id, e.stream, e.version, e.type, e.data, e.metadata, e.recorded_at, e.prev_hash, e.hash,
    l.leaf_index, l.hash, c.position, c.root, c.note
FROM events e
LEFT JOIN merkle_leaves l ON l.position = e.position
LEFT JOIN merkle_checkpoints c ON c.size = l.leaf_index + 1
ORDER BY e.position`

// columns is the count of scanSQL's columns.
const columns = 15

// binaryResults asks for the binary form of every column of scanSQL.
var binaryResults = pgx.QueryResultFormats{
	pgx.BinaryFormatCode, pgx.BinaryFormatCode, pgx.BinaryFormatCode, pgx.BinaryFormatCode, pgx.BinaryFormatCode,
	pgx.BinaryFormatCode, pgx.BinaryFormatCode, pgx.BinaryFormatCode, pgx.BinaryFormatCode, pgx.BinaryFormatCode,
	pgx.BinaryFormatCode, pgx.BinaryFormatCode, pgx.BinaryFormatCode, pgx.BinaryFormatCode, pgx.BinaryFormatCode,
}

// postgresEpoch is the zero of PostgreSQL's binary timestamps, which count
// microseconds from it.
var postgresEpoch = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

// Scan streams the log: the server sends the rows as the client reads
// them. A reader goroutine copies them into batches while this one checks
// the batch before, so that reading and checking share the machine's
// cores; the batches are few and bounded, so memory stays constant
// whatever the log's size.
func (s snapshot) Scan(ctx context.Context, fn func(*verify.Row) error) error {
	full, free, stop := make(chan *batch, verify.BatchesInFlight), make(chan *batch, verify.BatchesInFlight), make(chan struct{})
	for range verify.BatchesInFlight {
		free <- &batch{}
	}
	read := make(chan error, 1)
	go func() {
		defer close(full)
		read <- s.read(ctx, full, free, stop)
	}()
	err := check(full, free, fn)
	// On a failure, the reader stops; the snapshot is free for more
	// queries once it has closed its rows.
	close(stop)
	for range full {
	}
	if readErr := <-read; err == nil {
		err = readErr
	}
	return err
}

// check decodes the rows of the batches from full, and calls fn with
// each; it hands each batch back to free.
func check(full <-chan *batch, free chan<- *batch, fn func(*verify.Row) error) error {
	var (
		r  verify.Row
		cp verify.StoredCheckpoint
		v  [columns][]byte
	)
	for b := range full {
		for i := range b.rows {
			if err := decode(b.row(i, v[:]), &r, &cp); err != nil {
				return err
			}
			if err := fn(&r); err != nil {
				return err
			}
		}
		free <- b
	}
	return nil
}

// batch is rows copied off the connection: their columns' bytes in buf.
type batch struct {
	buf  []byte
	rows [][columns]span
}

// span is where a column's bytes are in a batch's buf; null for NULL.
type span struct {
	start, end int
	null       bool
}

// row returns the columns of the batch's row i in v.
func (b *batch) row(i int, v [][]byte) [][]byte {
	for c, sp := range b.rows[i] {
		v[c] = nil
		if !sp.null {
			v[c] = b.buf[sp.start:sp.end:sp.end]
		}
	}
	return v
}

// read runs scanSQL and copies its rows into batches taken from free,
// sent on full, until the rows end or stop is closed.
func (s snapshot) read(ctx context.Context, full chan<- *batch, free <-chan *batch, stop <-chan struct{}) error {
	rows, err := s.tx.Query(ctx, scanSQL, binaryResults)
	if err != nil {
		return fmt.Errorf("read the log: %w", err)
	}
	defer rows.Close()
	var b *batch
	for rows.Next() {
		if b == nil {
			select {
			case b = <-free:
				b.buf, b.rows = b.buf[:0], b.rows[:0]
			case <-stop:
				return nil
			}
		}
		var row [columns]span
		for c, col := range rows.RawValues() {
			row[c] = span{start: len(b.buf), end: len(b.buf) + len(col), null: col == nil}
			b.buf = append(b.buf, col...)
		}
		b.rows = append(b.rows, row)
		if len(b.rows) == verify.BatchRows {
			select {
			case full <- b:
				b = nil
			case <-stop:
				return nil
			}
		}
	}
	if b != nil {
		select {
		case full <- b:
		case <-stop:
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read the log: %w", err)
	}
	return nil
}

// decode fills r (and cp, which r points to when the row has a
// checkpoint) from the binary columns of a row of scanSQL. Its strings and
// slices share the row's buffer, which the next row reuses (verify.Row):
// no copy is made of the bytes of a million events.
func decode(v [][]byte, r *verify.Row, cp *verify.StoredCheckpoint) error {
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
	r.Sealed, r.Checkpoint = v[10] != nil, nil
	if r.Sealed {
		r.LeafIndex, r.LeafHash = binary.BigEndian.Uint64(v[10]), v[11]
	}
	if v[12] != nil {
		*cp = verify.StoredCheckpoint{Size: r.LeafIndex + 1, Position: int64(binary.BigEndian.Uint64(v[12])), Root: v[13], Note: v[14]}
		r.Checkpoint = cp
	}
	return nil
}

// LeafFrom implements verify.Log.
func (s snapshot) LeafFrom(ctx context.Context, index uint64) (audit.StoredLeaf, bool, error) {
	return verify.ScanLeaf(s.tx.QueryRow(ctx, verify.LeafFromSQL, int64(index)), index)
}

// CheckpointBeyond implements verify.Log.
func (s snapshot) CheckpointBeyond(ctx context.Context, size uint64) (verify.StoredCheckpoint, bool, error) {
	return verify.ScanCheckpoint(s.tx.QueryRow(ctx, verify.CheckpointBeyondSQL, int64(size)), size)
}
