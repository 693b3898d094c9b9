package storetest

import (
	"bytes"
	"cmp"
	"encoding/json"
	"slices"
	"testing"

	"github.com/resolutionflow/ledgerd/eventstore"
)

// AssertChained checks the hash chain of every stream in events (any
// order, each stream whole from version 1): each event's Hash is
// eventstore.HashEvent of its stored fields after its PrevHash, and its
// PrevHash is the Hash of the stream's event before it, the zero hash for
// version 1.
func AssertChained(tb testing.TB, events []eventstore.Event) {
	tb.Helper()
	streams := map[string][]eventstore.Event{}
	for _, e := range events {
		streams[e.Stream] = append(streams[e.Stream], e)
	}
	for stream, events := range streams {
		slices.SortFunc(events, func(a, b eventstore.Event) int { return cmp.Compare(a.Version, b.Version) })
		var prev eventstore.Hash
		for i, e := range events {
			if e.Version != int64(i+1) {
				tb.Fatalf("stream %q: event %d has version %d", stream, i, e.Version)
			}
			if e.PrevHash != prev {
				tb.Errorf("stream %q version %d: previous hash %s, want %s", stream, e.Version, e.PrevHash, prev)
			}
			if want := eventstore.HashEvent(prev, e); e.Hash != want {
				tb.Errorf("stream %q version %d: hash %s, want %s", stream, e.Version, e.Hash, want)
			}
			prev = e.Hash
		}
	}
}

// testHashChain appends in every way an append can go (a first event,
// several events, after an exact version, expecting any) and checks that
// what the appends return and what reads return carry the same hashes,
// chained stream by stream.
func testHashChain(t *testing.T, s eventstore.Store) {
	var appended []eventstore.Event
	for _, a := range []struct {
		stream   string
		expected eventstore.ExpectedVersion
		n        int
	}{
		{"chain-a", eventstore.NoStream, 1}, {"chain-b", eventstore.NoStream, 3}, {"chain-a", eventstore.Exact(1), 1},
		{"chain-a", eventstore.Exact(2), 2}, {"chain-c", eventstore.Any, 2}, {"chain-c", eventstore.Any, 1}, {"chain-b", eventstore.Any, 1},
	} {
		appended = append(appended, mustAppend(t, s, a.stream, a.expected, newEvents("Chained", a.n)...)...)
	}
	log := ReadLog(t, s, 0)
	assertSameEvents(t, "read all", log, appended)
	AssertChained(t, log)
	for _, stream := range []string{"chain-a", "chain-b", "chain-c"} {
		AssertChained(t, mustReadStream(t, s, stream))
	}
	seen := map[eventstore.Hash]bool{}
	for _, e := range log {
		if seen[e.Hash] {
			t.Errorf("hash %s given twice", e.Hash)
		}
		seen[e.Hash] = true
	}
}

// testStoresBytesAsGiven checks that the store keeps an event's data and
// metadata byte for byte, whitespace, key order and escapes included, so
// that its hash can be recomputed from what it holds.
func testStoresBytesAsGiven(t *testing.T, s eventstore.Store) {
	data := json.RawMessage(" {\"z\":1,   \"a\" : [ 1.50, 2e3 ],\n\"a\": \"dup\", \"é\": \"\\u00e9\\/\"} ")
	meta := eventstore.Metadata{ActorID: "actor", Role: "engineer", RequestID: "tab\there <&>"}
	recorded := mustAppend(t, s, "bytes", eventstore.NoStream,
		eventstore.NewEvent{Type: "Verbatim", Data: data, Metadata: meta},
		eventstore.NewEvent{Type: "Verbatim", Data: data, Metadata: meta})
	for _, e := range append(recorded, mustReadStream(t, s, "bytes")...) {
		if !bytes.Equal(e.Data, data) {
			t.Errorf("version %d: data %q, want %q byte for byte", e.Version, e.Data, data)
		}
		if want := meta.AppendJSON(nil); !bytes.Equal(e.RawMetadata, want) {
			t.Errorf("version %d: raw metadata %q, want %q", e.Version, e.RawMetadata, want)
		}
	}
	AssertChained(t, mustReadStream(t, s, "bytes"))
}
