package storetest

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/resolutionflow/ledgerd/eventstore"
)

func testReadStreamAfter(t *testing.T, s eventstore.Store) {
	recorded := mustAppend(t, s, "orders-1", eventstore.NoStream, newEvents("Placed", 5)...)
	mustAppend(t, s, "orders-2", eventstore.NoStream, newEvents("Placed", 2)...)
	for after := int64(0); after <= 6; after++ {
		got, err := s.ReadStreamAfter(t.Context(), "orders-1", after)
		if err != nil {
			t.Fatalf("read after %d: %v", after, err)
		}
		assertSameEvents(t, fmt.Sprintf("read after version %d", after), got, recorded[min(after, 5):])
	}
	if got, err := s.ReadStreamAfter(t.Context(), "orders-3", 0); err != nil || len(got) != 0 {
		t.Errorf("read unknown stream: %d events, %v; want none", len(got), err)
	}
}

func mustSnapshot(tb testing.TB, s eventstore.Store, stream string) (eventstore.Snapshot, bool) {
	tb.Helper()
	snap, ok, err := s.Snapshot(tb.Context(), stream)
	if err != nil {
		tb.Fatalf("snapshot of %q: %v", stream, err)
	}
	return snap, ok
}

func testSnapshots(t *testing.T, s eventstore.Store) {
	if _, ok := mustSnapshot(t, s, "orders-1"); ok {
		t.Fatal("a snapshot before any was saved")
	}
	saves := []eventstore.Snapshot{
		{Stream: "orders-1", Version: 3, EventID: "01J00000000000000000000003", Data: []byte{0, 1, 2, 255}},
		{Stream: "orders-2", Version: 1, EventID: "01J00000000000000000000001", Data: []byte(`{"other": true}`)},
		// A later save replaces the snapshot, whatever its version: a
		// snapshot that did not match its stream is replaced by a good one.
		{Stream: "orders-1", Version: 2, EventID: "01J00000000000000000000002", Data: []byte("second")},
	}
	for _, snap := range saves {
		if err := s.SaveSnapshot(t.Context(), snap); err != nil {
			t.Fatal(err)
		}
	}
	for _, want := range saves[1:] {
		got, ok := mustSnapshot(t, s, want.Stream)
		if !ok || got.Stream != want.Stream || got.Version != want.Version || got.EventID != want.EventID || !bytes.Equal(got.Data, want.Data) {
			t.Errorf("snapshot of %q = %+v (found %v), want %+v", want.Stream, got, ok, want)
		}
	}
}
