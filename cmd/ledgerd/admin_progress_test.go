package main

import (
	"testing"
	"time"

	"github.com/resolutionflow/ledgerd/projections"
)

func TestRebuildProgressLine(t *testing.T) {
	start := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		p    projections.RebuildProgress
		want string
	}{
		{projections.RebuildProgress{Events: 50000, Position: 50000, Head: 200000, Started: start},
			"rebuild: 50000 events read, position 50000 of 200000 (25%), 25000 events/s"},
		{projections.RebuildProgress{Events: 10, Position: 12, Started: start},
			"rebuild: 10 events read, position 12, 5 events/s"},
		{projections.RebuildProgress{Events: 300, Position: 300, Head: 200, Started: start, Writing: true},
			"rebuild: 300 events read, position 300 of 200 (100%), 150 events/s; writing the read models"},
	} {
		if got := rebuildProgressLine(c.p, start.Add(2*time.Second)); got != c.want {
			t.Errorf("rebuildProgressLine(%+v) = %q, want %q", c.p, got, c.want)
		}
	}
}
