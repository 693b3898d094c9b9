// Package sqliteverify reads an embedded (SQLite) ledger's log for package
// verify, as of one instant.
//
// Reading a row through the pure-Go SQLite driver costs several times what
// checking it does, so the log is read by several goroutines at once, each
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
	"runtime"
	"time"

	"github.com/resolutionflow/ledgerd/audit"
	"github.com/resolutionflow/ledgerd/audit/verify"
	"github.com/resolutionflow/ledgerd/eventstore"
)

// Verify checks the log of the SQLite database db (verify.Verify), as of
// one instant. db is a pool of read connections: the readers take
// several of them.
func Verify(ctx context.Context, db *sql.DB, opts verify.Options) (verify.Result, error) {
	tx, err := db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return verify.Result{}, fmt.Errorf("begin the verification's snapshot: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // read only: nothing to undo
	s := snapshot{db: db, tx: tx, readers: readersFor(), chunk: chunkPositions}
	if err := tx.QueryRowContext(ctx, boundsSQL).Scan(&s.bounds.first, &s.bounds.last, &s.bounds.leaves, &s.bounds.size); err != nil {
		return verify.Result{}, fmt.Errorf("read the log's bounds: %w", err)
	}
	return verify.Verify(ctx, s, opts)
}

// readersFor tells how many goroutines read the log at once: one per
// core, and at least two so that reading overlaps the checks.
var readersFor = func() int { return min(4, max(2, runtime.GOMAXPROCS(0))) }

// chunkPositions is how many positions a reader's query covers.
var chunkPositions int64 = 1 << 14

// snapshot is the database as the transaction tx sees it, which the
// readers' transactions on db reproduce within bounds.
type snapshot struct {
	db      *sql.DB
	tx      *sql.Tx
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

// chunkSQL reads the events of a range of positions, each with its leaf
// and the checkpoint that ends at it, if any, within the snapshot's
// bounds.
const chunkSQL = `SELECT e.position, e.id, e.stream, e.version, e.type, e.data, e.metadata, e.recorded_at, e.prev_hash, e.hash,
    l.leaf_index, l.hash, c.position, c.root, c.note
FROM events e
LEFT JOIN merkle_leaves l ON l.position = e.position AND l.leaf_index < ?
LEFT JOIN merkle_checkpoints c ON c.size = l.leaf_index + 1 AND c.size <= ?
WHERE e.position >= ? AND e.position < ?
ORDER BY e.position`

// Scan streams the log. Reader r reads chunks r, r+readers, ...; the
// checks take the chunks' batches in order. Each reader has at most
// verify.BatchesInFlight batches out, so memory stays constant whatever the
// log's size.
func (s snapshot) Scan(ctx context.Context, fn func(*verify.Row) error) error {
	chunks := (s.bounds.last - s.bounds.first + s.chunk) / s.chunk
	stop := make(chan struct{})
	full := make([]chan *batch, s.readers)
	done := make(chan struct{}, s.readers)
	for r := range full {
		full[r] = make(chan *batch, verify.BatchesInFlight)
		free := make(chan *batch, verify.BatchesInFlight)
		for range verify.BatchesInFlight {
			free <- &batch{}
		}
		go func() {
			defer func() { done <- struct{}{} }()
			s.read(ctx, int64(r), chunks, full[r], free, stop)
		}()
	}
	err := s.check(chunks, full, fn)
	close(stop)
	for range s.readers {
		<-done
	}
	return err
}

// check hands the rows of every chunk's batches to fn, in order, and each
// batch back to its reader; a reader's error comes after the rows read
// before it, so the first failure in position order is the one returned.
func (s snapshot) check(chunks int64, full []chan *batch, fn func(*verify.Row) error) error {
	for c := range chunks {
		for {
			b := <-full[c%int64(s.readers)]
			for i := range b.rows {
				if err := fn(b.row(i)); err != nil {
					return err
				}
			}
			if b.err != nil {
				return b.err
			}
			last := b.last
			b.free <- b
			if last {
				break
			}
		}
	}
	return nil
}

// batch is rows copied off a connection: their bytes in buf, and where
// each column is in it.
type batch struct {
	buf  []byte
	rows []row
	out  verify.Row
	cp   verify.StoredCheckpoint
	free chan<- *batch
	last bool // the chunk's last batch
	err  error
}

// row is an event of the log as a batch holds it.
type row struct {
	position, version           int64
	id, stream, typ, data, meta span
	recordedAt                  time.Time
	prevHash, hash              eventstore.Hash
	sealed                      bool
	leafIndex                   uint64
	leafHash                    span
	checkpoint                  bool
	cpPosition                  int64
	root, note                  span
}

// span is where a column's bytes are in a batch's buf.
type span struct{ start, end int }

func (b *batch) bytes(sp span) []byte { return b.buf[sp.start:sp.end:sp.end] }

// add copies col into the batch's buf.
func (b *batch) add(col []byte) span {
	b.buf = append(b.buf, col...)
	return span{len(b.buf) - len(col), len(b.buf)}
}

// row returns the batch's row i as a verify.Row, valid until the next
// call.
func (b *batch) row(i int) *verify.Row {
	w, r := &b.rows[i], &b.out
	e := &r.Event
	e.Position, e.Version, e.RecordedAt, e.PrevHash, e.Hash = w.position, w.version, w.recordedAt, w.prevHash, w.hash
	e.ID, e.Stream, e.Type = verify.BorrowString(b.bytes(w.id)), verify.BorrowString(b.bytes(w.stream)), verify.BorrowString(b.bytes(w.typ))
	e.Data, e.RawMetadata = b.bytes(w.data), b.bytes(w.meta)
	r.Sealed, r.LeafIndex, r.LeafHash, r.Checkpoint = w.sealed, w.leafIndex, b.bytes(w.leafHash), nil
	if w.checkpoint {
		b.cp = verify.StoredCheckpoint{Size: w.leafIndex + 1, Position: w.cpPosition, Root: b.bytes(w.root), Note: b.bytes(w.note)}
		r.Checkpoint = &b.cp
	}
	return r
}

// read reads the reader's chunks (reader, reader+s.readers, ...) into
// batches from free, sent on full in order, the last of each chunk
// marked, until the chunks end or stop is closed. An error ends the
// reading: it travels in a batch, in its place in the order.
func (s snapshot) read(ctx context.Context, reader, chunks int64, full chan<- *batch, free chan *batch, stop <-chan struct{}) {
	send := func(b *batch) bool {
		select {
		case full <- b:
			return true
		case <-stop:
			return false
		}
	}
	take := func() *batch {
		select {
		case b := <-free:
			b.buf, b.rows, b.free, b.last, b.err = b.buf[:0], b.rows[:0], free, false, nil
			return b
		case <-stop:
			return nil
		}
	}
	tx, end, err := s.begin(ctx)
	if err != nil {
		if b := take(); b != nil {
			b.err = err
			send(b)
		}
		return
	}
	defer end()
	for c := reader; c < chunks; c += int64(s.readers) {
		b := take()
		if b == nil {
			return
		}
		lo := s.bounds.first + c*s.chunk
		b, err := s.readChunk(ctx, tx, lo, min(lo+s.chunk, s.bounds.last+1), b, take, send)
		if b == nil {
			return
		}
		b.last, b.err = true, err
		if !send(b) || err != nil {
			return
		}
	}
}

// mmapSize is how much of the file a reader maps into memory: its pages
// are then read without a system call and a copy each.
const mmapSize = 1 << 30

// begin begins a reader's transaction on a connection of its own, which
// maps the file into memory while it reads; end ends both.
func (s snapshot) begin(ctx context.Context) (*sql.Tx, func(), error) {
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("open a reader's connection: %w", err)
	}
	if _, err := conn.ExecContext(ctx, fmt.Sprintf(`PRAGMA mmap_size = %d`, mmapSize)); err != nil {
		return nil, nil, errors.Join(fmt.Errorf("map the log into memory: %w", err), conn.Close())
	}
	release := func() {
		// The connection goes back to the store's pool as it came.
		_, _ = conn.ExecContext(context.WithoutCancel(ctx), `PRAGMA mmap_size = 0`)
		_ = conn.Close()
	}
	tx, err := conn.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		release()
		return nil, nil, fmt.Errorf("begin a reader's snapshot: %w", err)
	}
	return tx, func() { _ = tx.Rollback(); release() }, nil
}

