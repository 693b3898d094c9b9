// Package pgverify reads a PostgreSQL ledger's log for package verify, as
// of one instant: a read-only, repeatable-read transaction exports its
// snapshot, and several readers (verify.ScanChunks), each in a
// transaction of its own that imports that snapshot, read the log in
// chunks of positions, so that the server's work is spread over its
// cores as the client's is.
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
// as of one instant. It reads with one connection of the pool for the
// snapshot and the others (at most verify.Readers) for the readers.
func Verify(ctx context.Context, pool *pgxpool.Pool, opts verify.Options) (verify.Result, error) {
	tx, err := begin(ctx, pool)
	if err != nil {
		return verify.Result{}, fmt.Errorf("begin the verification's snapshot: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // read only: nothing to undo
	s := snapshot{tx: tx, pool: pool, chunk: chunkPositions}
	s.readers = max(1, min(readersFor(), int(pool.Config().MaxConns)-1))
	err = tx.QueryRow(ctx, `SELECT pg_export_snapshot(), coalesce(min(position), 1), coalesce(max(position), 0) FROM events`).
		Scan(&s.id, &s.first, &s.last)
	if err != nil {
		return verify.Result{}, fmt.Errorf("read the log's bounds: %w", err)
	}
	return verify.Verify(ctx, s, opts)
}

// idleTimeout bounds how long a transaction of the verification may sit
// idle: the exporting one waits for the whole read. The server's setting
// may be seconds (leadership needs that of the ledger's own sessions);
// these transactions are read-only and lock no row.
const idleTimeout = time.Hour

// begin begins a read-only, repeatable-read transaction for the
// verification.
func begin(ctx context.Context, pool *pgxpool.Pool) (pgx.Tx, error) {
	tx, err := pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return nil, err
	}
	if _, err := tx.Exec(ctx, fmt.Sprintf(`SET LOCAL idle_in_transaction_session_timeout = %d`, idleTimeout.Milliseconds())); err != nil {
		_ = tx.Rollback(context.WithoutCancel(ctx))
		return nil, err
	}
	return tx, nil
}

// readersFor tells how many goroutines read the log at once, at most.
var readersFor = verify.Readers

// chunkPositions is how many positions a reader's query covers: eight
// batches.
var chunkPositions int64 = 8 * verify.BatchRows

// snapshot is the database as the transaction tx sees it: the snapshot
// id, which the readers' transactions import, and the events' first and
// last positions.
type snapshot struct {
	tx          pgx.Tx
	pool        *pgxpool.Pool
	id          string
	first, last int64
	readers     int
	chunk       int64
}

// Scan streams the log, read in chunks of positions (verify.ScanChunks).
func (s snapshot) Scan(ctx context.Context, fn func(*verify.Row) error) error {
	chunks := (s.last - s.first + s.chunk) / s.chunk
	return verify.ScanChunks(ctx, chunks, s.chunk, s.readers, s.open, fn)
}

// The statements of a reader, all in PostgreSQL's binary form: for text
// and json, the stored text itself. A chunk's leaves come in position
// order, as its events do; the reader puts them beside the events of
// their positions, with the checkpoints that end at them
// (verify.ChunkTree).
const (
	chunkEventsSQL = `SELECT position, id, stream, version, type, data, metadata, recorded_at, prev_hash, hash
FROM events WHERE position >= $1 AND position < $2 ORDER BY position`
	chunkLeavesSQL      = `SELECT leaf_index, position, hash FROM merkle_leaves WHERE position >= $1 AND position < $2 ORDER BY position`
	chunkCheckpointsSQL = `SELECT size, position, root, note FROM merkle_checkpoints WHERE size >= $1 AND size <= $2`
)

// binaryResults asks for the binary form of every column of a reader's
// statements.
var binaryResults = pgx.QueryResultFormats{
	pgx.BinaryFormatCode, pgx.BinaryFormatCode, pgx.BinaryFormatCode, pgx.BinaryFormatCode, pgx.BinaryFormatCode,
	pgx.BinaryFormatCode, pgx.BinaryFormatCode, pgx.BinaryFormatCode, pgx.BinaryFormatCode, pgx.BinaryFormatCode,
}

// postgresEpoch is the zero of PostgreSQL's binary timestamps, which count
// microseconds from it.
var postgresEpoch = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

// reader is a reader goroutine's transaction, in the snapshot.
type reader struct {
	s    snapshot
	tx   pgx.Tx
	tree verify.ChunkTree
	row  verify.StoredRow
}

// open begins a reader's transaction in the snapshot.
func (s snapshot) open(ctx context.Context) (verify.ChunkReader, error) {
	tx, err := begin(ctx, s.pool)
	if err != nil {
		return nil, fmt.Errorf("begin a reader's snapshot: %w", err)
	}
	if _, err := tx.Exec(ctx, fmt.Sprintf(`SET TRANSACTION SNAPSHOT '%s'`, s.id)); err != nil {
		_ = tx.Rollback(context.WithoutCancel(ctx))
		return nil, fmt.Errorf("import the verification's snapshot: %w", err)
	}
	return &reader{s: s, tx: tx}, nil
}

// Close implements verify.ChunkReader.
func (r *reader) Close() { _ = r.tx.Rollback(context.Background()) }

// int8 decodes a binary bigint.
func int8(col []byte) (int64, error) {
	if len(col) != 8 {
		return 0, fmt.Errorf("a bigint of %d bytes", len(col))
	}
	return int64(binary.BigEndian.Uint64(col)), nil
}

// readTree reads the leaves of the positions [lo, hi) and the checkpoints
// that end at them into r.tree.
func (r *reader) readTree(ctx context.Context, lo, hi int64) error {
	r.tree.Reset()
	// eachRow reports the query's error.
	rows, _ := r.tx.Query(ctx, chunkLeavesSQL, binaryResults[:3], lo, hi)
	err := eachRow(rows, func(index, position int64, v [][]byte) { r.tree.AddLeaf(index, position, v[2]) })
	if err != nil {
		return err
	}
	from, to, ok := r.tree.Sizes()
	if !ok {
		return nil
	}
	rows, _ = r.tx.Query(ctx, chunkCheckpointsSQL, binaryResults[:4], from, to)
	return eachRow(rows, func(size, position int64, v [][]byte) { r.tree.AddCheckpoint(size, position, v[2], v[3]) })
}

// eachRow calls fn with every row's first two columns, bigints, and all
// its columns, and closes rows.
func eachRow(rows pgx.Rows, fn func(a, b int64, v [][]byte)) error {
	defer rows.Close()
	for rows.Next() {
		v := rows.RawValues()
		a, err := int8(v[0])
		if err != nil {
			return err
		}
		b, err := int8(v[1])
		if err != nil {
			return err
		}
		fn(a, b, v)
	}
	return rows.Err()
}

// ReadChunk implements verify.ChunkReader: chunk c is the positions [lo,
// lo+chunk).
func (r *reader) ReadChunk(ctx context.Context, c int64, add func(*verify.StoredRow) error) error {
	lo := r.s.first + c*r.s.chunk
	hi := min(lo+r.s.chunk, r.s.last+1)
	if err := r.readTree(ctx, lo, hi); err != nil {
		return fmt.Errorf("read the Merkle tree: %w", err)
	}
	// rows.Err reports the query's error, after rows.Next returns false.
	rows, _ := r.tx.Query(ctx, chunkEventsSQL, binaryResults, lo, hi)
	defer rows.Close()
	w := &r.row
	for rows.Next() {
		if err := decode(rows.RawValues(), w); err != nil {
			return err
		}
		r.tree.Attach(w)
		if err := add(w); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read the log: %w", err)
	}
	return nil
}

// decode sets w from the binary columns v of a row of chunkEventsSQL,
// sharing their bytes.
func decode(v [][]byte, w *verify.StoredRow) error {
	if len(v[0]) != 8 || len(v[3]) != 8 || len(v[7]) != 8 {
		return fmt.Errorf("read the log: a position, version or time of %d, %d, %d bytes, not 8", len(v[0]), len(v[3]), len(v[7]))
	}
	at := int64(binary.BigEndian.Uint64(v[7]))
	*w = verify.StoredRow{
		Position: int64(binary.BigEndian.Uint64(v[0])), ID: v[1], Stream: v[2], Version: int64(binary.BigEndian.Uint64(v[3])),
		Type: v[4], Data: v[5], Metadata: v[6], RecordedAt: postgresEpoch.Add(time.Duration(at) * time.Microsecond),
		PrevHash: v[8], Hash: v[9],
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
