// Package ledgertest has the small helpers that tests of several ledger
// packages share: running a component (a projector, a relay, a tail) in
// the background for the length of a test, waiting for a condition, and a
// buffer that concurrent loggers can write to.
package ledgertest

import (
	"bytes"
	"context"
	"sync"
	"testing"
	"time"
)

// stopTimeout bounds how long stopping a component started with Go waits
// for it to return.
const stopTimeout = 15 * time.Second

// Go runs fn on another goroutine, with a context derived from ctx, until
// ctx ends, stop is called or tb has finished. Stopping cancels fn's
// context and waits for fn to return: an error from fn, or fn not
// returning within 15 seconds, fails tb, on the goroutine that stops it.
// name says what fn is in those failures. stop may be called more than
// once; tb's cleanup calls it.
func Go(ctx context.Context, tb testing.TB, name string, fn func(context.Context) error) (stop func()) {
	tb.Helper()
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- fn(ctx) }()
	stop = sync.OnceFunc(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				tb.Errorf("%s: %v", name, err)
			}
		case <-time.After(stopTimeout):
			tb.Errorf("%s did not stop within %v", name, stopTimeout)
		}
	})
	tb.Cleanup(stop)
	return stop
}

// WaitUntil polls cond until it holds, failing tb if it does not within
// limit. what says what the test waits for.
func WaitUntil(tb testing.TB, limit time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %v waiting until %s", limit, what)
		}
		time.Sleep(10 * time.Millisecond) // polling a condition, not ordering events
	}
}

// Buffer is a bytes.Buffer safe for concurrent writers, such as the
// handler of a logger that a test reads.
type Buffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
