package verify

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"runtime"
	"time"

	"github.com/resolutionflow/ledgerd/eventstore"
)

// Readers is how many goroutines an adapter's Scan reads the log with
// (ScanChunks): one more than there are cores, so that the reading keeps
// the cores busy while the checks run (on two cores three readers
// measured 1.2 times as fast as two), and at most eight.
func Readers() int { return min(8, runtime.GOMAXPROCS(0)+1) }

// A ChunkReader reads chunks of the log for ScanChunks, on one goroutine,
// as of the snapshot every reader shares.
type ChunkReader interface {
	// ReadChunk reads the events of chunk c in position order and passes
	// each to add, which copies it (its slices need stay valid only until
	// add returns). When add fails, ReadChunk returns its error at once:
	// the checks have stopped, the context ended, or the row is not one
	// the checks can take (a Failure).
	ReadChunk(ctx context.Context, c int64, add func(*StoredRow) error) error
	// Close ends the reader's transaction and frees its connection.
	Close()
}

// ScanChunks reads the chunks [0, chunks) of a log with readers
// goroutines, each with a ChunkReader from open: reader r reads chunks r,
// r+readers, .... It calls fn with the rows of every chunk in order, so
// with the log's events in position order, and returns fn's first error
// or the first reader's error in that order: the first failure in
// position order, though a later chunk may have been read before it.
//
// Each reader may have the batches of two chunks (of chunkRows rows) out,
// so memory stays constant whatever the log's size, and a reader can read
// a whole chunk while the checks are still on the chunks before it: with
// fewer, the readers would take turns instead of reading together.
func ScanChunks(ctx context.Context, chunks int64, chunkRows int64, readers int, open func(context.Context) (ChunkReader, error), fn func(*Row) error) error {
	readers = max(1, readers)
	inFlight := max(4, 2*int((chunkRows+BatchRows-1)/BatchRows))
	stop := make(chan struct{})
	full := make([]chan *batch, readers)
	done := make(chan struct{}, readers)
	for r := range full {
		full[r] = make(chan *batch, inFlight)
		free := make(chan *batch, inFlight)
		for range inFlight {
			free <- &batch{}
		}
		go func() {
			defer func() { done <- struct{}{} }()
			readChunks(ctx, open, int64(r), int64(readers), chunks, full[r], free, stop)
		}()
	}
	err := checkChunks(chunks, full, fn)
	close(stop)
	for range readers {
		<-done
	}
	return err
}

