// Package verify checks a ledger's stored log end to end, as an auditor
// would. It reads every event once, in position order, and checks
//
//   - each stream's hash chain: every event's stored hash recomputes from
//     its row, its prev_hash is its stream predecessor's hash, and versions
//     run from 1 without a gap;
//   - the Merkle tree (package audit): the events that have leaves are a
//     prefix of the log, leaf i is the i-th event, its stored leaf hash is
//     the RFC 6962 leaf hash of the event's hash, and no leaf is left
//     without its event;
//   - every stored checkpoint: its root is the root of the tree recomputed
//     from the events' hashes at its size, its position is its last leaf's,
//     and its signed note verifies with the ledger's public key and says the
//     same;
//   - optionally, a head or a checkpoint kept outside the database: the
//     log is consistent with it (it only grew since).
//
// The stores' adapters (pgverify, sqliteverify) read one consistent
// snapshot of the database; docs/audit-verify.md says what is and is not
// detected.
package verify

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"unsafe"

	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/rfc6962"

	"github.com/resolutionflow/ledgerd/audit"
	"github.com/resolutionflow/ledgerd/eventstore"
)

// Failure is an alteration found in the log: the first one, in position
// order. It is the error Verify returns when the log is not intact.
type Failure struct {
	// Position is the position of the first event found altered, or
	// where an event is missing; 0 when the failure is not about an event.
	Position int64
	// Stream is the event's stream, when known (not for an event deleted).
	Stream string
	// Reason says what does not hold.
	Reason string
}

func (f *Failure) Error() string {
	switch {
	case f.Position == 0:
		return "log not intact: " + f.Reason
	case f.Stream == "":
		return fmt.Sprintf("log not intact at position %d: %s", f.Position, f.Reason)
	}
	return fmt.Sprintf("log not intact at position %d, stream %q: %s", f.Position, f.Stream, f.Reason)
}

// Row is one event of the log as an adapter reads it, in position order,
// with its leaf and the checkpoint that ends at it, when stored. Its
// strings and byte slices may share the adapter's read buffer: they are
// valid until the next row only, and whatever keeps one clones it.
type Row struct {
	Event eventstore.Event
	// Sealed tells whether the event has a leaf: LeafIndex and LeafHash.
	Sealed    bool
	LeafIndex uint64
	LeafHash  []byte
	// Checkpoint, when not nil, is the stored checkpoint whose last leaf
	// is this event's (its size is LeafIndex+1).
	Checkpoint *StoredCheckpoint
	// Hash, when not nil, is the hash of the event's stored bytes after
	// its stored prev_hash (eventstore.HashEvent(Event.PrevHash, Event)),
	// which an adapter may compute on its own goroutines, while the checks
	// run on earlier rows; when nil, the checks compute it.
	Hash *eventstore.Hash
}

// StoredCheckpoint is a row of merkle_checkpoints.
type StoredCheckpoint struct {
	Size     uint64
	Position int64
	Root     []byte
	Note     []byte
}

// BorrowString returns b as a string that shares b's bytes, without a
// copy: for an adapter's Row, valid while b's bytes are.
func BorrowString(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }

// Log is a snapshot of a ledger's stored log and Merkle tree.
type Log interface {
	// Scan calls fn with every event of the log in position order, with
	// its leaf and checkpoint; it reads in constant memory, and may reuse
	// the row between calls. It stops at the first error fn returns, and
	// returns it.
	Scan(ctx context.Context, fn func(*Row) error) error
	// LeafFrom returns the stored leaf of the lowest index at or above
	// index; false when there is none.
	LeafFrom(ctx context.Context, index uint64) (audit.StoredLeaf, bool, error)
	// CheckpointBeyond returns the stored checkpoint of the lowest size
	// above size; false when there is none.
	CheckpointBeyond(ctx context.Context, size uint64) (StoredCheckpoint, bool, error)
}

// Options tune Verify.
type Options struct {
	// Key is the ledger's public verifier key (`ledgerd audit key`),
	// which every stored checkpoint's note must verify with.
	Key string
	// Head, when set, is a root hash recorded outside the database
	// earlier (the hash of GET /audit/head): a stored checkpoint must
	// have it, and the tree recomputed at that checkpoint's size too.
	Head []byte
	// Checkpoint, when set, is a signed checkpoint recorded outside the
	// database earlier: it must verify with Key, and the tree recomputed
	// at its size must have its root.
	Checkpoint []byte
	// Progress, when set, is called with the count of events checked
	// every ProgressEvery events, and once at the end.
	Progress func(events int64)
}

