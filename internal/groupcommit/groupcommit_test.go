package groupcommit_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/resolutionflow/ledgerd/internal/groupcommit"
)

// TestQueueBatchesWhileWriting holds the first write until every other
// caller is queued, and checks that they are then written as one batch,
// each getting its own error.
func TestQueueBatchesWhileWriting(t *testing.T) {
	release := make(chan struct{})
	var (
		mu      sync.Mutex
		batches [][]int
	)
	q := &groupcommit.Queue[int]{Write: func(_ context.Context, items []int) []error {
		mu.Lock()
		first := len(batches) == 0
		batches = append(batches, append([]int(nil), items...))
		mu.Unlock()
		if first {
			<-release
		}
		errs := make([]error, len(items))
		for i, it := range items {
			if it%2 == 1 {
				errs[i] = fmt.Errorf("odd %d", it)
			}
		}
		return errs
	}}
	const n = 10
	errs := make([]error, n)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); errs[0] = q.Do(context.Background(), 0) }()
	waitFor(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(batches) == 1 })
	for i := 1; i < n; i++ {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = q.Do(context.Background(), i) }()
	}
	waitFor(t, func() bool { return q.Queued() == n-1 })
	close(release)
	wg.Wait()
	if len(batches) != 2 || len(batches[0]) != 1 || len(batches[1]) != n-1 {
		t.Fatalf("batches = %v, want [0] and then the other %d together", batches, n-1)
	}
	for i, err := range errs {
		if (err != nil) != (i%2 == 1) {
			t.Errorf("item %d: err = %v", i, err)
		}
	}
}

// TestQueueCancelWhileQueued checks that a caller whose context ends while
// it waits for its turn leaves without its item being written.
func TestQueueCancelWhileQueued(t *testing.T) {
	release := make(chan struct{})
	var written atomic.Int64
	q := &groupcommit.Queue[int]{Write: func(_ context.Context, items []int) []error {
		if items[0] == 0 {
			<-release
		}
		for _, it := range items {
			written.Add(int64(it))
		}
		return make([]error, len(items))
	}}
	done := make(chan error)
	go func() { done <- q.Do(context.Background(), 0) }()
	waitFor(t, func() bool { return q.Writing() })
	ctx, cancel := context.WithCancel(context.Background())
	cancelled := make(chan error)
	go func() { cancelled <- q.Do(ctx, 5) }()
	waitFor(t, func() bool { return q.Queued() == 1 })
	cancel()
	if err := <-cancelled; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled Do = %v, want context.Canceled", err)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := q.Do(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
	if got := written.Load(); got != 1 {
		t.Errorf("written sum = %d, want 1 (the cancelled 5 not written)", got)
	}
}

// TestQueueConcurrent runs many callers and checks every item is written
// exactly once and that no more batches than Writers are written at once.
func TestQueueConcurrent(t *testing.T) {
	for _, writers := range []int{1, 3} {
		t.Run(fmt.Sprintf("writers=%d", writers), func(t *testing.T) { testQueueConcurrent(t, writers) })
	}
}

func testQueueConcurrent(t *testing.T, writers int) {
	var (
		seen   sync.Map
		active atomic.Int32
		bad    atomic.Bool
	)
	q := &groupcommit.Queue[int]{MaxItems: 7, Writers: writers, Write: func(_ context.Context, items []int) []error {
		if active.Add(1) > int32(writers) || len(items) > 7 {
			bad.Store(true)
		}
		for _, it := range items {
			if _, dup := seen.LoadOrStore(it, true); dup {
				bad.Store(true)
			}
		}
		time.Sleep(100 * time.Microsecond)
		active.Add(-1)
		return make([]error, len(items))
	}}
	var wg sync.WaitGroup
	for w := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 50 {
				if err := q.Do(context.Background(), w*1000+i); err != nil {
					bad.Store(true)
				}
			}
		}()
	}
	wg.Wait()
	n := 0
	seen.Range(func(any, any) bool { n++; return true })
	if bad.Load() || n != 16*50 {
		t.Fatalf("bad = %v, written %d items, want %d", bad.Load(), n, 16*50)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		time.Sleep(time.Millisecond)
	}
}
