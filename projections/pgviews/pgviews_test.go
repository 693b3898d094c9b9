package pgviews_test

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/resolutionflow/ledgerd/domain"
	"github.com/resolutionflow/ledgerd/eventstore/pgstore"
	"github.com/resolutionflow/ledgerd/internal/pgtest"
	"github.com/resolutionflow/ledgerd/leader"
	"github.com/resolutionflow/ledgerd/leader/pgleader"
	"github.com/resolutionflow/ledgerd/projections"
	"github.com/resolutionflow/ledgerd/projections/pgviews"
	"github.com/resolutionflow/ledgerd/projections/storetest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

func TestStore(t *testing.T) {
	storetest.Run(t, func(tb testing.TB) projections.Store {
		tb.Helper()
		return pgviews.New(pgtest.NewPool(tb, 0))
	})
}

func TestProjector(t *testing.T) {
	storetest.RunProjector(t, func(tb testing.TB) storetest.Ledger {
		tb.Helper()
		pool := pgtest.NewPool(tb, 0)
		return storetest.Ledger{
			Log:   pgstore.New(pool),
			Views: pgviews.New(pool),
			Refuse: func(tb testing.TB, notes string) {
				tb.Helper()
				exec(tb, pool, `ALTER TABLE handoffs ADD CONSTRAINT test_refused CHECK (engineer_notes <> '`+notes+`')`)
			},
			BreakCheckpoints: func(tb testing.TB) func() {
				tb.Helper()
				exec(tb, pool, `
CREATE FUNCTION test_break() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'checkpoints broken by the test'; END $$;
CREATE TRIGGER test_break BEFORE INSERT OR UPDATE ON checkpoints FOR EACH ROW EXECUTE FUNCTION test_break()`)
				return func() { exec(tb, pool, `DROP TRIGGER test_break ON checkpoints; DROP FUNCTION test_break()`) }
			},
			Dump: func(tb testing.TB) string {
				tb.Helper()
				var dump string
				err := pool.QueryRow(tb.Context(), `SELECT coalesce(json_agg(h ORDER BY id), '[]')::text FROM handoffs h`).Scan(&dump)
				if err != nil {
					tb.Fatalf("dump handoffs: %v", err)
				}
				return dump
			},
		}
	})
}

func exec(tb testing.TB, pool *pgxpool.Pool, sql string) {
	tb.Helper()
	if _, err := pool.Exec(context.Background(), sql); err != nil {
		tb.Fatalf("%s: %v", sql, err)
	}
}

// TestUpdate_FencedByLease moves the checkpoint as a leader that lost its
// lease after its successor took it: before and after the successor has
// moved the checkpoint on, the deposed leader's move is refused with
// leader.ErrDeposed and changes nothing, although its compare-and-set
// alone would pass. A rebuild's unchecked fence moves on.
func TestUpdate_FencedByLease(t *testing.T) {
	url := pgtest.NewDatabase(t)
	pool := pgtest.Pool(t, url, 0)
	store := pgviews.New(pool)
	lockers := make([]leader.Locker, 2)
	for i := range lockers {
		var err error
		// Leases that last however slow the machine.
		cfg := pgleader.Config{TTL: time.Minute, RenewInterval: 30 * time.Second}
		if lockers[i], err = pgleader.New(pgtest.Pool(t, url, 0), nil, cfg); err != nil {
			t.Fatal(err)
		}
	}
	name := projections.HandoffsProjector
	move := func(fence leader.Fence, from, to int64) error {
		return store.Update(t.Context(), fence, name, from, to, func(tx projections.Tx) error {
			h := domain.Handoff{
				ID: uuid.New(), SessionID: uuid.New(), AccountID: uuid.New(), TeamID: uuid.New(), Intent: domain.IntentPark,
				Priority: domain.PriorityNormal, Status: domain.StatusOpen, CreatedBy: uuid.New(), CreatedAt: time.Now().UTC(),
			}
			return tx.PutHandoff(t.Context(), h, to)
		})
	}
	rows := func() (n int) {
		if err := pool.QueryRow(t.Context(), `SELECT count(*) FROM handoffs`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	acquire := func(l leader.Locker) *leader.Lease {
		lease, err := l.Acquire(t.Context(), name) // the lease is free: no wait

		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(lease.Release)
		return lease
	}

	deposed := acquire(lockers[0])
	if err := move(deposed.Fence(), 0, 5); err != nil {
		t.Fatalf("move by the leader: %v", err)
	}
	// The leader's lease ends (it froze past the expiry, or released it)
	// while it still means to move the checkpoint.
	deposed.Release()
	successor := acquire(lockers[1])
	if err := move(deposed.Fence(), 5, 7); !errors.Is(err, leader.ErrDeposed) {
		t.Fatalf("move by the deposed leader before the successor's = %v, want ErrDeposed", err)
	}
	if err := move(successor.Fence(), 5, 8); err != nil {
		t.Fatalf("move by the successor: %v", err)
	}
	if err := move(deposed.Fence(), 8, 9); !errors.Is(err, leader.ErrDeposed) {
		t.Fatalf("move by the deposed leader after the successor's = %v, want ErrDeposed", err)
	}
	if got := storetest.Checkpoint(t, store); got != 8 || rows() != 2 {
		t.Fatalf("after the deposed leader's moves: checkpoint %d and %d handoffs, want 8 and 2", got, rows())
	}
	if err := move(leader.Fence{}, 8, 10); err != nil {
		t.Fatalf("unfenced move (a rebuild's): %v", err)
	}
	if got := storetest.Checkpoint(t, store); got != 10 || rows() != 3 {
		t.Fatalf("after the unfenced move: checkpoint %d and %d handoffs, want 10 and 3", got, rows())
	}
}
