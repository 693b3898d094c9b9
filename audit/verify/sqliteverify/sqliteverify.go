// Package sqliteverify reads an embedded (SQLite) ledger's log for package
// verify, as of one instant.
//
// The log is read by several goroutines at once (verify.ScanChunks), each
// on its own read-only connection, in chunks of positions that they take
// in turn; the checks then take the rows chunk by chunk, in position
// order. The readers' transactions begin at different instants, so every
// query is bounded by what the first transaction saw: the last position,
// leaf and checkpoint. Events, leaves and checkpoints are only ever
// appended, so within those bounds every reader sees the same rows.
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
// one instant. db is a pool of read connections; the readers open
// connections of their own to its file.
func Verify(ctx context.Context, db *sql.DB, opts verify.Options) (verify.Result, error) {
	tx, err := db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return verify.Result{}, fmt.Errorf("begin the verification's snapshot: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // read only: nothing to undo
	s := snapshot{tx: tx, readers: readersFor(), chunk: chunkPositions}
	if err := tx.QueryRowContext(ctx, `SELECT file FROM pragma_database_list WHERE name = 'main'`).Scan(&s.file); err != nil {
		return verify.Result{}, fmt.Errorf("find the database file: %w", err)
	}
	if s.file == "" {
		return verify.Result{}, errors.New("find the database file: the database is not in a file")
	}
	if err := tx.QueryRowContext(ctx, boundsSQL).Scan(&s.bounds.first, &s.bounds.last, &s.bounds.leaves, &s.bounds.size); err != nil {
		return verify.Result{}, fmt.Errorf("read the log's bounds: %w", err)
	}
	return verify.Verify(ctx, s, opts)
}

// readersFor tells how many goroutines read the log at once.
var readersFor = verify.Readers

// chunkPositions is how many positions a reader's query covers: four
// batches.
var chunkPositions int64 = 4 * verify.BatchRows

// snapshot is the database as the transaction tx sees it, which the
// readers' transactions on its file reproduce within bounds.
type snapshot struct {
	tx      *sql.Tx
	file    string // the database file, which the readers open
	bounds  bounds
	readers int
	chunk   int64
}

// bounds is what the snapshot's transaction saw: the events' first and
// last positions, the count of leaves (the next leaf index) and the
// largest checkpoint's size.
type bounds struct {
	first, last, leaves, size int64
}

const boundsSQL = `SELECT coalesce((SELECT min(position) FROM events), 1), coalesce((SELECT max(position) FROM events), 0),
    coalesce((SELECT max(leaf_index) + 1 FROM merkle_leaves), 0), coalesce((SELECT max(size) FROM merkle_checkpoints), 0)`

// Scan streams the log, read in chunks of positions (verify.ScanChunks).
func (s snapshot) Scan(ctx context.Context, fn func(*verify.Row) error) error {
	chunks := (s.bounds.last - s.bounds.first + s.chunk) / s.chunk
	return verify.ScanChunks(ctx, chunks, s.chunk, s.readers, s.begin, fn)
}

// mmapSize is how much of the file a reader maps into memory: its pages
// are then read without a system call and a copy each.
const mmapSize = 1 << 30

// The statements of a reader. A chunk's events come in position order,
// and so do its leaves, which the reader puts beside the events of their
// positions, with the checkpoints that end at them: what a join of the
// three tables would give, without its two index lookups per event.
const (
	chunkEventsSQL = `SELECT position, id, stream, version, type, data, metadata, recorded_at, prev_hash, hash
FROM events WHERE position >= ?1 AND position < ?2 ORDER BY position`
	chunkLeavesSQL = `SELECT leaf_index, position, hash
FROM merkle_leaves WHERE position >= ?1 AND position < ?2 AND leaf_index < ?3 ORDER BY position`
	chunkCheckpointsSQL = `SELECT size, position, root, note FROM merkle_checkpoints WHERE size >= ?1 AND size <= ?2`
)

// reader is a reader goroutine's connection, in its read transaction,
// with its statements and the leaves and checkpoints of its chunk.
type reader struct {
	s                           snapshot
	conn                        *rawConn
	events, leaves, checkpoints *rawStmt
	tree                        verify.ChunkTree
	row                         verify.StoredRow
}

// begin opens a reader's connection on the snapshot's file, maps the file
// into memory and begins a read transaction.
func (s snapshot) begin(context.Context) (verify.ChunkReader, error) {
	conn, err := openRaw(s.file)
	if err != nil {
		return nil, fmt.Errorf("open a reader's connection: %w", err)
	}
	r := &reader{s: s, conn: conn}
	if err := conn.exec(fmt.Sprintf(`PRAGMA mmap_size = %d`, mmapSize)); err != nil {
		r.Close()
		return nil, fmt.Errorf("map the log into memory: %w", err)
	}
	for _, st := range []struct {
		to  **rawStmt
		sql string
	}{{&r.events, chunkEventsSQL}, {&r.leaves, chunkLeavesSQL}, {&r.checkpoints, chunkCheckpointsSQL}} {
		if *st.to, err = conn.prepare(st.sql); err != nil {
			r.Close()
			return nil, fmt.Errorf("prepare a reader's statement: %w", err)
		}
	}
	if err := conn.exec(`BEGIN`); err != nil {
		r.Close()
		return nil, fmt.Errorf("begin a reader's snapshot: %w", err)
	}
	return r, nil
}

// Close implements verify.ChunkReader.
func (r *reader) Close() {
	_ = r.conn.exec(`ROLLBACK`) // read only: nothing to undo; fails when not begun
	r.events.finalize()
	r.leaves.finalize()
	r.checkpoints.finalize()
	r.conn.close()
}

// readTree reads the leaves of the positions [lo, hi) and the checkpoints
// that end at them, within the snapshot's bounds, into r.tree.
func (r *reader) readTree(lo, hi int64) error {
	r.tree.Reset()
	if err := r.leaves.query(lo, hi, r.s.bounds.leaves); err != nil {
		return err
	}
	for {
		ok, err := r.leaves.step()
		if err != nil {
			return err
		}
		if !ok {
			break
		}
		r.tree.AddLeaf(r.leaves.int64(0), r.leaves.int64(1), r.leaves.bytes(2))
	}
	from, to, ok := r.tree.Sizes()
	if !ok || from > r.s.bounds.size {
		return nil
	}
	if err := r.checkpoints.query(from, min(to, r.s.bounds.size)); err != nil {
		return err
	}
	for {
		ok, err := r.checkpoints.step()
		if err != nil || !ok {
			return err
		}
		c := r.checkpoints
		r.tree.AddCheckpoint(c.int64(0), c.int64(1), c.bytes(2), c.bytes(3))
	}
}

// ReadChunk implements verify.ChunkReader: chunk c is the positions [lo,
// lo+chunk).
func (r *reader) ReadChunk(_ context.Context, c int64, add func(*verify.StoredRow) error) error {
	lo := r.s.bounds.first + c*r.s.chunk
	hi := min(lo+r.s.chunk, r.s.bounds.last+1)
	if err := r.readTree(lo, hi); err != nil {
		return fmt.Errorf("read the Merkle tree: %w", err)
	}
	if err := r.events.query(lo, hi); err != nil {
		return fmt.Errorf("read the log: %w", err)
	}
	e, w := r.events, &r.row
	for {
		ok, err := e.step()
		if err != nil {
			return fmt.Errorf("read the log: %w", err)
		}
		if !ok {
			return nil
		}
		*w = verify.StoredRow{
			Position: e.int64(0), ID: e.bytes(1), Stream: e.bytes(2), Version: e.int64(3), Type: e.bytes(4),
			Data: e.bytes(5), Metadata: e.bytes(6), PrevHash: e.bytes(8), Hash: e.bytes(9),
		}
		at := e.bytes(7)
		if w.RecordedAt, err = time.Parse(eventstore.TimeLayout, verify.BorrowString(at)); err != nil {
			return &verify.Failure{Position: w.Position, Stream: string(w.Stream), Reason: fmt.Sprintf("recorded_at %q is not a recorded time", at)}
		}
		r.tree.Attach(w)
		if err := add(w); err != nil {
			return err
		}
	}
}

// LeafFrom implements verify.Log.
func (s snapshot) LeafFrom(ctx context.Context, index uint64) (audit.StoredLeaf, bool, error) {
	return verify.ScanLeaf(s.tx.QueryRowContext(ctx, verify.LeafFromSQL, int64(index)), index)
}

// CheckpointBeyond implements verify.Log.
func (s snapshot) CheckpointBeyond(ctx context.Context, size uint64) (verify.StoredCheckpoint, bool, error) {
	return verify.ScanCheckpoint(s.tx.QueryRowContext(ctx, verify.CheckpointBeyondSQL, int64(size)), size)
}