// BatchRows is how many rows a Batch holds: a reader hands the checks
// the log in batches of it (ScanChunks).
const BatchRows = 1024

// ProgressEvery is how many events pass between two calls of
// Options.Progress.
const ProgressEvery = 1 << 16

// Result counts what an intact log holds.
type Result struct {
	Events      int64
	Streams     int
	Leaves      uint64
	Checkpoints int
	// Outside is the size of the tree Options.Head or Options.Checkpoint
	// describes; 0 without them.
	Outside uint64
}

// Verify checks log. It returns a *Failure when the log is not intact, and
// another error when it cannot be read or opts are not valid.
func Verify(ctx context.Context, log Log, opts Options) (Result, error) {
	c := newChains()
	t, err := newTree(opts)
	if err != nil {
		return Result{}, err
	}
	var events int64
	err = log.Scan(ctx, func(r *Row) error {
		if err := c.check(&r.Event, r.Hash); err != nil {
			return err
		}
		if err := t.add(r); err != nil {
			return err
		}
		events++
		if opts.Progress != nil && events%ProgressEvery == 0 {
			opts.Progress(events)
		}
		return nil
	})
	var missing *missingLeaf
	if errors.As(err, &missing) {
		return Result{}, deleted(ctx, log, missing.index)
	}
	if err != nil {
		return Result{}, err
	}
	if opts.Progress != nil {
		opts.Progress(events)
	}
	if err := t.finish(ctx, log); err != nil {
		return Result{}, err
	}
	return Result{Events: events, Streams: len(c.last), Leaves: t.size, Checkpoints: t.checkpoints, Outside: t.outside.size}, nil
}

// link is what a stream's next event must chain to: the version and hash
// of its newest event seen.
type link struct {
	version int64
	hash    eventstore.Hash
}

// chains checks each stream's hash chain as the log's events arrive in
// position order, which is each stream's version order. It keeps one link
// per stream: its memory follows the count of streams, not of events.
type chains struct {
	// last is keyed by clones of the rows' stream names, and updated
	// through its pointers: an assignment to a map would store the key
	// again, the row's borrowed string.
	last map[string]*link
	// buf holds an event's hash input, reused from event to event.
	buf []byte
}

func newChains() *chains { return &chains{last: make(map[string]*link)} }

// check checks e against its stream's newest event seen before it; hash,
// when not nil, is e's hash as its bytes give it (Row.Hash).
func (c *chains) check(e *eventstore.Event, hash *eventstore.Hash) error {
	fail := func(format string, args ...any) error {
		return &Failure{Position: e.Position, Stream: strings.Clone(e.Stream), Reason: fmt.Sprintf(format, args...)}
	}
	var prev link
	last, seen := c.last[e.Stream]
	if seen {
		prev = *last
	}
	switch {
	case e.Version != prev.version+1 && !seen:
		return fail("the stream starts at version %d, not 1: its first events are missing", e.Version)
	case e.Version != prev.version+1:
		return fail("version %d follows version %d: events are missing or out of order", e.Version, prev.version)
	case e.PrevHash != prev.hash:
		return fail("prev_hash %s is not the hash %s of the stream's previous event", e.PrevHash, prev.hash)
	}
	var h eventstore.Hash
	if hash != nil {
		h = *hash
	} else {
		c.buf = eventstore.AppendHashInput(c.buf[:0], e.PrevHash, e)
		h = sha256.Sum256(c.buf)
	}
	if h != e.Hash {
		return fail("the stored hash %s is not the event's hash %s: the event was changed", e.Hash, h)
	}
	if seen {
		*last = link{version: e.Version, hash: e.Hash}
	} else {
		c.last[strings.Clone(e.Stream)] = &link{version: e.Version, hash: e.Hash}
	}
	return nil
}

// rangeFactory builds compact ranges with the RFC 6962 node hash, as the
// sealer does.
var rangeFactory = &compact.RangeFactory{Hash: nodeHash}

// leafHash and nodeHash are rfc6962.DefaultHasher's HashLeaf and
// HashChildren, SHA-256(0x00 || event hash) and SHA-256(0x01 || left ||
// right), with one allocation rather than three: a million events make
// two million of them.
func leafHash(eventHash *eventstore.Hash) []byte {
	var in [1 + sha256.Size]byte
	in[0] = rfc6962.RFC6962LeafHashPrefix
	copy(in[1:], eventHash[:])
	h := sha256.Sum256(in[:])
	return h[:]
}

