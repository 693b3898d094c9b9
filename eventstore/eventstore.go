// Package eventstore defines the append-only event log the ledger is built
// on: append to a stream with an expected version, read a stream, and read
// the whole log, or one account's part of it, in global order. Implementations live in sub-packages
// (pgstore for PostgreSQL, sqlitestore for the embedded mode) and all pass
// the conformance suite in storetest.
package eventstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/oklog/ulid/v2"
)

// ExpectedVersion is what an append expects the stream's version to be.
type ExpectedVersion int64

const (
	// Any appends whatever the stream's version.
	Any ExpectedVersion = -1
	// NoStream appends only when the stream has no events yet.
	NoStream ExpectedVersion = 0
)

// Exact expects the stream to have exactly v events (v = 0 is NoStream).
func Exact(v int64) ExpectedVersion { return ExpectedVersion(v) }

// ErrInvalidExpectedVersion is matched (errors.Is) by the error of an
// append given an expected version below Any, which no stream can have.
var ErrInvalidExpectedVersion = errors.New("invalid expected version")

func (v ExpectedVersion) String() string {
	switch {
	case v == Any:
		return "any"
	case v == NoStream:
		return "no stream"
	}
	return fmt.Sprintf("version %d", int64(v))
}

// Metadata says who caused an event, in answer to what and from where.
// The ids are the server's own; ClientRequestID and ClientCorrelationID
// are what the client said its request and correlation ids were, kept as
// its claim. ClientIP is the address the command came from: the peer's,
// or the one a trusted proxy forwarded.
type Metadata struct {
	ActorID             string `json:"actor_id,omitempty"`
	AccountID           string `json:"account_id,omitempty"`
	TeamID              string `json:"team_id,omitempty"`
	Role                string `json:"role,omitempty"`
	CorrelationID       string `json:"correlation_id,omitempty"`
	CausationID         string `json:"causation_id,omitempty"`
	RequestID           string `json:"request_id,omitempty"`
	ClientRequestID     string `json:"client_request_id,omitempty"`
	ClientCorrelationID string `json:"client_correlation_id,omitempty"`
	ClientIP            string `json:"client_ip,omitempty"`
	// ClientIPSealed is ClientIP encrypted under the stream's data key,
	// as the log stores it (see package shred); readers that hold the key
	// show ClientIP in its place.
	ClientIPSealed string `json:"client_ip_sealed,omitempty"`
}

// NewEvent is an event to append. ID is a ULID; the store makes one when it
// is empty.
type NewEvent struct {
	ID       string
	Type     string
	Data     json.RawMessage
	Metadata Metadata
}

// ErrInvalidEventID is matched (errors.Is) by the error of an append given
// an event id that is not a ULID.
var ErrInvalidEventID = errors.New("event id is not a ULID")

// Prepare is what every store does before it writes an append of events
// to stream expecting expected. It refuses an expected version below Any
// (ErrInvalidExpectedVersion) and returns the events as the store records
// them, before it gives them versions, positions, times and hashes, with
// their metadata encoded (Metadata.AppendJSON) in RawMetadata. Each event gets a new ULID when it has no id and
// keeps its id, in the ULID's canonical form, when it has one; an id that
// is not a ULID is an error matching ErrInvalidEventID.
func Prepare(stream string, expected ExpectedVersion, events []NewEvent) ([]Event, error) {
	if expected < Any {
		return nil, fmt.Errorf("%w: %d", ErrInvalidExpectedVersion, int64(expected))
	}
	recorded := make([]Event, len(events))
	for i, e := range events {
		recorded[i] = Event{Type: e.Type, Stream: stream, Data: e.Data, Metadata: e.Metadata, RawMetadata: e.Metadata.AppendJSON(nil)}
		if e.ID == "" {
			recorded[i].ID = ulid.Make().String()
			continue
		}
		id, err := ulid.ParseStrict(e.ID)
		if err != nil {
			return nil, fmt.Errorf("event %d of stream %q: %w: %q", i, stream, ErrInvalidEventID, e.ID)
		}
		recorded[i].ID = id.String()
	}
	return recorded, nil
}

// Event is a recorded event. It is also the envelope the audit API and the
// NATS relay publish, so its JSON form is part of the public contract.
//
// Data and RawMetadata are the bytes the store holds, exactly; Hash chains
// the event to its stream's previous event (HashEvent), so that anyone who
// reads the stream can check that no event of it was changed, removed or
// inserted since. RawMetadata and the hashes are not in the envelope.
type Event struct {
	ID         string          `json:"id"`
	Type       string          `json:"type"`
	Stream     string          `json:"stream"`
	Version    int64           `json:"version"`
	Position   int64           `json:"position"`
	RecordedAt time.Time       `json:"recorded_at"`
	Data       json.RawMessage `json:"data"`
	Metadata   Metadata        `json:"metadata"`
	// RawMetadata is Metadata as the store holds it, the JSON text the
	// hash covers.
	RawMetadata json.RawMessage `json:"-"`
	// PrevHash is the Hash of the stream's event before this one, as
	// stored with this event; the zero Hash for a stream's first event.
	PrevHash Hash `json:"-"`
	// Hash is HashEvent(PrevHash, the event), as stored.
	Hash Hash `json:"-"`
	// DataKey is the data key of the event's stream as the store held it
	// when it read the event, wrapped by the master key; nil when the
	// stream has none (never had one, or it was erased). It is not part
	// of the event, nor of its hash.
	DataKey *DataKey `json:"-"`
}

