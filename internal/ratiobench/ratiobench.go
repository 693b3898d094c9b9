// Package ratiobench measures an operation against a baseline on a noisy
// machine. It runs the two in alternating slices of calls, so that a change
// in the machine's speed during the run weighs on both alike, and reports
// the ratio of their throughputs with the operation's latency.
package ratiobench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/oklog/ulid/v2"
)

// BaselineEvent is the baseline's row payload, the size of a typical
// handoff event.
const BaselineEvent = `{"handoff_id":"6f1c3a52-8d0e-4b7a-9a55-3c1de0f3b2a1","session_id":"0b8f9e3e-2a41-4f7c-8d1e-5b6a7c8d9e0f","engineer_notes":"customer VPN drops every 20 minutes; tried MTU 1400","priority":"high","at":"2026-11-25T12:00:00Z"}`

// PostgresBaseline creates the baseline table in pool's database and
// returns the baseline every ledger benchmark is measured against: a plain
// single-row INSERT of BaselineEvent into a table with UNIQUE(stream,
// version), each call on a new stream.
func PostgresBaseline(tb testing.TB, pool *pgxpool.Pool) Op {
	tb.Helper()
	_, err := pool.Exec(tb.Context(), `CREATE TABLE baseline (stream text NOT NULL, version bigint NOT NULL, data jsonb NOT NULL, UNIQUE (stream, version))`)
	if err != nil {
		tb.Fatalf("create baseline table: %v", err)
	}
	prefix := ulid.Make().String()
	var n atomic.Int64
	return func(ctx context.Context, _ int) error {
		stream := fmt.Sprintf("%s-%d", prefix, n.Add(1))
		_, err := pool.Exec(ctx, `INSERT INTO baseline (stream, version, data) VALUES ($1, 1, $2)`, stream, BaselineEvent)
		return err
	}
}

// Op is one call of an operation from the given worker (0 to workers-1).
type Op func(ctx context.Context, worker int) error

// sliceCalls is how many calls of one kind run before the other kind's turn.
const sliceCalls = 250

// timeout bounds a whole run.
const timeout = 10 * time.Minute

// Run makes b.N calls of baseline and b.N calls of op, each kind from
// workers goroutines at a time, in alternating slices, and reports
// (settle, when not nil, runs after each slice of op and counts as part of
// it: it waits for work that op leaves to the background, such as a
// projector catching up, so that the work does not slow the next slice of
// the baseline instead)
//
//   - baseline-ratio: the baseline's time over op's for the same number of
//     calls, that is op's throughput over the baseline's;
//   - op-ns/op and baseline-ns/op: the time of one call of each;
//   - p50-ms and p99-ms: the latency of one call of op;
//   - op-cpu-us/op and baseline-cpu-us/op, where /proc/stat can be read:
//     the processor time the whole machine (this process, the database,
//     the kernel) spent per call of each, which shows where a ratio comes
//     from when the machine is saturated.
//
// It fails the benchmark when a call fails.
func Run(b *testing.B, workers int, baseline, op Op, settle func(context.Context) error) {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var baseTime, opTime, baseCPU, opCPU time.Duration
	var latencies []time.Duration
	cpuKnown := true
	b.ResetTimer()
	for done := 0; done < b.N; {
		n := min(sliceCalls, b.N-done)
		busy, ok := MachineBusy()
		elapsed, _, err := run(ctx, workers, n, baseline)
		if err != nil {
			b.Fatalf("baseline: %v", err)
		}
		baseTime += elapsed
		busy, ok = addBusy(&baseCPU, busy, ok)
		start := time.Now()
		_, lat, err := run(ctx, workers, n, op)
		if err != nil {
			b.Fatal(err)
		}
		if settle != nil {
			if err := settle(ctx); err != nil {
				b.Fatalf("settle: %v", err)
			}
		}
		opTime += time.Since(start)
		_, ok = addBusy(&opCPU, busy, ok)
		cpuKnown = cpuKnown && ok
		latencies = append(latencies, lat...)
		done += n
	}
	b.StopTimer()
	slices.Sort(latencies)
	b.ReportMetric(float64(baseTime)/float64(opTime), "baseline-ratio")
	b.ReportMetric(float64(opTime.Nanoseconds())/float64(b.N), "op-ns/op")
	b.ReportMetric(float64(baseTime.Nanoseconds())/float64(b.N), "baseline-ns/op")
	b.ReportMetric(percentile(latencies, 0.50), "p50-ms")
	b.ReportMetric(percentile(latencies, 0.99), "p99-ms")
	if cpuKnown {
		b.ReportMetric(float64(opCPU.Microseconds())/float64(b.N), "op-cpu-us/op")
		b.ReportMetric(float64(baseCPU.Microseconds())/float64(b.N), "baseline-cpu-us/op")
	}
}

// addBusy adds to *total the machine's busy time since `since` and returns
// the busy time now; ok is false once either reading failed.
func addBusy(total *time.Duration, since time.Duration, ok bool) (time.Duration, bool) {
	now, nowOK := MachineBusy()
	if !ok || !nowOK {
		return now, false
	}
	*total += now - since
	return now, true
}

// clockTicks is Linux's USER_HZ, the unit of /proc/stat.
const clockTicks = 100

// MachineBusy returns the processor time all of the machine's processors
// have spent working since boot (user, nice, system, irq and softirq in
// the first line of /proc/stat; not idle, iowait or time stolen by a
// hypervisor), and false where that cannot be read.
func MachineBusy() (time.Duration, bool) {
	raw, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, false
	}
	line, _, _ := strings.Cut(string(raw), "\n")
	fields := strings.Fields(line)
	if len(fields) < 9 || fields[0] != "cpu" {
		return 0, false
	}
	var ticks int64
	for _, i := range []int{1, 2, 3, 6, 7} { // user nice system irq softirq
		v, err := strconv.ParseInt(fields[i], 10, 64)
		if err != nil {
			return 0, false
		}
		ticks += v
	}
	return time.Duration(ticks) * time.Second / clockTicks, true
}

// run makes n calls of op from workers goroutines and returns the time they
// took together and the latency of each.
func run(ctx context.Context, workers, n int, op Op) (time.Duration, []time.Duration, error) {
	var next atomic.Int64
	latencies := make([][]time.Duration, workers)
	errs := make([]error, workers)
	var wg sync.WaitGroup
	start := time.Now()
	for w := range workers {
		wg.Go(func() {
			for next.Add(1) <= int64(n) {
				t := time.Now()
				if err := op(ctx, w); err != nil {
					errs[w] = err
					return
				}
				latencies[w] = append(latencies[w], time.Since(t))
			}
		})
	}
	wg.Wait()
	return time.Since(start), slices.Concat(latencies...), errors.Join(errs...)
}

// percentile returns the p-th quantile of sorted, in milliseconds.
func percentile(sorted []time.Duration, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	d := sorted[int(p*float64(len(sorted)-1))]
	return float64(d) / float64(time.Millisecond)
}