func nodeHash(left, right []byte) []byte {
	var in [1 + 2*sha256.Size]byte
	in[0] = rfc6962.RFC6962NodeHashPrefix
	copy(in[1:], left)
	copy(in[1+sha256.Size:], right)
	h := sha256.Sum256(in[:])
	return h[:]
}

// outside is the tree a head or checkpoint kept outside describes: its
// size, when known, and its root.
type outside struct {
	name string
	size uint64
	root []byte
	// found is set once the recomputed tree reached the size.
	found bool
}

// reaches tells whether a tree of size leaves, whose stored checkpoint at
// that size is c (nil when none), has the outside tree's size: the one
// the outside checkpoint says or, for a head, that of the stored
// checkpoint with its root.
func (o *outside) reaches(size uint64, c *StoredCheckpoint) bool {
	if o.size != 0 {
		return size == o.size
	}
	return c != nil && bytes.Equal(c.Root, o.root)
}

// tree recomputes the Merkle tree from the events' hashes, in position
// order, and checks the stored leaves and checkpoints against it.
type tree struct {
	key string
	rng *compact.Range
	// size is the count of leaves seen: the events sealed so far.
	size        uint64
	checkpoints int
	// unsealed is the first event without a leaf, if any: every event
	// after it must have none either.
	unsealed error
	outside  outside
}

func newTree(opts Options) (*tree, error) {
	t := &tree{key: opts.Key, rng: rangeFactory.NewEmptyRange(0)}
	switch {
	case opts.Head != nil && opts.Checkpoint != nil:
		return nil, errors.New("give a head or a checkpoint, not both")
	case opts.Head != nil:
		t.outside = outside{name: "the head " + hex.EncodeToString(opts.Head), root: opts.Head}
	case opts.Checkpoint != nil:
		c, err := audit.OpenCheckpoint(opts.Checkpoint, opts.Key)
		if err != nil {
			return nil, fmt.Errorf("the checkpoint kept outside: %w", err)
		}
		t.outside = outside{name: fmt.Sprintf("the checkpoint of size %d kept outside", c.Size), size: c.Size, root: c.Root}
	}
	return t, nil
}

// missingLeaf stops a scan at a leaf whose event is not in the log, for
// Verify to name the event's position.
type missingLeaf struct{ index uint64 }

func (m *missingLeaf) Error() string { return fmt.Sprintf("leaf %d has no event", m.index) }

// add checks r's leaf and checkpoint and adds the event to the tree.
func (t *tree) add(r *Row) error {
	e := &r.Event
	fail := func(format string, args ...any) error {
		return &Failure{Position: e.Position, Stream: strings.Clone(e.Stream), Reason: fmt.Sprintf(format, args...)}
	}
	if !r.Sealed {
		if t.unsealed == nil {
			t.unsealed = fail("the event is not in the Merkle tree, though events after it are: it was inserted, or its leaf removed")
		}
		return nil
	}
	switch {
	case t.unsealed != nil:
		return t.unsealed
	case r.LeafIndex > t.size:
		return &missingLeaf{index: t.size}
	case r.LeafIndex < t.size:
		return fail("its leaf index is %d, but %d leaves come before it", r.LeafIndex, t.size)
	}
	leaf := leafHash(&e.Hash)
	if !bytes.Equal(leaf, r.LeafHash) {
		return fail("its stored leaf hash %x is not the leaf hash %x of the event's hash", r.LeafHash, leaf)
	}
	if err := t.rng.Append(leaf, nil); err != nil {
		return fmt.Errorf("recompute the tree: %w", err)
	}
	t.size++
	if r.Checkpoint != nil {
		if err := t.checkpoint(r.Checkpoint, e.Position); err != nil {
			return err
		}
	}
	if t.outside.root != nil && !t.outside.found && t.outside.reaches(t.size, r.Checkpoint) {
		return t.matchOutside()
	}
	return nil
}

// checkpoint checks the stored checkpoint c, whose last leaf is the event
// at position, against the tree recomputed up to it.
func (t *tree) checkpoint(c *StoredCheckpoint, position int64) error {
	fail := func(format string, args ...any) error {
		return &Failure{Position: position, Reason: fmt.Sprintf("the checkpoint of size %d: ", c.Size) + fmt.Sprintf(format, args...)}
	}
	root, err := t.rng.GetRootHash(nil)
	if err != nil {
		return fmt.Errorf("recompute the root of size %d: %w", t.size, err)
	}
	switch {
	case c.Position != position:
		return fail("its position is %d, its last leaf's event is at %d", c.Position, position)
	case !bytes.Equal(c.Root, root):
		return fail("its root %x is not the root %x recomputed from the log", c.Root, root)
	}
	signed, err := audit.OpenCheckpoint(c.Note, t.key)
	if err != nil {
		return fail("its note does not verify with the ledger's key: %v", err)
	}
	if signed.Size != c.Size || signed.Position != c.Position || !bytes.Equal(signed.Root, c.Root) {
		return fail("its note says size %d, position %d, root %x", signed.Size, signed.Position, signed.Root)
	}
	t.checkpoints++
	return nil
}

