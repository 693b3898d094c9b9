package alternate_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/resolutionflow/ledgerd/internal/alternate"
)

// TestRun_Duration checks that a run given a duration ends at the first
// slice boundary after it, with as many calls of each kind, and that the
// latencies come sorted.
func TestRun_Duration(t *testing.T) {
	var base, op atomic.Int64
	res, err := alternate.Run(t.Context(), alternate.Config{Workers: 2, Duration: 50 * time.Millisecond, SliceCalls: 10},
		func(context.Context, int) error { base.Add(1); time.Sleep(time.Millisecond); return nil },
		func(context.Context, int) error { op.Add(1); time.Sleep(time.Millisecond); return nil }, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Calls == 0 || res.Calls%10 != 0 || int64(res.Calls) != base.Load() || int64(res.Calls) != op.Load() {
		t.Fatalf("%d calls; the baseline made %d, the op %d; want equal whole slices of 10", res.Calls, base.Load(), op.Load())
	}
	if len(res.Latencies) != res.Calls || len(res.BaselineLatencies) != res.Calls {
		t.Fatalf("%d and %d latencies for %d calls", len(res.Latencies), len(res.BaselineLatencies), res.Calls)
	}
	for i := 1; i < len(res.Latencies); i++ {
		if res.Latencies[i] < res.Latencies[i-1] {
			t.Fatal("latencies not sorted")
		}
	}
	if p50, p99 := alternate.Percentile(res.Latencies, 0.5), alternate.Percentile(res.Latencies, 0.99); p50 < time.Millisecond || p99 < p50 {
		t.Fatalf("p50 %v, p99 %v for calls of 1 ms", p50, p99)
	}
	if res.Ratio() <= 0 || res.Rate() <= 0 || res.BaselineRate() <= 0 {
		t.Fatalf("ratio %v, rates %v and %v", res.Ratio(), res.Rate(), res.BaselineRate())
	}
}

// TestRun_Refuses checks that a run with nothing to bound it, or no
// workers, is refused, and that a failed call ends the run with its error.
func TestRun_Refuses(t *testing.T) {
	ok := func(context.Context, int) error { return nil }
	if _, err := alternate.Run(t.Context(), alternate.Config{Workers: 1}, ok, ok, nil); err == nil {
		t.Error("a run with neither calls nor a duration was accepted")
	}
	if _, err := alternate.Run(t.Context(), alternate.Config{Calls: 1}, ok, ok, nil); err == nil {
		t.Error("a run with no workers was accepted")
	}
	broken := errors.New("broken")
	_, err := alternate.Run(t.Context(), alternate.Config{Workers: 2, Duration: time.Hour}, ok, func(context.Context, int) error { return broken }, nil)
	if !errors.Is(err, broken) {
		t.Errorf("a failing op: %v, want its error", err)
	}
}
