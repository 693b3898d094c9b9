package sqliteaudit_test

import (
	"testing"

	"github.com/resolutionflow/ledgerd/audit"
	"github.com/resolutionflow/ledgerd/audit/audittest"
	"github.com/resolutionflow/ledgerd/audit/sqliteaudit"
	"github.com/resolutionflow/ledgerd/internal/sqlitetest"
)

func TestConformance(t *testing.T) {
	audittest.Run(t, func(tb testing.TB) audit.Store {
		s := sqlitetest.Open(tb)
		return sqliteaudit.New(s.DB(), s.ReadDB())
	})
}