// DataKey is a stream's data key as stored: the key that encrypts the
// personal data of the stream's events, wrapped by a master key (see
// package shred). Destroying it makes that data unreadable for ever.
type DataKey struct {
	// ID names the key; every value it encrypted names it too, so a value
	// sealed under a destroyed key is never mistaken for one of a newer
	// key of the same stream.
	ID string
	// Wrapped is the key encrypted by the master key MasterKeyID.
	Wrapped     []byte
	MasterKeyID string
}

// KeyChange is what an append does to its stream's data key, in the same
// statement or transaction as its events, so that the key and the events
// it encrypts are written, or not, together.
type KeyChange struct {
	// Create, when set, is the stream's new data key: the append inserts
	// it, and fails with a *ConflictError when the stream has a key
	// already (another append made one first).
	Create *DataKey
	// Destroy deletes the stream's data key, if it has one.
	Destroy bool
}

// ErrConflict is matched (errors.Is) by every *ConflictError.
var ErrConflict = errors.New("wrong expected version")

// ConflictError says an append found the stream at another version than
// expected, or lost a race to another append to the same stream.
type ConflictError struct {
	Stream   string
	Expected ExpectedVersion
}

func (e *ConflictError) Error() string {
	return fmt.Sprintf("append to stream %q expecting %s: %v", e.Stream, e.Expected, ErrConflict)
}

// Is makes errors.Is(err, ErrConflict) hold.
func (e *ConflictError) Is(target error) bool { return target == ErrConflict }

// Snapshot is a stream's state folded up to a version, stored so that a
// reader need only read the events after it. The store keeps it as opaque
// bytes; its owner encodes it. Snapshots are a cache, kept outside the
// immutable log: they may be replaced or deleted at any time, and a reader
// checks one before using it: EventID, the id of the stream's event at
// Version, tells whether it was made from the stream as it is.
type Snapshot struct {
	Stream  string
	Version int64
	EventID string
	Data    []byte
}

// Store is an append-only event log.
type Store interface {
	// Append writes events to the end of a stream atomically, all or none,
	// and returns them as recorded. It returns a *ConflictError when the
	// stream is not at the expected version, including when a concurrent
	// append to the same stream won.
	//
	// Appends that arrive while the store writes others are written
	// together, in one transaction (group commit); each still succeeds or
	// fails alone. opts add to the append (AfterHash, WithAnswer).
	Append(ctx context.Context, stream string, expected ExpectedVersion, events []NewEvent, opts ...AppendOption) ([]Event, error)
	// AppendQuick appends as Append does, all or none and with the same
	// conflicts, but does not read back the positions and times the store
	// gave the events. It is for callers that need only know the append
	// happened, such as the command handler: on PostgreSQL it spares the
	// INSERT a RETURNING clause, about a tenth of the cost of an append.
	AppendQuick(ctx context.Context, stream string, expected ExpectedVersion, events []NewEvent, opts ...AppendOption) error
	// AppendKeyed appends as Append does and makes the key change in the
	// same statement (PostgreSQL) or transaction (SQLite), all or none.
	// With readBack false it does not read back positions and times, as
	// AppendQuick.
	AppendKeyed(ctx context.Context, stream string, expected ExpectedVersion, key KeyChange, events []NewEvent, readBack bool, opts ...AppendOption) ([]Event, error)
	// ReadStream returns a stream's events in version order; none for a
	// stream that does not exist. Every read of events fills in
	// Event.DataKey in the same query.
	ReadStream(ctx context.Context, stream string) ([]Event, error)
	// ReadStreamAfter returns the events of a stream with a version
	// greater than after, in version order.
	ReadStreamAfter(ctx context.Context, stream string, after int64) ([]Event, error)
	// Snapshot returns the snapshot stored for a stream; false when there
	// is none.
	Snapshot(ctx context.Context, stream string) (Snapshot, bool, error)
	// SaveSnapshot stores a snapshot of a stream in place of the one it
	// had, if any.
	SaveSnapshot(ctx context.Context, s Snapshot) error
	// ReadAll returns up to limit events with a global position greater
	// than after, in position order. It never returns an event while an
	// event with a lower position may still commit, so a reader that
	// resumes from the last position it saw never skips one. It may stop
	// short of limit, even at none, before an event still being appended;
	// a tailing reader reads again.
	ReadAll(ctx context.Context, after int64, limit int) ([]Event, error)
	// ReadAccount returns up to limit events of the streams of an account
	// (named <category>:<account>:<id>, as eventcodec.StreamName names
	// session streams) with a global position greater than after, in
	// position order. Its cost follows the account's events, not the
	// whole log's. Like ReadAll, it never returns an event while an event
	// with a lower position may still commit, so a reader that resumes
	// from the last position it saw never skips one.
	ReadAccount(ctx context.Context, account uuid.UUID, after int64, limit int) ([]Event, error)
}
