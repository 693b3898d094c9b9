// Package verifytest makes large, valid logs quickly, for the benchmarks
// of package verify's adapters: the events and their hash chains are made
// in Go, and each store writes them in bulk.
package verifytest

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/oklog/ulid/v2"

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
