package leader_test

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/resolutionflow/ledgerd/internal/pgtest"
	"github.com/resolutionflow/ledgerd/leader"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// takeover bounds how long a waiting locker may take to get a freed lock.
const takeover = 5 * time.Second

// implementations returns, for each Locker, a function that makes two
// lockers standing for two processes sharing one database.
func implementations() map[string]func(tb testing.TB) (a, b leader.Locker) {
	return map[string]func(tb testing.TB) (a, b leader.Locker){
		"Postgres": func(tb testing.TB) (a, b leader.Locker) {
			url := pgtest.NewDatabase(tb)
			return leader.NewPostgres(pgtest.Pool(tb, url, 0), slog.Default()), leader.NewPostgres(pgtest.Pool(tb, url, 0), slog.Default())
		},
		"Local": func(tb testing.TB) (a, b leader.Locker) {
			l := leader.NewLocal()
			return l, l
		},
	}
}

// forEachLocker runs test in parallel subtests, one per Locker.
func forEachLocker(t *testing.T, test func(t *testing.T, a, b leader.Locker)) {
	for name, open := range implementations() {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			a, b := open(t)
			test(t, a, b)
		})
	}
}

// acquisition is the outcome of an Acquire running in the background.
type acquisition struct {
	held    context.Context
	release func()
	err     error
}

// acquireAsync starts Acquire and returns a channel that yields its outcome.
func acquireAsync(ctx context.Context, l leader.Locker, name string) <-chan acquisition {
	out := make(chan acquisition, 1)
	go func() {
		held, release, err := l.Acquire(ctx, name)
		out <- acquisition{held, release, err}
	}()
	return out
}

func mustAcquire(tb testing.TB, l leader.Locker, name string) (context.Context, func()) {
	tb.Helper()
	a := awaitAcquired(tb, acquireAsync(tb.Context(), l, name))
	return a.held, a.release
}

// awaitAcquired waits for a background Acquire to succeed.
func awaitAcquired(tb testing.TB, pending <-chan acquisition) acquisition {
	tb.Helper()
	select {
	case a := <-pending:
		if a.err != nil {
			tb.Fatalf("acquire: %v", a.err)
		}
		tb.Cleanup(a.release)
		return a
	case <-time.After(takeover):
		tb.Fatalf("lock not acquired within %v", takeover)
	}
	panic("unreachable")
}

// awaitLost waits for a held context to be cancelled.
func awaitLost(tb testing.TB, held context.Context) {
	tb.Helper()
	select {
	case <-held.Done():
	case <-time.After(takeover):
		tb.Fatalf("held context still live %v after leadership was lost", takeover)
	}
}

// assertWaiting checks that a background Acquire has not returned.
func assertWaiting(tb testing.TB, pending <-chan acquisition) {
	tb.Helper()
	select {
	case a := <-pending:
		if a.err == nil {
			a.release()
		}
		tb.Fatalf("second locker got the lock while the first held it (err %v)", a.err)
	default:
	}
}

func TestLocker_SecondWaitsUntilRelease(t *testing.T) {
	forEachLocker(t, func(t *testing.T, a, b leader.Locker) {
		heldA, releaseA := mustAcquire(t, a, "projector")

		// While A holds, B's Acquire must wait until its context ends.
		ctx, cancel := context.WithTimeout(t.Context(), 1500*time.Millisecond)
		defer cancel()
		if _, _, err := b.Acquire(ctx, "projector"); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("second Acquire while held: err = %v, want deadline exceeded", err)
		}

		pending := acquireAsync(t.Context(), b, "projector")
		assertWaiting(t, pending)
		releaseA()
		awaitLost(t, heldA)
		heldB := awaitAcquired(t, pending).held
		if heldB.Err() != nil {
			t.Fatalf("B's held context is done right after acquiring: %v", heldB.Err())
		}
	})
}

func TestLocker_NamesAreIndependent(t *testing.T) {
	forEachLocker(t, func(t *testing.T, a, b leader.Locker) {
		mustAcquire(t, a, "projector")
		mustAcquire(t, b, "relay")
	})
}

