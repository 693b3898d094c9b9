package pgviews_test

import (
	"os"
	"testing"

	"github.com/resolutionflow/ledgerd/internal/pgtest"
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
