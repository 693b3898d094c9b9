package pgleader_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/resolutionflow/ledgerd/internal/ledgertest"
	"github.com/resolutionflow/ledgerd/internal/pgtest"
	"github.com/resolutionflow/ledgerd/leader"
	"github.com/resolutionflow/ledgerd/leader/lockertest"
	"github.com/resolutionflow/ledgerd/leader/pgleader"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// slack is what a lockertest.Takeover may take beyond its documented bound on a busy
// test machine.
const slack = 2 * time.Second

// quick are timings for tests that take a lease many times; they keep the
// default TTL.
var quick = pgleader.Config{RetryInterval: 5 * time.Millisecond}

// newPostgres returns a PostgreSQL locker on a pool of its own, as another
// process would have, named process in pg_stat_activity.
func newPostgres(tb testing.TB, url, process string, cfg pgleader.Config) *pgleader.Locker {
	tb.Helper()
	pool := pgtest.Pool(tb, url, 0, func(c *pgxpool.Config) {
		c.ConnConfig.RuntimeParams["application_name"] = process
	})
	l, err := pgleader.New(pool, slog.Default().With("process", process), cfg)
	if err != nil {
		tb.Fatal(err)
	}
	return l
}

// TestLocker runs the conformance suite on two PostgreSQL lockers standing
// for two processes sharing one database.
func TestLocker(t *testing.T) {
	lockertest.Run(t, func(tb testing.TB) (a, b leader.Locker) {
		url := pgtest.NewDatabase(tb)
		return newPostgres(tb, url, "a", quick), newPostgres(tb, url, "b", quick)
	}, true)
}

// freezeRenewals makes l's holders stop renewing their leases from their
// next renewal on, as if their process had frozen. It must be called
// before l's first Acquire. frozen is closed when a renewal is first held
// up; thaw lets the renewals go on, and must be called before the frozen
// lease is released.
func freezeRenewals(l *pgleader.Locker) (frozen <-chan struct{}, thaw func()) {
	stopped, thawed := make(chan struct{}), make(chan struct{})
	once := sync.OnceFunc(func() { close(stopped) })
	pgleader.SetBeforeRenew(l, func() {
		once()
		<-thawed
	})
	return stopped, sync.OnceFunc(func() { close(thawed) })
}

// TestPostgres_FrozenHolderIsReplaced freezes the holder's renewals: its
// process is alive and connected, as one stopped with SIGSTOP, but it no
// longer renews. Another process must take over within the lease's TTL and
// one retry interval, and the frozen holder's lease context must have been
// cancelled (its jobs told to stop) before the successor acquired.
func TestPostgres_FrozenHolderIsReplaced(t *testing.T) {
	t.Parallel()
	url := pgtest.NewDatabase(t)
	a := newPostgres(t, url, "a", pgleader.Config{})
	b := newPostgres(t, url, "b", pgleader.Config{})
	frozen, thaw := freezeRenewals(a)

	leaseA, err := a.Acquire(t.Context(), "projector")
	if err != nil {
		t.Fatal(err)
	}
	defer leaseA.Release()
	defer thaw()
	pending := lockertest.AcquireAsync(t.Context(), b, "projector")
	select {
	case <-frozen:
	case <-time.After(lockertest.Takeover):
		t.Fatal("the holder never tried to renew")
	}
	frozenAt := time.Now()
	bound := pgleader.DefaultTTL + pgleader.DefaultRetryInterval
	select {
	case got := <-pending:
		if got.Err != nil {
			t.Fatalf("acquire: %v", got.Err)
		}
		defer got.Lease.Release()
		if leaseA.Context().Err() == nil {
			t.Fatal("the successor acquired while the frozen holder's lease context was still live")
		}
		if took := time.Since(frozenAt); took > bound+slack {
			t.Errorf("the successor took over %v after the freeze, want at most %v", took, bound)
		}
		if want := leaseA.Fence().Token + 1; got.Lease.Fence().Token != want {
			t.Errorf("successor's token = %d, want %d", got.Lease.Fence().Token, want)
		}
	case <-time.After(bound + slack):
		t.Fatalf("the frozen holder was not replaced within %v", bound+slack)
	}
}

