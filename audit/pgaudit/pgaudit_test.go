package pgaudit_test

import (
	"os"
	"testing"

	"github.com/resolutionflow/ledgerd/audit"
	"github.com/resolutionflow/ledgerd/audit/audittest"
	"github.com/resolutionflow/ledgerd/audit/pgaudit"
	"github.com/resolutionflow/ledgerd/internal/pgtest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

func TestConformance(t *testing.T) {
	audittest.Run(t, func(tb testing.TB) audit.Store {
		return pgaudit.New(pgtest.NewPool(tb, 0))
	})
}
