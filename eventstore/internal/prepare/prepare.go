// Package prepare holds what the event stores do to an append before they
// write it: it is theirs, not part of the event store's contract.
package prepare

import (
	"fmt"

	"github.com/oklog/ulid/v2"

	"github.com/resolutionflow/ledgerd/eventstore"
)

// Events is what every store does before it writes an append of events
// to stream expecting expected. It refuses an expected version below Any
// (eventstore.ErrInvalidExpectedVersion) and returns the events as the
// store records them, before it gives them versions, positions, times and
// hashes, with their metadata encoded (eventstore.Metadata.AppendJSON) in
// RawMetadata. Each event gets a new ULID when it has no id and keeps its
// id, in the ULID's canonical form, when it has one; an id that is not a
// ULID is an error matching eventstore.ErrInvalidEventID.
func Events(stream string, expected eventstore.ExpectedVersion, events []eventstore.NewEvent) ([]eventstore.Event, error) {
	if expected < eventstore.Any {
		return nil, fmt.Errorf("%w: %d", eventstore.ErrInvalidExpectedVersion, int64(expected))
	}
	recorded := make([]eventstore.Event, len(events))
	for i, e := range events {
		recorded[i] = eventstore.Event{Type: e.Type, Stream: stream, Data: e.Data, Metadata: e.Metadata, RawMetadata: e.Metadata.AppendJSON(nil)}
		if e.ID == "" {
			recorded[i].ID = ulid.Make().String()
			continue
		}
		id, err := ulid.ParseStrict(e.ID)
		if err != nil {
			return nil, fmt.Errorf("event %d of stream %q: %w: %q", i, stream, eventstore.ErrInvalidEventID, e.ID)
		}
		recorded[i].ID = id.String()
	}
	return recorded, nil
}