func TestLocker_ContextEndReleases(t *testing.T) {
	forEachLocker(t, func(t *testing.T, a, b leader.Locker) {
		ctx, cancel := context.WithCancel(t.Context())
		heldA, releaseA, err := a.Acquire(ctx, "projector")
		if err != nil {
			t.Fatalf("acquire: %v", err)
		}
		defer releaseA()
		pending := acquireAsync(t.Context(), b, "projector")
		assertWaiting(t, pending)
		cancel()
		awaitLost(t, heldA)
		awaitAcquired(t, pending)
	})
}

func TestLocker_ReleaseTwiceIsHarmless(t *testing.T) {
	forEachLocker(t, func(t *testing.T, a, b leader.Locker) {
		_, release := mustAcquire(t, a, "projector")
		release()
		release()
		mustAcquire(t, b, "projector")
	})
}

// TestLocker_MutualExclusion has several contenders take the lock in turn,
// and fails if two ever hold it at once.
func TestLocker_MutualExclusion(t *testing.T) {
	forEachLocker(t, func(t *testing.T, a, b leader.Locker) {
		rounds := 3 // a PostgreSQL waiter retries twice a second
		if strings.HasSuffix(t.Name(), "/Local") {
			rounds = 200
		}
		var (
			holders, overlaps, acquired atomic.Int64
			wg                          sync.WaitGroup
			errs                        = make(chan error, 4)
		)
		for _, l := range []leader.Locker{a, b, a, b} {
			wg.Go(func() {
				for range rounds {
					// The lock lasts no longer than the context it was
					// acquired with, so cancel only after releasing.
					ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
					_, release, err := l.Acquire(ctx, "projector")
					if err != nil {
						cancel()
						errs <- err
						return
					}
					if holders.Add(1) > 1 {
						overlaps.Add(1)
					}
					runtime.Gosched() // let another contender in, if the lock would
					acquired.Add(1)
					holders.Add(-1)
					release()
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
			t.Errorf("the lock was held twice at once %d times", overlaps.Load())
		}
		if want := int64(4 * rounds); acquired.Load() != want {
			t.Errorf("acquired %d times, want %d", acquired.Load(), want)
		}
	})
}

// TestPostgres_TakeoverWhenHolderConnectionDies kills the holder's lock
// connection from the admin side, as a crash or a network cut would: the
// waiting process must take over and the holder must learn it has lost.
func TestPostgres_TakeoverWhenHolderConnectionDies(t *testing.T) {
	t.Parallel()
	url := pgtest.NewDatabase(t)
	admin := pgtest.Pool(t, url, 0)
	a := leader.NewPostgres(pgtest.Pool(t, url, 0), slog.Default())
	b := leader.NewPostgres(pgtest.Pool(t, url, 0), slog.Default())

	holder, waiter := a, b
	held, _ := mustAcquire(t, holder, "projector")
	for round := range 3 {
		pending := acquireAsync(t.Context(), waiter, "projector")
		assertWaiting(t, pending)
		terminateLockHolder(t, admin)
		awaitLost(t, held)
		held = awaitAcquired(t, pending).held
		if got := lockHolders(t, admin); got != 1 {
			t.Fatalf("round %d: %d sessions hold an advisory lock after takeover, want 1", round, got)
		}
		holder, waiter = waiter, holder
	}
}

// terminateLockHolder ends the session holding the advisory lock in the
// test's database.
func terminateLockHolder(tb testing.TB, admin *pgxpool.Pool) {
	tb.Helper()
	var terminated int
	err := admin.QueryRow(tb.Context(), `
		SELECT count(*) FILTER (WHERE pg_terminate_backend(pid))
		FROM pg_locks
		WHERE locktype = 'advisory' AND granted
		  AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`).Scan(&terminated)
	if err != nil {
		tb.Fatalf("terminate lock holder: %v", err)
	}
	if terminated != 1 {
		tb.Fatalf("terminated %d lock-holding sessions, want 1", terminated)
	}
}

func lockHolders(tb testing.TB, admin *pgxpool.Pool) int {
	tb.Helper()
	var n int
	err := admin.QueryRow(tb.Context(), `
		SELECT count(DISTINCT pid) FROM pg_locks
		WHERE locktype = 'advisory' AND granted
		  AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`).Scan(&n)
	if err != nil {
		tb.Fatalf("count lock holders: %v", err)
	}
	return n
}
