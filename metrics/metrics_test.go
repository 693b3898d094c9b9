package metrics

import (
	"context"
	"errors"
	"testing"
	"time"
)

// gather returns the value of each series of family name, by its "name"
// label (empty for a family without one).
func gather(tb testing.TB, m *Metrics, family string) map[string]float64 {
	tb.Helper()
	families, err := m.registry.Gather()
	if err != nil {
		tb.Fatalf("gather: %v", err)
	}
	values := map[string]float64{}
	for _, f := range families {
		if f.GetName() != family {
			continue
		}
		for _, s := range f.GetMetric() {
			label := ""
			for _, l := range s.GetLabel() {
				if l.GetName() == "name" {
					label = l.GetValue()
				}
			}
			values[label] = s.GetGauge().GetValue() + s.GetCounter().GetValue()
		}
	}
	return values
}

// TestCheckpoints_LagInEventsAndSeconds moves a worker behind the head and
// back, and checks the lag the scrapes report; a worker whose read fails
// is left out of the scrape.
func TestCheckpoints_LagInEventsAndSeconds(t *testing.T) {
	m := New()
	at := Position{Checkpoint: 5, Head: 5}
	err := m.WatchCheckpoints(map[string]func(context.Context) (Position, error){
		"worker": func(context.Context) (Position, error) { return at, nil },
		"broken": func(context.Context) (Position, error) { return Position{}, errors.New("database down") },
	})
	if err != nil {
		t.Fatal(err)
	}
	check := func(wantPosition, wantLag float64, behind bool) {
		t.Helper()
		if got := gather(t, m, "ledger_checkpoint_position"); len(got) != 1 || got["worker"] != wantPosition {
			t.Errorf("position %v, want worker at %v alone", got, wantPosition)
		}
		if got := gather(t, m, "ledger_checkpoint_lag_events")["worker"]; got != wantLag {
			t.Errorf("lag %v events, want %v", got, wantLag)
		}
		if got := gather(t, m, "ledger_checkpoint_lag_seconds")["worker"]; (got > 0) != behind {
			t.Errorf("lag %vs, want it positive: %v", got, behind)
		}
	}
	check(5, 0, false)
	at = Position{Checkpoint: 5, Head: 9}
	// The worker was last seen at the head one scrape ago; let the clock
	// move on from it.
	time.Sleep(time.Millisecond)
	check(5, 4, true)
	at = Position{Checkpoint: 9, Head: 9}
	check(9, 0, false)
}

// TestNil_RecordsNothing checks that a nil *Metrics may be used.
func TestNil_RecordsNothing(t *testing.T) {
	var m *Metrics
	m.Request("GET", "/healthz", 200, time.Millisecond)
	m.Command("claim", Claimed)
	m.Appended()
	m.Conflict()
	m.Retry()
	m.Replay()
}

// TestPool_ReportsStats checks the pool's series.
func TestPool_ReportsStats(t *testing.T) {
	m := New()
	if err := m.WatchPool(func() PoolStats {
		return PoolStats{Acquired: 2, Idle: 3, Total: 5, Max: 8, Acquires: 40, EmptyAcquires: 4, AcquireWait: 1500 * time.Millisecond}
	}); err != nil {
		t.Fatal(err)
	}
	for family, want := range map[string]float64{
		"ledger_db_pool_max_connections":            8,
		"ledger_db_pool_acquires_total":             40,
		"ledger_db_pool_empty_acquires_total":       4,
		"ledger_db_pool_acquire_wait_seconds_total": 1.5,
	} {
		if got := gather(t, m, family)[""]; got != want {
			t.Errorf("%s = %v, want %v", family, got, want)
		}
	}
}
