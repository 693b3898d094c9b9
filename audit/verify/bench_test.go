package verify

import (
	"testing"

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
		if err := c.check(&events[i%len(events)]); err != nil {
			b.Fatal(err)
		}
	}
}