// readChunk reads the events at positions [lo, hi) into b and batches
// taken after it, sending every full one; it returns the last batch,
// unsent, or nil when stopped.
func (s snapshot) readChunk(ctx context.Context, tx *sql.Tx, lo, hi int64, b *batch, take func() *batch, send func(*batch) bool) (*batch, error) {
	rows, err := tx.QueryContext(ctx, chunkSQL, s.bounds.leaves, s.bounds.size, lo, hi)
	if err != nil {
		return b, fmt.Errorf("read the log: %w", err)
	}
	defer rows.Close()
	var (
		id, stream, typeName  sql.RawBytes
		data, meta, at        sql.RawBytes
		prevHash, hash        sql.RawBytes
		leafHash, root, note  sql.RawBytes
		leafIndex, cpPosition sql.NullInt64
	)
	for rows.Next() {
		if len(b.rows) == verify.BatchRows {
			if !send(b) {
				return nil, nil
			}
			if b = take(); b == nil {
				return nil, nil
			}
		}
		var w row
		if err := rows.Scan(&w.position, &id, &stream, &w.version, &typeName, &data, &meta, &at, &prevHash, &hash,
			&leafIndex, &leafHash, &cpPosition, &root, &note); err != nil {
			return b, fmt.Errorf("read the log: %w", err)
		}
		if w.recordedAt, err = time.Parse(eventstore.TimeLayout, verify.BorrowString(at)); err != nil {
			return b, &verify.Failure{Position: w.position, Stream: string(stream), Reason: fmt.Sprintf("recorded_at %q is not a recorded time", at)}
		}
		if len(prevHash) != len(w.prevHash) || len(hash) != len(w.hash) {
			return b, &verify.Failure{Position: w.position, Stream: string(stream), Reason: "a stored hash is not 32 bytes"}
		}
		copy(w.prevHash[:], prevHash)
		copy(w.hash[:], hash)
		w.id, w.stream, w.typ, w.data, w.meta = b.add(id), b.add(stream), b.add(typeName), b.add(data), b.add(meta)
		w.sealed, w.leafIndex, w.leafHash = leafIndex.Valid, uint64(leafIndex.Int64), b.add(leafHash)
		if cpPosition.Valid {
			w.checkpoint, w.cpPosition, w.root, w.note = true, cpPosition.Int64, b.add(root), b.add(note)
		}
		b.rows = append(b.rows, w)
	}
	if err := rows.Err(); err != nil {
		return b, fmt.Errorf("read the log: %w", err)
	}
	return b, nil
}

// LeafFrom implements verify.Log.
func (s snapshot) LeafFrom(ctx context.Context, index uint64) (audit.StoredLeaf, bool, error) {
	return verify.ScanLeaf(s.tx.QueryRowContext(ctx, verify.LeafFromSQL, int64(index)), index)
}

// CheckpointBeyond implements verify.Log.
func (s snapshot) CheckpointBeyond(ctx context.Context, size uint64) (verify.StoredCheckpoint, bool, error) {
	return verify.ScanCheckpoint(s.tx.QueryRowContext(ctx, verify.CheckpointBeyondSQL, int64(size)), size)
}
