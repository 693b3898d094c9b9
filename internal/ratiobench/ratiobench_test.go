package ratiobench_test

import (
	"context"
	"errors"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/resolutionflow/ledgerd/internal/ratiobench"
)

// TestRun_AlternatesSlicesOfEqualCalls checks that Run makes b.N calls of
// each operation, in alternating slices, and reports the ratio.
func TestRun_AlternatesSlicesOfEqualCalls(t *testing.T) {
	var (
		mu    sync.Mutex
		kinds []byte // 'b' or 'o' per call, in order
		n     int
	)
	record := func(kind byte) ratiobench.Op {
		return func(context.Context, int) error {
			mu.Lock()
			defer mu.Unlock()
			kinds = append(kinds, kind)
			return nil
		}
	}
	res := testing.Benchmark(func(b *testing.B) {
		mu.Lock()
		kinds, n = nil, b.N
		mu.Unlock()
		ratiobench.Run(b, 4, record('b'), record('o'), func(context.Context) error { return record('s')(nil, 0) })
	})
	if got := strings.Count(string(kinds), "b"); got != n {
		t.Fatalf("%d baseline calls, want b.N = %d", got, n)
	}
	if got := strings.Count(string(kinds), "o"); got != n {
		t.Fatalf("%d op calls, want b.N = %d", got, n)
	}
	// Each slice of op ends with a settle.
	slices := strings.Count(string(kinds), "os")
	if got := strings.Count(string(kinds), "s"); got == 0 || got != slices {
		t.Fatalf("%d settles, %d of them right after op; want one after each slice of op", got, slices)
	}
	kinds = []byte(strings.ReplaceAll(string(kinds), "s", ""))
	// The calls come in runs of one kind, alternating, starting with the
	// baseline; no run is longer than a slice.
	runs := 0
	for i := 0; i < len(kinds); {
		j := i
		for j < len(kinds) && kinds[j] == kinds[i] {
			j++
		}
		if want := "bo"[runs%2]; kinds[i] != want {
			t.Fatalf("run %d is of kind %c, want %c", runs, kinds[i], want)
		}
		if j-i > 250 {
			t.Fatalf("run %d has %d calls, more than a slice", runs, j-i)
		}
		runs, i = runs+1, j
	}
	if n > 250 && runs < 4 {
		t.Fatalf("%d calls each came in %d runs, want alternating slices", n, runs)
	}
	if r := res.Extra["baseline-ratio"]; r <= 0 {
		t.Fatalf("baseline-ratio = %v, want a positive ratio", r)
	}
}

// TestRun_ReportsMachineCPU checks that Run reports the machine's processor
// time per call of each operation: an op that keeps a processor busy for a
// millisecond costs at least that. Where /proc/stat is missing it reports
// none.
func TestRun_ReportsMachineCPU(t *testing.T) {
	spin := func(context.Context, int) error {
		for start := time.Now(); time.Since(start) < time.Millisecond; {
		}
		return nil
	}
	sleep := func(context.Context, int) error { time.Sleep(time.Millisecond); return nil }
	res := testing.Benchmark(func(b *testing.B) { ratiobench.Run(b, 1, sleep, spin, nil) })
	op, okOp := res.Extra["op-cpu-us/op"]
	_, okBase := res.Extra["baseline-cpu-us/op"]
	if _, err := os.Stat("/proc/stat"); err != nil {
		if okOp || okBase {
			t.Fatalf("CPU metrics %v without /proc/stat", res.Extra)
		}
		return
	}
	if !okOp || !okBase {
		t.Fatalf("no CPU metrics in %v", res.Extra)
	}
	// The machine's tick is 10 ms; over the run's calls the op's own
	// millisecond each shows, whatever else the machine does, less what a
	// hypervisor steals (not counted as busy): hence the wide margin.
	if op < 300 {
		t.Fatalf("op-cpu-us/op = %v for an op that spins 1000 µs", op)
	}
}

// TestRun_FailsOnAnError checks that a failing call fails the benchmark.
func TestRun_FailsOnAnError(t *testing.T) {
	failing := func(context.Context, int) error { return errors.New("broken") }
	ok := func(context.Context, int) error { return nil }
	for name, ops := range map[string][2]ratiobench.Op{"Baseline": {failing, ok}, "Op": {ok, failing}} {
		t.Run(name, func(t *testing.T) {
			res := testing.Benchmark(func(b *testing.B) { ratiobench.Run(b, 2, ops[0], ops[1], nil) })
			if res.N != 0 {
				t.Fatalf("benchmark with a failing %s call succeeded: %+v", name, res)
			}
		})
	}
}
