package verify

import (
	"bytes"
	"testing"

	"github.com/transparency-dev/merkle/rfc6962"

	"github.com/resolutionflow/ledgerd/audit/verify/verifytest"
	"github.com/resolutionflow/ledgerd/eventstore"
)

// BenchmarkCheck measures the checks of one event, without the read:
//
//	go test ./audit/verify -run '^$' -bench Check
func BenchmarkCheck(b *testing.B) {
	const streams = 1 << 14
	events := make([]eventstore.Event, 0, 10*streams)
	log := verifytest.NewLog(cap(events), streams)
	for e, ok := log.Next(); ok; e, ok = log.Next() {
		events = append(events, *e)
	}
	var c *chains
	for i := 0; b.Loop(); i++ {
		if i%len(events) == 0 {
			c = newChains()
		}
		if err := c.check(&events[i%len(events)], nil); err != nil {
			b.Fatal(err)
		}
	}
}

// TestHashes checks leafHash and nodeHash against the library's hasher.
func TestHashes(t *testing.T) {
	e := eventstore.Hash{1, 2, 3}
	if got, want := leafHash(&e), rfc6962.DefaultHasher.HashLeaf(e[:]); !bytes.Equal(got, want) {
		t.Errorf("leafHash = %x, want %x", got, want)
	}
	l, r := rfc6962.DefaultHasher.HashLeaf([]byte("l")), rfc6962.DefaultHasher.HashLeaf([]byte("r"))
	if got, want := nodeHash(l, r), rfc6962.DefaultHasher.HashChildren(l, r); !bytes.Equal(got, want) {
		t.Errorf("nodeHash = %x, want %x", got, want)
	}
}
