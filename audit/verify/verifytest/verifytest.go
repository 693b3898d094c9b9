// Package verifytest makes large, valid logs quickly, for the benchmarks
// of package verify's adapters: the events, their hash chains and the
// Merkle tree's leaves and checkpoints are made in Go, and each store
// writes them in bulk.
package verifytest

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/rfc6962"

	"github.com/resolutionflow/ledgerd/audit"
	"github.com/resolutionflow/ledgerd/eventstore"
	"github.com/resolutionflow/ledgerd/internal/ratiobench"
)

// data is every event's data: the size of a typical handoff event.
var data = json.RawMessage(ratiobench.BaselineEvent)

// metadata is every event's stored metadata.
var metadata = eventstore.Metadata{
	ActorID: "9a1b2c3d-4e5f-4a6b-8c7d-0e1f2a3b4c5d", AccountID: "1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d",
	TeamID: "2b3c4d5e-6f7a-4b8c-9d0e-1f2a3b4c5d6e", Role: "engineer", RequestID: "01JDJ0000000000000000000",
	CorrelationID: "5c6d7e8f-9a0b-4c1d-8e2f-3a4b5c6d7e8f", ClientIP: "192.0.2.10",
}.AppendJSON(nil)

// Log makes n events at positions 1..n, spread over a number of streams
// whose events interleave (stream i has the events at positions i+1,
// i+1+streams, ...), every hash chained as an append would.
type Log struct {
	n, streams, made int
	last             []eventstore.Hash
	start            time.Time
	e                eventstore.Event
}

// NewLog returns a Log of n events over streams streams.
func NewLog(n, streams int) *Log {
	return &Log{
		n: n, streams: streams,
		last:  make([]eventstore.Hash, streams),
		start: eventstore.RecordTime(time.Date(2026, 12, 2, 9, 0, 0, 0, time.UTC)),
	}
}

// Next returns the next event, which the following call reuses; false
// after the last.
func (l *Log) Next() (*eventstore.Event, bool) {
	if l.made == l.n {
		return nil, false
	}
	i, s := l.made, l.made%l.streams
	l.made++
	l.e = eventstore.Event{
		ID:          ulid.Make().String(),
		Type:        "HandoffEscalated",
		Stream:      fmt.Sprintf("session:1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d:%08d", s),
		Version:     int64(i/l.streams + 1),
		Position:    int64(i + 1),
		RecordedAt:  l.start.Add(time.Duration(i) * time.Microsecond),
		Data:        data,
		RawMetadata: metadata,
		PrevHash:    l.last[s],
	}
	l.e.Hash = eventstore.HashEvent(l.e.PrevHash, l.e)
	l.last[s] = l.e.Hash
	return &l.e, true
}

// CheckpointEvery is how many leaves a Tree adds between two checkpoints:
// the sealer's batch.
const CheckpointEvery = audit.DefaultBatchSize

// Tree makes the Merkle tree's rows for a Log's events, as the sealer
// would: a leaf per event, and a checkpoint signed with its key every
// CheckpointEvery leaves and after the last.
type Tree struct {
	key    *audit.Key
	rng    *compact.Range
	Leaves []audit.StoredLeaf
	// Checkpoints are the checkpoints made so far.
	Checkpoints []audit.Checkpoint
}

// NewTree returns an empty tree whose checkpoints key signs.
func NewTree(key *audit.Key) *Tree {
	return &Tree{key: key, rng: (&compact.RangeFactory{Hash: rfc6962.DefaultHasher.HashChildren}).NewEmptyRange(0)}
}

// Add adds the event e as the next leaf, and a checkpoint when the tree
// has CheckpointEvery more leaves, or last is set.
func (t *Tree) Add(e *eventstore.Event, last bool) error {
	leaf := audit.LeafHash(e.Hash[:])
	if err := t.rng.Append(leaf, nil); err != nil {
		return err
	}
	t.Leaves = append(t.Leaves, audit.StoredLeaf{Index: uint64(len(t.Leaves)), Position: e.Position, Hash: leaf})
	if len(t.Leaves)%CheckpointEvery != 0 && !last {
		return nil
	}
	root, err := t.rng.GetRootHash(nil)
	if err != nil {
		return err
	}
	c, err := t.key.Sign(uint64(len(t.Leaves)), root, e.Position, e.RecordedAt)
	if err != nil {
		return err
	}
	t.Checkpoints = append(t.Checkpoints, c)
	return nil
}