// TestPostgres_CutOffHolderStopsBeforeTakeover cuts the holder off the
// database (its connections killed, new ones refused) round after round:
// the holder must give leadership up before its lease expires, and the
// other process must then take over.
func TestPostgres_CutOffHolderStopsBeforeTakeover(t *testing.T) {
	t.Parallel()
	url := pgtest.NewDatabase(t)
	admin := pgtest.Pool(t, url, 1)
	cfg := pgleader.Config{TTL: time.Second, RenewInterval: 200 * time.Millisecond, Margin: 300 * time.Millisecond, RetryInterval: 50 * time.Millisecond}
	var offline [2]atomic.Bool
	lockers := make([]leader.Locker, 2)
	for i := range lockers {
		name := fmt.Sprintf("p%d", i)
		pool := pgtest.Pool(t, url, 0, func(c *pgxpool.Config) {
			c.ConnConfig.RuntimeParams["application_name"] = name
			c.BeforeConnect = func(context.Context, *pgx.ConnConfig) error {
				if offline[i].Load() {
					return fmt.Errorf("process %s is offline", name)
				}
				return nil
			}
		})
		l, err := pgleader.New(pool, slog.Default().With("process", name), cfg)
		if err != nil {
			t.Fatal(err)
		}
		lockers[i] = l
	}

	holder := lockertest.MustAcquire(t, lockers[0], "relay")
	for round := range 4 {
		from, to := round%2, 1-round%2
		pending := lockertest.AcquireAsync(t.Context(), lockers[to], "relay")
		offline[from].Store(true)
		terminate(t, admin, fmt.Sprintf("p%d", from))
		successor := lockertest.AwaitAcquired(t, pending)
		if holder.Context().Err() == nil {
			t.Fatalf("round %d: the successor acquired while the cut-off holder's lease context was still live", round)
		}
		if successor.Fence().Token <= holder.Fence().Token {
			t.Fatalf("round %d: successor's token %d is not above %d", round, successor.Fence().Token, holder.Fence().Token)
		}
		offline[from].Store(false)
		holder.Release()
		holder = successor
	}
}

