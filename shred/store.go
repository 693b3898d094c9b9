package shred

import (
	"context"

	"github.com/google/uuid"

	"github.com/resolutionflow/ledgerd/eventstore"
)

// Store is an event store whose reads return events opened by a keyring
// (Keyring.Open): the personal data in plaintext while the stream's key
// exists, erased once it is destroyed. The stream's key comes with each
// event from the read's own query (eventstore.Event.DataKey), so opening
// costs no round trip. Appends go to the store as they are: the command
// handler seals what it appends.
//
// Whatever checks hashes or builds the Merkle tree (ledgerd verify, the
// audit sealer) reads the store itself: opened data is not the stored
// bytes.
type Store struct {
	eventstore.Store
	keys *Keyring
}

// NewStore returns store with its reads opened by keys.
func NewStore(store eventstore.Store, keys *Keyring) *Store {
	return &Store{Store: store, keys: keys}
}

// Keyring returns the store's keyring.
func (s *Store) Keyring() *Keyring { return s.keys }

// ReadStream implements eventstore.Store.
func (s *Store) ReadStream(ctx context.Context, stream string) ([]eventstore.Event, error) {
	return s.opened(s.Store.ReadStream(ctx, stream))
}

// ReadStreamAfter implements eventstore.Store.
func (s *Store) ReadStreamAfter(ctx context.Context, stream string, after int64) ([]eventstore.Event, error) {
	return s.opened(s.Store.ReadStreamAfter(ctx, stream, after))
}

// ReadAll implements eventstore.Store.
func (s *Store) ReadAll(ctx context.Context, after int64, limit int) ([]eventstore.Event, error) {
	return s.opened(s.Store.ReadAll(ctx, after, limit))
}

// ReadAccount implements eventstore.Store.
func (s *Store) ReadAccount(ctx context.Context, account uuid.UUID, after int64, limit int) ([]eventstore.Event, error) {
	return s.opened(s.Store.ReadAccount(ctx, account, after, limit))
}

func (s *Store) opened(events []eventstore.Event, err error) ([]eventstore.Event, error) {
	if err != nil {
		return nil, err
	}
	return s.keys.OpenAll(events), nil
}

// Log is an event store that signals its appends in this process and tells
// the position of its last committed event, as pgstore.Store and
// sqlitestore.Store do.
type Log interface {
	eventstore.Store
	Appended() <-chan struct{}
	Head(ctx context.Context) (int64, error)
}

// OpenedLog is a Log whose reads are opened by a keyring (see Store), with
// the raw log's signal and head.
type OpenedLog struct {
	*Store
	raw Log
}

// NewOpenedLog returns raw with its reads opened by keys.
func NewOpenedLog(raw Log, keys *Keyring) OpenedLog {
	return OpenedLog{Store: NewStore(raw, keys), raw: raw}
}

// Appended returns the raw log's signal of appends.
func (l OpenedLog) Appended() <-chan struct{} { return l.raw.Appended() }

// Head returns the raw log's head.
func (l OpenedLog) Head(ctx context.Context) (int64, error) { return l.raw.Head(ctx) }
