package ledgertest_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/resolutionflow/ledgerd/internal/ledgertest"
)

// recorder is a testing.TB that records failures and cleanups instead of
// acting on them, so that a test can check what a helper reports.
type recorder struct {
	testing.TB
	mu       sync.Mutex
	failures []string
	cleanups []func()
}

func (r *recorder) Errorf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.failures = append(r.failures, fmt.Sprintf(format, args...))
}

func (r *recorder) Fatalf(format string, args ...any) {
	r.Errorf(format, args...)
	runtime.Goexit()
}

func (r *recorder) Cleanup(fn func()) { r.cleanups = append(r.cleanups, fn) }

func (r *recorder) runCleanups() {
	for i := len(r.cleanups) - 1; i >= 0; i-- {
		r.cleanups[i]()
	}
}

func (r *recorder) failed() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.failures
}

// untilCanceled returns a component that runs until its context ends and
// then returns err, and a flag set once it has returned.
func untilCanceled(err error) (func(context.Context) error, *atomic.Bool) {
	var returned atomic.Bool
	return func(ctx context.Context) error {
		<-ctx.Done()
		returned.Store(true)
		return err
	}, &returned
}

func TestGo_StopCancelsAndWaits(t *testing.T) {
	r := &recorder{TB: t}
	fn, returned := untilCanceled(nil)
	stop := ledgertest.Go(context.Background(), r, "component", fn)
	if returned.Load() {
		t.Fatal("the component returned before it was stopped")
	}
	stop()
	if !returned.Load() {
		t.Fatal("stop returned before the component did")
	}
	stop()
	r.runCleanups()
	if f := r.failed(); len(f) != 0 {
		t.Fatalf("a clean stop failed the test: %q", f)
	}
}

func TestGo_CleanupStops(t *testing.T) {
	r := &recorder{TB: t}
	fn, returned := untilCanceled(nil)
	ledgertest.Go(context.Background(), r, "component", fn)
	r.runCleanups()
	if !returned.Load() {
		t.Fatal("the test's cleanup did not stop the component")
	}
}

func TestGo_ParentContextStops(t *testing.T) {
	r := &recorder{TB: t}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	ledgertest.Go(ctx, r, "component", func(ctx context.Context) error {
		<-ctx.Done()
		close(done)
		return nil
	})
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the component kept running after its parent context ended")
	}
	r.runCleanups()
}

func TestGo_ReportsTheComponentsError(t *testing.T) {
	r := &recorder{TB: t}
	fn, _ := untilCanceled(errors.New("lost the database"))
	ledgertest.Go(context.Background(), r, "projector of a", fn)
	r.runCleanups()
	f := r.failed()
	if len(f) != 1 || !strings.Contains(f[0], "projector of a") || !strings.Contains(f[0], "lost the database") {
		t.Fatalf("failures = %q, want one naming the component and its error", f)
	}
}

func TestWaitUntil_ReturnsOnceTheConditionHolds(t *testing.T) {
	var calls atomic.Int32
	ledgertest.WaitUntil(t, 10*time.Second, "the third call", func() bool { return calls.Add(1) == 3 })
	if n := calls.Load(); n != 3 {
		t.Fatalf("cond called %d times, want 3", n)
	}
}

func TestWaitUntil_FailsAfterTheLimit(t *testing.T) {
	r := &recorder{TB: t}
	done := make(chan struct{})
	go func() { // Fatalf ends this goroutine, as it would a test's
		defer close(done)
		ledgertest.WaitUntil(r, 50*time.Millisecond, "never", func() bool { return false })
	}()
	<-done
	f := r.failed()
	if len(f) != 1 || !strings.Contains(f[0], "never") {
		t.Fatalf("failures = %q, want one saying what it waited for", f)
	}
}
