// Package alternate measures an operation against a baseline on a noisy
// machine: it runs the two in alternating slices of calls, so that a
// change in the machine's speed during the run weighs on both alike, and
// returns their times, the operation's latencies and the processor time
// the whole machine spent on each. internal/ratiobench reports it from Go
// benchmarks, the bench package from `ledgerd bench`.
package alternate

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
	"time"
)

// Op is one call of an operation from the given worker (0 to workers-1).
type Op func(ctx context.Context, worker int) error

// SliceCalls is how many calls of one kind run before the other kind's
// turn, unless Config says otherwise.
const SliceCalls = 250

// Config says how much to run.
type Config struct {
	// Workers is how many goroutines call each operation at a time (at
	// least 1).
	Workers int
	// Calls, when positive, is how many calls of each kind to make.
	Calls int
	// Duration, when positive, ends the run at the first slice boundary
	// after it has passed, even short of Calls. One of Calls and Duration
	// must be set.
	Duration time.Duration
	// SliceCalls is the size of a slice (SliceCalls when 0).
	SliceCalls int
}

// Result is what a run measured.
type Result struct {
	// Calls is how many calls of each kind were made.
	Calls int
	// BaselineTime and OpTime are the wall time the calls of each kind
	// took, the settles counted with the operation's.
	BaselineTime, OpTime time.Duration
	// BaselineCPU and OpCPU are the processor time the whole machine
	// spent during each kind's slices; valid when CPUKnown.
	BaselineCPU, OpCPU time.Duration
	CPUKnown           bool
	// Latencies and BaselineLatencies are the latency of each call,
	// sorted.
	Latencies, BaselineLatencies []time.Duration
}

// Ratio is the baseline's time over the operation's for the same number of
// calls, that is the operation's throughput over the baseline's.
func (r Result) Ratio() float64 {
	if r.OpTime <= 0 {
		return 0
	}
	return float64(r.BaselineTime) / float64(r.OpTime)
}

// Rate is the operation's calls per second.
func (r Result) Rate() float64 { return rate(r.Calls, r.OpTime) }

// BaselineRate is the baseline's calls per second.
func (r Result) BaselineRate() float64 { return rate(r.Calls, r.BaselineTime) }

func rate(calls int, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(calls) / d.Seconds()
}

// Run makes calls of baseline and of op, each kind from cfg.Workers
// goroutines at a time, in alternating slices, starting with the baseline.
// settle, when not nil, runs after each slice of op and counts as part of
// it: it waits for work that op leaves to the background, such as a
// projector catching up, so that the work does not slow the next slice of
// the baseline instead. It stops at the first call that fails and returns
// its error.
func Run(ctx context.Context, cfg Config, baseline, op Op, settle func(context.Context) error) (Result, error) {
	if cfg.Workers < 1 {
		return Result{}, fmt.Errorf("alternate: %d workers", cfg.Workers)
	}
	if cfg.Calls <= 0 && cfg.Duration <= 0 {
		return Result{}, errors.New("alternate: neither calls nor a duration")
	}
	slice := cfg.SliceCalls
	if slice <= 0 {
		slice = SliceCalls
	}
	var res Result
	res.CPUKnown = true
	start := time.Now()
	for {
		if cfg.Calls > 0 && res.Calls >= cfg.Calls {
			break
		}
		if cfg.Duration > 0 && res.Calls > 0 && time.Since(start) >= cfg.Duration {
			break
		}
		n := slice
		if cfg.Calls > 0 {
			n = min(n, cfg.Calls-res.Calls)
		}
		busy, ok := MachineBusy()
		elapsed, lat, err := run(ctx, cfg.Workers, n, baseline)
		if err != nil {
			return res, fmt.Errorf("baseline: %w", err)
		}
		res.BaselineTime += elapsed
		res.BaselineLatencies = append(res.BaselineLatencies, lat...)
		busy, ok = addBusy(&res.BaselineCPU, busy, ok)
		t := time.Now()
		_, lat, err = run(ctx, cfg.Workers, n, op)
		if err != nil {
			return res, err
		}
		if settle != nil {
			if err := settle(ctx); err != nil {
				return res, fmt.Errorf("settle: %w", err)
			}
		}
		res.OpTime += time.Since(t)
		_, ok = addBusy(&res.OpCPU, busy, ok)
		res.CPUKnown = res.CPUKnown && ok
		res.Latencies = append(res.Latencies, lat...)
		res.Calls += n
	}
	slices.Sort(res.Latencies)
	slices.Sort(res.BaselineLatencies)
	return res, nil
}

// Calls makes n calls of op from workers goroutines, with no baseline, and
// returns the time they took together and the latency of each, sorted.
func Calls(ctx context.Context, workers, n int, op Op) (time.Duration, []time.Duration, error) {
	elapsed, lat, err := run(ctx, workers, n, op)
	slices.Sort(lat)
	return elapsed, lat, err
}

// Percentile returns the p-th quantile (0 to 1) of sorted; 0 for none.
func Percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[int(p*float64(len(sorted)-1))]
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
// took together and the latency of each. A call that fails stops its
// worker; the others finish.
func run(ctx context.Context, workers, n int, op Op) (time.Duration, []time.Duration, error) {
	var next atomic.Int64
	latencies := make([][]time.Duration, workers)
	errs := make([]error, workers)
	var wg sync.WaitGroup
	start := time.Now()
	for w := range workers {
		wg.Go(func() {
			for next.Add(1) <= int64(n) {
				if err := ctx.Err(); err != nil {
					errs[w] = err
					return
				}
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

// The baseline the ledger's appends are measured against: a plain
// single-row INSERT of BaselineEvent into a table with UNIQUE(stream,
// version), each call on a new stream. BaselineTable creates the table
// (the same text on PostgreSQL and SQLite, whose "jsonb" is a BLOB of
// JSON text here) and BaselineInsert writes one row ($1 stream, $2 data;
// SQLite takes the same placeholders).
const (
	BaselineEvent  = `{"handoff_id":"6f1c3a52-8d0e-4b7a-9a55-3c1de0f3b2a1","session_id":"0b8f9e3e-2a41-4f7c-8d1e-5b6a7c8d9e0f","engineer_notes":"customer VPN drops every 20 minutes; tried MTU 1400","priority":"high","at":"2026-11-25T12:00:00Z"}`
	BaselineTable  = `CREATE TABLE baseline (stream text NOT NULL, version bigint NOT NULL, data jsonb NOT NULL, UNIQUE (stream, version))`
	BaselineInsert = `INSERT INTO baseline (stream, version, data) VALUES ($1, 1, $2)`
)