// checkChunks hands the rows of every chunk's batches to fn, in order, and
// each batch back to its reader; a reader's error comes after the rows
// read before it.
func checkChunks(chunks int64, full []chan *batch, fn func(*Row) error) error {
	readers := int64(len(full))
	for c := range chunks {
		for {
			b := <-full[c%readers]
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

// errStopped is add's answer once the checks have stopped.
var errStopped = errors.New("the checks have stopped")

// readChunks reads the chunks reader, reader+readers, ... into batches
// from free, sent on full in order, the last of each chunk marked, until
// the chunks end or stop is closed. An error ends the reading: it travels
// in a batch, in its place in the order.
func readChunks(ctx context.Context, open func(context.Context) (ChunkReader, error), reader, readers, chunks int64, full chan<- *batch, free chan *batch, stop <-chan struct{}) {
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
			b.reset(free)
			return b
		case <-stop:
			return nil
		}
	}
	var b *batch
	// add copies a row into b, handing b to the checks first when it is
	// full.
	add := func(row *StoredRow) error {
		if len(b.rows) == BatchRows {
			if err := ctx.Err(); err != nil {
				return fmt.Errorf("read the log: %w", err)
			}
			if !send(b) {
				return errStopped
			}
			if b = take(); b == nil {
				return errStopped
			}
		}
		return b.add(row)
	}
	r, err := open(ctx)
	if err != nil {
		if b := take(); b != nil {
			b.err = err
			send(b)
		}
		return
	}
	defer r.Close()
	for c := reader; c < chunks; c += readers {
		if b = take(); b == nil {
			return
		}
		err := r.ReadChunk(ctx, c, add)
		if errors.Is(err, errStopped) {
			return
		}
		b.last, b.err = true, err
		if !send(b) || err != nil {
			return
		}
	}
}

// StoredRow is an event of the log as a reader reads it, with its leaf and
// the checkpoint that ends at it: its slices are the connection's, valid
// until ChunkReader's add returns.
type StoredRow struct {
	Position, Version                int64
	ID, Stream, Type, Data, Metadata []byte
	RecordedAt                       time.Time
	PrevHash, Hash                   []byte
	// Sealed tells whether the event has a leaf: LeafIndex and LeafHash.
	Sealed    bool
	LeafIndex uint64
	LeafHash  []byte
	// Checkpoint tells whether a stored checkpoint ends at the event's
	// leaf: CheckpointPosition, Root and Note.
	Checkpoint         bool
	CheckpointPosition int64
	Root, Note         []byte
}

// batch is rows a reader copied off its connection (at most BatchRows):
// their bytes in buf, and where each column is in it.
type batch struct {
	buf   []byte
	rows  []batchRow
	out   Row
	cp    StoredCheckpoint
	input []byte // a hash input
	free  chan<- *batch
	last  bool // the chunk's last batch
	err   error
}

// batchRow is an event as a batch holds it.
type batchRow struct {
	position, version           int64
	id, stream, typ, data, meta span
	recordedAt                  time.Time
	prevHash, hash              eventstore.Hash
	computed                    eventstore.Hash // the hash its bytes give (Row.Hash)
	sealed                      bool
	leafIndex                   uint64
	leafHash                    span
	checkpoint                  bool
	cpPosition                  int64
	root, note                  span
}

// span is where a column's bytes are in a batch's buf.
type span struct{ start, end int }

func (b *batch) reset(free chan<- *batch) {
	b.buf, b.rows, b.free, b.last, b.err = b.buf[:0], b.rows[:0], free, false, nil
}

func (b *batch) bytes(sp span) []byte { return b.buf[sp.start:sp.end:sp.end] }

// keep copies col into the batch's buf.
func (b *batch) keep(col []byte) span {
	b.buf = append(b.buf, col...)
	return span{len(b.buf) - len(col), len(b.buf)}
}

// add copies r into the batch and computes the event's hash from its
// bytes, on the reader's goroutine, so that the checks only compare it.
// A stored hash that is not 32 bytes is a Failure.
func (b *batch) add(r *StoredRow) error {
	w := batchRow{position: r.Position, version: r.Version, recordedAt: r.RecordedAt}
	if len(r.PrevHash) != len(w.prevHash) || len(r.Hash) != len(w.hash) {
		return &Failure{Position: r.Position, Stream: string(r.Stream), Reason: "a stored hash is not 32 bytes"}
	}
	copy(w.prevHash[:], r.PrevHash)
	copy(w.hash[:], r.Hash)
	w.id, w.stream, w.typ, w.data, w.meta = b.keep(r.ID), b.keep(r.Stream), b.keep(r.Type), b.keep(r.Data), b.keep(r.Metadata)
	w.sealed, w.leafIndex, w.leafHash = r.Sealed, r.LeafIndex, b.keep(r.LeafHash)
	if r.Checkpoint {
		w.checkpoint, w.cpPosition, w.root, w.note = true, r.CheckpointPosition, b.keep(r.Root), b.keep(r.Note)
	}
	b.event(&w, &b.out.Event)
	b.input = eventstore.AppendHashInput(b.input[:0], w.prevHash, &b.out.Event)
	w.computed = sha256.Sum256(b.input)
	b.rows = append(b.rows, w)
	return nil
}

// event sets e to the event of row w, sharing the batch's bytes.
func (b *batch) event(w *batchRow, e *eventstore.Event) {
	e.Position, e.Version, e.RecordedAt, e.PrevHash, e.Hash = w.position, w.version, w.recordedAt, w.prevHash, w.hash
	e.ID, e.Stream, e.Type = BorrowString(b.bytes(w.id)), BorrowString(b.bytes(w.stream)), BorrowString(b.bytes(w.typ))
	e.Data, e.RawMetadata = b.bytes(w.data), b.bytes(w.meta)
}

// row returns the batch's row i as a Row, valid until the next call.
func (b *batch) row(i int) *Row {
	w, r := &b.rows[i], &b.out
	b.event(w, &r.Event)
	r.Sealed, r.LeafIndex, r.LeafHash, r.Checkpoint, r.Hash = w.sealed, w.leafIndex, b.bytes(w.leafHash), nil, &w.computed
	if w.checkpoint {
		b.cp = StoredCheckpoint{Size: w.leafIndex + 1, Position: w.cpPosition, Root: b.bytes(w.root), Note: b.bytes(w.note)}
		r.Checkpoint = &b.cp
	}
	return r
}

// ChunkTree is the leaves of a chunk's positions and the checkpoints that
// end at them, which a ChunkReader reads before the chunk's events and
// puts beside them (Attach): what a join of the events, leaves and
// checkpoints by position and size gives, without two index lookups per
// event.
type ChunkTree struct {
	leaves      []chunkLeaf
	next        int // the first leaf Attach has not passed
	checkpoints map[int64]chunkCheckpoint
	buf         []byte // the leaves' and checkpoints' bytes
	first, last int64  // the lowest and highest leaf index, -1 for none
}

// chunkLeaf is a leaf of the chunk.
type chunkLeaf struct {
	index, position int64
	hash            span
}

// chunkCheckpoint is a checkpoint that ends at a leaf of the chunk.
type chunkCheckpoint struct {
	position   int64
	root, note span
}

// Reset empties the tree for the next chunk.
func (t *ChunkTree) Reset() {
	t.leaves, t.next, t.buf, t.first, t.last = t.leaves[:0], 0, t.buf[:0], -1, -1
	if t.checkpoints == nil {
		t.checkpoints = map[int64]chunkCheckpoint{}
	}
	clear(t.checkpoints)
}

// AddLeaf adds a leaf of the chunk; the leaves come in position order.
func (t *ChunkTree) AddLeaf(index, position int64, hash []byte) {
	t.leaves = append(t.leaves, chunkLeaf{index: index, position: position, hash: t.keep(hash)})
	if t.first < 0 || index < t.first {
		t.first = index
	}
	t.last = max(t.last, index)
}

// Sizes returns the range of checkpoint sizes, from and to inclusive,
// that end at the chunk's leaves; false when the chunk has no leaf.
func (t *ChunkTree) Sizes() (from, to int64, ok bool) {
	return t.first + 1, t.last + 1, t.first >= 0
}

// AddCheckpoint adds the stored checkpoint of the given size.
func (t *ChunkTree) AddCheckpoint(size, position int64, root, note []byte) {
	t.checkpoints[size] = chunkCheckpoint{position: position, root: t.keep(root), note: t.keep(note)}
}

// Attach sets r's leaf, and the checkpoint that ends at it, from the
// chunk's leaf at r's position, if any; rows come in position order.
func (t *ChunkTree) Attach(r *StoredRow) {
	for t.next < len(t.leaves) && t.leaves[t.next].position < r.Position {
		t.next++
	}
	if t.next == len(t.leaves) || t.leaves[t.next].position != r.Position {
		return
	}
	l := t.leaves[t.next]
	r.Sealed, r.LeafIndex, r.LeafHash = true, uint64(l.index), t.kept(l.hash)
	if cp, ok := t.checkpoints[l.index+1]; ok {
		r.Checkpoint, r.CheckpointPosition, r.Root, r.Note = true, cp.position, t.kept(cp.root), t.kept(cp.note)
	}
}

func (t *ChunkTree) keep(col []byte) span {
	t.buf = append(t.buf, col...)
	return span{len(t.buf) - len(col), len(t.buf)}
}

func (t *ChunkTree) kept(sp span) []byte { return t.buf[sp.start:sp.end:sp.end] }