// TestPostgres_HolderTakesItsLeaseBack cuts the holder off the database
// until it has stepped down, its release failing: once back, it takes its
// own lease again at once, without waiting for the lease to expire, while
// another process waiting for the lease still waits.
func TestPostgres_HolderTakesItsLeaseBack(t *testing.T) {
	t.Parallel()
	url := pgtest.NewDatabase(t)
	admin := pgtest.Pool(t, url, 1)
	// The holder steps down 2s after its last renewal; the lease expires
	// 8s later.
	cfg := pgleader.Config{TTL: 10 * time.Second, Margin: 8 * time.Second, RenewInterval: 500 * time.Millisecond, RetryInterval: 50 * time.Millisecond}
	var offline atomic.Bool
	pool := pgtest.Pool(t, url, 0, func(c *pgxpool.Config) {
		c.ConnConfig.RuntimeParams["application_name"] = "a"
		c.BeforeConnect = func(context.Context, *pgx.ConnConfig) error {
			if offline.Load() {
				return errors.New("process a is offline")
			}
			return nil
		}
	})
	a, err := pgleader.New(pool, slog.Default(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	b := newPostgres(t, url, "b", cfg)

	first := lockertest.MustAcquire(t, a, "relay")
	pending := lockertest.AcquireAsync(t.Context(), b, "relay")
	offline.Store(true)
	terminate(t, admin, "a")
	lockertest.AwaitLost(t, first)
	first.Release()
	offline.Store(false)
	again := lockertest.MustAcquire(t, a, "relay")
	lockertest.AssertWaiting(t, pending)
	if err := pgleader.CheckFence(t.Context(), admin, again.Fence()); err != nil {
		t.Fatalf("fence of the lease taken back: %v", err)
	}
}

// TestPostgres_CancelledAcquireLeavesTheLeaseFree cancels an Acquire while
// its take of a free lease waits at the server (for a row lock the test
// holds): the take must not go on to take the lease for nobody, so another
// process gets it at once, not after the lease's TTL.
func TestPostgres_CancelledAcquireLeavesTheLeaseFree(t *testing.T) {
	t.Parallel()
	url := pgtest.NewDatabase(t)
	admin := pgtest.Pool(t, url, 2)
	a := newPostgres(t, url, "a", quick)
	b := newPostgres(t, url, "b", quick)
	lockertest.MustAcquire(t, b, "relay").Release() // the lease's row exists, free

	tx, err := admin.Begin(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(context.Background())
	if _, err := tx.Exec(t.Context(), `SELECT 1 FROM leader_leases WHERE name = 'relay' FOR UPDATE`); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	pending := lockertest.AcquireAsync(ctx, a, "relay")
	ledgertest.WaitUntil(t, lockertest.Takeover, "a's take waits for the row lock", func() bool {
		var waiting int
		err := admin.QueryRow(t.Context(), `SELECT count(*) FROM pg_stat_activity
			WHERE application_name = 'a' AND datname = current_database() AND wait_event_type = 'Lock'`).Scan(&waiting)
		if err != nil {
			t.Fatal(err)
		}
		return waiting == 1
	})
	cancel()
	if err := tx.Commit(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := <-pending; !errors.Is(got.Err, context.Canceled) {
		if got.Err == nil {
			got.Lease.Release()
		}
		t.Fatalf("cancelled Acquire: %v, want context canceled", got.Err)
	}
	// Well within the TTL a lease taken for nobody would last.
	bctx, bcancel := context.WithTimeout(t.Context(), pgleader.DefaultTTL/3)
	defer bcancel()
	lease, err := b.Acquire(bctx, "relay")
	if err != nil {
		t.Fatalf("another process cannot take the lease after a cancelled Acquire: %v", err)
	}
	lease.Release()
}

// terminate ends every session of the named process on the test's database.
func terminate(tb testing.TB, admin *pgxpool.Pool, process string) {
	tb.Helper()
	_, err := admin.Exec(tb.Context(), `
		SELECT pg_terminate_backend(pid) FROM pg_stat_activity
		WHERE application_name = $1 AND datname = current_database()`, process)
	if err != nil {
		tb.Fatalf("terminate connections of %s: %v", process, err)
	}
}

// TestPostgres_CheckFence checks that a fence is valid while its lease is
// held and refused with ErrDeposed once the lease has passed to another
// holder or was released, and that an unchecked fence always passes.
func TestPostgres_CheckFence(t *testing.T) {
	t.Parallel()
	url := pgtest.NewDatabase(t)
	admin := pgtest.Pool(t, url, 1)
	a := newPostgres(t, url, "a", quick)
	b := newPostgres(t, url, "b", quick)
	check := func(f leader.Fence) error { return pgleader.CheckFence(t.Context(), admin, f) }

	if err := check(leader.Fence{}); err != nil {
		t.Fatalf("unchecked fence: %v", err)
	}
	if err := check(leader.Fence{Name: "projector", Token: 1}); !errors.Is(err, leader.ErrDeposed) {
		t.Fatalf("fence of a lease never taken: %v, want ErrDeposed", err)
	}
	leaseA := lockertest.MustAcquire(t, a, "projector")
	if err := check(leaseA.Fence()); err != nil {
		t.Fatalf("fence of the held lease: %v", err)
	}
	leaseA.Release()
	if err := check(leaseA.Fence()); !errors.Is(err, leader.ErrDeposed) {
		t.Fatalf("fence of a released lease: %v, want ErrDeposed", err)
	}
	leaseB := lockertest.MustAcquire(t, b, "projector")
	if err := check(leaseA.Fence()); !errors.Is(err, leader.ErrDeposed) {
		t.Fatalf("fence of the holder before: %v, want ErrDeposed", err)
	}
	if err := check(leaseB.Fence()); err != nil {
		t.Fatalf("fence of the new holder: %v", err)
	}
}

func TestNew_RefusesInconsistentTimings(t *testing.T) {
	for _, cfg := range []pgleader.Config{
		{TTL: time.Second, Margin: time.Second},
		{TTL: 2 * time.Second, Margin: time.Second, RenewInterval: time.Second},
		{RetryInterval: -time.Second},
	} {
		if _, err := pgleader.New(nil, nil, cfg); err == nil {
			t.Errorf("New with %+v succeeded", cfg)
		}
	}
}
