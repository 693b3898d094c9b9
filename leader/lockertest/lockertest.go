// Package lockertest is the conformance suite of leader.Locker: the
// behaviour every locker must have, run against each (leader.NewLocal,
// pgleader) with two lockers standing for two processes, and the helpers
// a locker's own tests use.
package lockertest

import (
	"context"
	"errors"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/resolutionflow/ledgerd/leader"
)

// Takeover bounds how long a waiting locker may take to get a freed lease.
const Takeover = 5 * time.Second

// Run runs the suite, each test in a parallel subtest on a pair of lockers
// that open makes: two processes' lockers sharing one database, or one
// process's locker twice. fenced says whether each new holder's Fence has
// a token one more than the last holder's, as PostgreSQL's do.
func Run(t *testing.T, open func(tb testing.TB) (a, b leader.Locker), fenced bool) {
	t.Parallel()
	for name, test := range map[string]func(t *testing.T, a, b leader.Locker, fenced bool){
		"SecondWaitsUntilRelease": testSecondWaitsUntilRelease,
		"NamesAreIndependent":     testNamesAreIndependent,
		"ContextEndReleases":      testContextEndReleases,
		"ReleaseTwiceIsHarmless":  testReleaseTwiceIsHarmless,
		"MutualExclusion":         testMutualExclusion,
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			a, b := open(t)
			test(t, a, b, fenced)
		})
	}
}

// Acquisition is the outcome of an Acquire running in the background.
type Acquisition struct {
	Lease *leader.Lease
	Err   error
}

// AcquireAsync starts Acquire and returns a channel that yields its outcome.
func AcquireAsync(ctx context.Context, l leader.Locker, name string) <-chan Acquisition {
	out := make(chan Acquisition, 1)
	go func() {
		lease, err := l.Acquire(ctx, name)
		out <- Acquisition{Lease: lease, Err: err}
	}()
	return out
}

// MustAcquire acquires the named lease of l, failing tb after Takeover;
// the lease is released when the test ends.
func MustAcquire(tb testing.TB, l leader.Locker, name string) *leader.Lease {
	tb.Helper()
	return AwaitAcquired(tb, AcquireAsync(tb.Context(), l, name))
}

// AwaitAcquired waits for a background Acquire to succeed.
func AwaitAcquired(tb testing.TB, pending <-chan Acquisition) *leader.Lease {
	tb.Helper()
	select {
	case a := <-pending:
		if a.Err != nil {
			tb.Fatalf("acquire: %v", a.Err)
		}
		tb.Cleanup(a.Lease.Release)
		return a.Lease
	case <-time.After(Takeover):
		tb.Fatalf("lease not acquired within %v", Takeover)
	}
	panic("unreachable")
}

// AwaitLost waits for a lease's context to be cancelled.
func AwaitLost(tb testing.TB, lease *leader.Lease) {
	tb.Helper()
	select {
	case <-lease.Context().Done():
	case <-time.After(Takeover):
		tb.Fatalf("lease context still live %v after leadership was lost", Takeover)
	}
}

// AssertWaiting checks that a background Acquire has not returned.
func AssertWaiting(tb testing.TB, pending <-chan Acquisition) {
	tb.Helper()
	select {
	case a := <-pending:
		if a.Err == nil {
			a.Lease.Release()
		}
		tb.Fatalf("second locker got the lease while the first held it (err %v)", a.Err)
	default:
	}
}

func testSecondWaitsUntilRelease(t *testing.T, a, b leader.Locker, fenced bool) {
	leaseA := MustAcquire(t, a, "projector")

	// While A holds, B's Acquire must wait until its context ends.
	ctx, cancel := context.WithTimeout(t.Context(), 1500*time.Millisecond)
	defer cancel()
	if _, err := b.Acquire(ctx, "projector"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("second Acquire while held: err = %v, want deadline exceeded", err)
	}

	pending := AcquireAsync(t.Context(), b, "projector")
	AssertWaiting(t, pending)
	leaseA.Release()
	AwaitLost(t, leaseA)
	leaseB := AwaitAcquired(t, pending)
	if err := leaseB.Context().Err(); err != nil {
		t.Fatalf("B's lease context is done right after acquiring: %v", err)
	}
}

func testNamesAreIndependent(t *testing.T, a, b leader.Locker, fenced bool) {
	MustAcquire(t, a, "projector")
	MustAcquire(t, b, "relay")
}

func testContextEndReleases(t *testing.T, a, b leader.Locker, fenced bool) {
	ctx, cancel := context.WithCancel(t.Context())
	leaseA, err := a.Acquire(ctx, "projector")
	if err != nil {
		t.Fatalf("acquire: %v", err)
	}
	defer leaseA.Release()
	pending := AcquireAsync(t.Context(), b, "projector")
	AssertWaiting(t, pending)
	cancel()
	AwaitLost(t, leaseA)
	AwaitAcquired(t, pending)
}

func testReleaseTwiceIsHarmless(t *testing.T, a, b leader.Locker, fenced bool) {
	lease := MustAcquire(t, a, "projector")
	lease.Release()
	lease.Release()
	MustAcquire(t, b, "projector")
}

// testMutualExclusion has contenders of two lockers (two processes,
// each with two goroutines) take the lease in turn, many times, and fails
// if two ever hold it at once or, when fenced, a lease's token does not
// grow with each new holder.
func testMutualExclusion(t *testing.T, a, b leader.Locker, fenced bool) {
	const rounds = 50
	var (
		holders, overlaps atomic.Int64
		mu                sync.Mutex
		tokens            []int64 // in the order the lease was held
		wg                sync.WaitGroup
		errs              = make(chan error, 4)
	)
	for _, l := range []leader.Locker{a, b, a, b} {
		wg.Go(func() {
			for range rounds {
				// The lease lasts no longer than the context it was
				// acquired with, so cancel only after releasing.
				ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
				lease, err := l.Acquire(ctx, "projector")
				if err != nil {
					cancel()
					errs <- err
					return
				}
				if holders.Add(1) > 1 {
					overlaps.Add(1)
				}
				mu.Lock()
				tokens = append(tokens, lease.Fence().Token)
				mu.Unlock()
				runtime.Gosched() // let another contender in, if the lease would
				holders.Add(-1)
				lease.Release()
				cancel()
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("contender: %v", err)
	}
	if overlaps.Load() != 0 {
		t.Errorf("the lease was held twice at once %d times", overlaps.Load())
	}
	if len(tokens) != 4*rounds {
		t.Errorf("acquired %d times, want %d", len(tokens), 4*rounds)
	}
	if fenced {
		for i := 1; i < len(tokens); i++ {
			if tokens[i] != tokens[i-1]+1 {
				t.Fatalf("holder %d got token %d after %d, want each new holder one more", i, tokens[i], tokens[i-1])
			}
		}
	}
}
