package pgstore_test

import (
	"context"
	"os"
	"sync"
	"testing"

	"github.com/resolutionflow/ledgerd/eventstore"
	"github.com/resolutionflow/ledgerd/eventstore/pgstore"
	"github.com/resolutionflow/ledgerd/eventstore/storetest"
	"github.com/resolutionflow/ledgerd/internal/pgtest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// TestConformance runs the event store conformance suite on PostgreSQL,
// and checks that its concurrent appends were written in batches, some of
// which left an append out (a conflict, an event id taken).
func TestConformance(t *testing.T) {
	var (
		mu     sync.Mutex
		stores []*pgstore.Store
	)
	storetest.Run(t, func(t *testing.T) eventstore.Store {
		// A pool smaller than the suite's concurrent appends, so that
		// some find every connection writing and go in a batch.
		s := pgstore.New(pgtest.NewPool(t, 4))
		mu.Lock()
		defer mu.Unlock()
		stores = append(stores, s)
		return s
	})
	var batched, leftOut int64
	for _, s := range stores {
		b, l := s.Batched()
		batched, leftOut = batched+b, leftOut+l
	}
	t.Logf("%d appends written in batches, %d left out of theirs", batched, leftOut)
	if batched == 0 || leftOut == 0 {
		t.Errorf("%d appends written in batches, %d left out of a batch; want some of each", batched, leftOut)
	}
}

func TestConformance_Immutability(t *testing.T) {
	storetest.RunImmutability(t, func(t *testing.T) (eventstore.Store, storetest.Exec) {
		pool := openPool(t)
		return pgstore.New(pool), func(ctx context.Context, query string) error {
			_, err := pool.Exec(ctx, query)
			return err
		}
	}, `TRUNCATE events`,
		// The triggers are per statement: even a change of no row fails.
		`UPDATE events SET data = '{"a":2}' WHERE false`,
		// An upsert that would update fires the update trigger.
		`INSERT INTO events (id, stream, version, type, data, metadata, recorded_at, prev_hash, hash)
		 SELECT id, stream, version, type, data, metadata, recorded_at, prev_hash, hash FROM events WHERE version = 1
		 ON CONFLICT (id) DO UPDATE SET type = 'Tampered'`)
}
