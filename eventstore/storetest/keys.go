package storetest

import (
	"fmt"
	"testing"

	"github.com/google/uuid"

	"github.com/resolutionflow/ledgerd/eventcodec"
	"github.com/resolutionflow/ledgerd/eventstore"
)

// testDataKeys checks the key changes an append makes with its events: a
// key created with a stream's first event, with one next event, or with
// several events; every read of the stream's events returns it; an append
// that conflicts writes no key; a second key for a stream that has one is
// a conflict and writes nothing; a destroyed key is gone from every read,
// with the events left as they were; and a new key can follow.
func testDataKeys(t *testing.T, s eventstore.Store) {
	ctx := t.Context()
	account := uuid.New()
	key := func(n int) *eventstore.DataKey {
		return &eventstore.DataKey{ID: fmt.Sprintf("key-%d", n), Wrapped: []byte{byte(n), 0, 1}, MasterKeyID: "master"}
	}
	assertKey := func(tb testing.TB, stream string, want *eventstore.DataKey) {
		tb.Helper()
		events := mustReadStream(tb, s, stream)
		all := ReadLog(tb, s, 0)
		mine, err := s.ReadAccount(ctx, account, 0, 1000)
		if err != nil {
			tb.Fatal(err)
		}
		for _, e := range append(append(events, all...), mine...) {
			if e.Stream != stream {
				continue
			}
			switch got := e.DataKey; {
			case want == nil && got != nil:
				tb.Fatalf("event %d of %s has key %+v, want none", e.Version, stream, got)
			case want != nil && (got == nil || got.ID != want.ID || string(got.Wrapped) != string(want.Wrapped) || got.MasterKeyID != want.MasterKeyID):
				tb.Fatalf("event %d of %s has key %+v, want %+v", e.Version, stream, got, want)
			}
		}
	}
	for _, c := range []struct {
		name     string
		existing int
		n        int
	}{{"First", 0, 1}, {"Next", 1, 1}, {"Many", 2, 3}, {"ManyFirst", 0, 2}} {
		t.Run(c.name, func(t *testing.T) {
			stream := eventcodec.StreamName(account, uuid.New())
			if c.existing > 0 {
				mustAppend(t, s, stream, eventstore.NoStream, newEvents("Before", c.existing)...)
			}
			// Expecting the wrong version: no event, no key.
			_, err := s.AppendKeyed(ctx, stream, eventstore.Exact(int64(c.existing+1)), eventstore.KeyChange{Create: key(1)}, newEvents("Wrong", c.n), true)
			assertConflict(t, err, stream, eventstore.Exact(int64(c.existing+1)))
			assertKey(t, stream, nil)
			if _, err := s.AppendKeyed(ctx, stream, eventstore.Exact(int64(c.existing)), eventstore.KeyChange{Create: key(1)}, newEvents("Keyed", c.n), c.n > 1); err != nil {
				t.Fatalf("append with a new key: %v", err)
			}
			assertKey(t, stream, key(1))
			v := int64(c.existing + c.n)
			// A second key for the stream: a conflict, nothing written.
			_, err = s.AppendKeyed(ctx, stream, eventstore.Exact(v), eventstore.KeyChange{Create: key(2)}, newEvents("Second", 1), false)
			assertConflict(t, err, stream, eventstore.Exact(v))
			if got := len(mustReadStream(t, s, stream)); int64(got) != v {
				t.Fatalf("the refused append left %d events, want %d", got, v)
			}
			assertKey(t, stream, key(1))
			// Destroying the key keeps the events.
			before := mustReadStream(t, s, stream)
			if _, err := s.AppendKeyed(ctx, stream, eventstore.Exact(v), eventstore.KeyChange{Destroy: true}, newEvents("Erased", 1), false); err != nil {
				t.Fatalf("append destroying the key: %v", err)
			}
			assertKey(t, stream, nil)
			after := mustReadStream(t, s, stream)
			for i := range before {
				before[i].DataKey, after[i].DataKey = nil, nil
			}
			assertSameEvents(t, "the events after the key was destroyed", after[:len(before)], before)
			// A new key after it.
			if _, err := s.AppendKeyed(ctx, stream, eventstore.Exact(v+1), eventstore.KeyChange{Create: key(3)}, newEvents("Again", 1), true); err != nil {
				t.Fatalf("append with another new key: %v", err)
			}
			assertKey(t, stream, key(3))
		})
	}
}
