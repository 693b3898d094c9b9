// Package verify checks a ledger's stored log end to end, as an auditor
// would: it reads every event once, in position order, and checks each
// stream's hash chain (every event's stored hash recomputes from its row,
// its prev_hash is its stream predecessor's hash, versions run from 1
// without a gap). The stores' adapters (pgverify, sqliteverify) read one
// consistent snapshot of the database; docs/audit-verify.md says what is
// and is not detected.
package verify

import (
	"context"
	"crypto/sha256"
	"fmt"
	"strings"
	"unsafe"

	"github.com/resolutionflow/ledgerd/eventstore"
)

// Failure is an alteration found in the log: the first one, in position
// order. It is the error Verify returns when the log is not intact.
type Failure struct {
	// Position is the position of the first event found altered, or
	// where an event is missing; 0 when the failure is not about an event.
	Position int64
	// Stream is the event's stream, when known.
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

// Row is one event of the log as an adapter reads it, in position order.
// Its strings and byte slices may share the adapter's read buffer: they
// are valid until the next row only, and whatever keeps one clones it.
type Row struct {
	Event eventstore.Event
}

// BorrowString returns b as a string that shares b's bytes, without a
// copy: for an adapter's Row, valid while b's bytes are.
func BorrowString(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }

// Log is a snapshot of a ledger's stored log.
type Log interface {
	// Scan calls fn with every event of the log in position order; it
	// reads in constant memory, and may reuse the row between calls. It
	// stops at the first error fn returns, and returns it.
	Scan(ctx context.Context, fn func(*Row) error) error
}

// Options tune Verify.
type Options struct {
	// Progress, when set, is called with the count of events checked
	// every ProgressEvery events, and once at the end.
	Progress func(events int64)
}

// ProgressEvery is how many events pass between two calls of
// Options.Progress.
const ProgressEvery = 1 << 16

// Result counts what an intact log holds.
type Result struct {
	Events  int64
	Streams int
}

// Verify checks log. It returns a *Failure when the log is not intact, and
// another error when it cannot be read.
func Verify(ctx context.Context, log Log, opts Options) (Result, error) {
	c := newChains()
	var events int64
	err := log.Scan(ctx, func(r *Row) error {
		if err := c.check(&r.Event); err != nil {
			return err
		}
		events++
		if opts.Progress != nil && events%ProgressEvery == 0 {
			opts.Progress(events)
		}
		return nil
	})
	if err != nil {
		return Result{}, err
	}
	if opts.Progress != nil {
		opts.Progress(events)
	}
	return Result{Events: events, Streams: len(c.last)}, nil
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

// check checks e against its stream's newest event seen before it.
func (c *chains) check(e *eventstore.Event) error {
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
	c.buf = eventstore.AppendHashInput(c.buf[:0], e.PrevHash, e)
	if h := eventstore.Hash(sha256.Sum256(c.buf)); h != e.Hash {
		return fail("the stored hash %s is not the event's hash %s: the event was changed", e.Hash, h)
	}
	if seen {
		*last = link{version: e.Version, hash: e.Hash}
	} else {
		c.last[strings.Clone(e.Stream)] = &link{version: e.Version, hash: e.Hash}
	}
	return nil
}
