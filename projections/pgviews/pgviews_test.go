package pgviews_test

import (
	"os"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/resolutionflow/ledgerd/internal/pgtest"
	"github.com/resolutionflow/ledgerd/projections"
	"github.com/resolutionflow/ledgerd/projections/pgviews"
	"github.com/resolutionflow/ledgerd/projections/storetest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

func TestStore(t *testing.T) {
	storetest.Run(t, func(tb testing.TB) projections.Store {
		tb.Helper()
		pool, err := pgxpool.New(tb.Context(), pgtest.NewDatabase(tb))
		if err != nil {
			tb.Fatalf("open pool: %v", err)
		}
		tb.Cleanup(pool.Close)
		return pgviews.New(pool)
	})
}