// matchOutside checks the recomputed tree, now of the outside tree's
// size, against its root.
func (t *tree) matchOutside() error {
	root, err := t.rng.GetRootHash(nil)
	if err != nil {
		return fmt.Errorf("recompute the root of size %d: %w", t.size, err)
	}
	if !bytes.Equal(root, t.outside.root) {
		return &Failure{Reason: fmt.Sprintf("%s: the log recomputes to root %x at size %d, not %x: the log was rewritten since", t.outside.name, root, t.size, t.outside.root)}
	}
	t.outside.size, t.outside.found = t.size, true
	return nil
}

// finish checks, after the scan, that no leaf or checkpoint is left
// beyond the events, and that the outside tree was met.
func (t *tree) finish(ctx context.Context, log Log) error {
	if _, ok, err := log.LeafFrom(ctx, t.size); err != nil {
		return err
	} else if ok {
		return deleted(ctx, log, t.size)
	}
	c, ok, err := log.CheckpointBeyond(ctx, t.size)
	switch {
	case err != nil:
		return err
	case ok:
		return &Failure{Position: c.Position, Reason: fmt.Sprintf("the checkpoint of size %d covers more leaves than the tree's %d", c.Size, t.size)}
	case t.outside.root != nil && !t.outside.found && t.outside.size == 0:
		return &Failure{Reason: fmt.Sprintf("%s is the root of no checkpoint of this log: the log was rewritten or cut since", t.outside.name)}
	case t.outside.root != nil && !t.outside.found:
		return &Failure{Reason: fmt.Sprintf("%s: the log holds only %d sealed events: events were removed since", t.outside.name, t.size)}
	}
	return nil
}

// deleted names the event of the leaf at index or after, which is not in
// the log.
func deleted(ctx context.Context, log Log, index uint64) error {
	leaf, ok, err := log.LeafFrom(ctx, index)
	switch {
	case err != nil:
		return err
	case !ok:
		return &Failure{Reason: fmt.Sprintf("leaf %d is missing from the tree", index)}
	}
	return &Failure{Position: leaf.Position, Reason: fmt.Sprintf("the event of leaf %d is not in the log: it was deleted", leaf.Index)}
}

// RowScanner is one row a store's query returns, as *sql.Row and pgx.Row are.
type RowScanner interface{ Scan(dest ...any) error }

// The queries behind Log.LeafFrom and Log.CheckpointBeyond, for both
// stores (SQLite takes `$1` as the first argument too).
const (
	LeafFromSQL         = `SELECT leaf_index, position, hash FROM merkle_leaves WHERE leaf_index >= $1 ORDER BY leaf_index LIMIT 1`
	CheckpointBeyondSQL = `SELECT size, position, root, note FROM merkle_checkpoints WHERE size > $1 ORDER BY size LIMIT 1`
)

// ScanLeaf reads the answer of LeafFromSQL for index, as Log.LeafFrom
// returns it.
func ScanLeaf(row RowScanner, index uint64) (audit.StoredLeaf, bool, error) {
	var (
		l     audit.StoredLeaf
		found int64
	)
	err := row.Scan(&found, &l.Position, &l.Hash)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return l, false, nil
	case err != nil:
		return l, false, fmt.Errorf("read the leaves from %d: %w", index, err)
	}
	l.Index = uint64(found)
	return l, true, nil
}

// ScanCheckpoint reads the answer of CheckpointBeyondSQL for size, as
// Log.CheckpointBeyond returns it.
func ScanCheckpoint(row RowScanner, size uint64) (StoredCheckpoint, bool, error) {
	var (
		c     StoredCheckpoint
		found int64
	)
	err := row.Scan(&found, &c.Position, &c.Root, &c.Note)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return c, false, nil
	case err != nil:
		return c, false, fmt.Errorf("read the checkpoints beyond %d: %w", size, err)
	}
	c.Size = uint64(found)
	return c, true, nil
}
