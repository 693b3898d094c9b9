// Package ratiobench measures an operation against a baseline on a noisy
// machine. It runs the two in alternating slices of calls, so that a change
// in the machine's speed during the run weighs on both alike, and reports
// the ratio of their throughputs with the operation's latency.
package ratiobench

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/oklog/ulid/v2"

	"github.com/resolutionflow/ledgerd/internal/alternate"
)

// BaselineEvent is the baseline's row payload, the size of a typical
// handoff event.
const BaselineEvent = alternate.BaselineEvent

// PostgresBaseline creates the baseline table in pool's database and
// returns the baseline every ledger benchmark is measured against: a plain
// single-row INSERT of BaselineEvent into a table with UNIQUE(stream,
// version), each call on a new stream.
func PostgresBaseline(tb testing.TB, pool *pgxpool.Pool) Op {
	tb.Helper()
	if _, err := pool.Exec(tb.Context(), alternate.BaselineTable); err != nil {
		tb.Fatalf("create baseline table: %v", err)
	}
	prefix := ulid.Make().String()
	var n atomic.Int64
	return func(ctx context.Context, _ int) error {
		stream := fmt.Sprintf("%s-%d", prefix, n.Add(1))
		_, err := pool.Exec(ctx, alternate.BaselineInsert, stream, BaselineEvent)
		return err
	}
}

// Op is one call of an operation from the given worker (0 to workers-1).
type Op = alternate.Op

// timeout bounds a whole run.
const timeout = 10 * time.Minute

// Run makes b.N calls of baseline and b.N calls of op, each kind from
// workers goroutines at a time, in alternating slices (alternate.Run), and
// reports
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
	b.ResetTimer()
	res, err := alternate.Run(ctx, alternate.Config{Workers: workers, Calls: b.N}, baseline, op, settle)
	if err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	b.ReportMetric(res.Ratio(), "baseline-ratio")
	b.ReportMetric(float64(res.OpTime.Nanoseconds())/float64(b.N), "op-ns/op")
	b.ReportMetric(float64(res.BaselineTime.Nanoseconds())/float64(b.N), "baseline-ns/op")
	b.ReportMetric(ms(alternate.Percentile(res.Latencies, 0.50)), "p50-ms")
	b.ReportMetric(ms(alternate.Percentile(res.Latencies, 0.99)), "p99-ms")
	if res.CPUKnown {
		b.ReportMetric(float64(res.OpCPU.Microseconds())/float64(b.N), "op-cpu-us/op")
		b.ReportMetric(float64(res.BaselineCPU.Microseconds())/float64(b.N), "baseline-cpu-us/op")
	}
}

// ms returns d in milliseconds.
func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// MachineBusy returns the processor time all of the machine's processors
// have spent working since boot, and false where that cannot be read
// (alternate.MachineBusy).
func MachineBusy() (time.Duration, bool) { return alternate.MachineBusy() }
