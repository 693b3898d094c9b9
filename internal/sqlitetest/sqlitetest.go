// Package sqlitetest gives tests embedded event stores: a
// sqlitestore.Store on a SQLite file of the test's own, migrated, and
// closed when the test has finished.
package sqlitetest

import (
	"path/filepath"
	"testing"

	"github.com/resolutionflow/ledgerd/eventstore/sqlitestore"
)

// Open opens a store on a new file in tb's temporary directory, as OpenAt
// does.
func Open(tb testing.TB) *sqlitestore.Store {
	tb.Helper()
	return OpenAt(tb, filepath.Join(tb.TempDir(), "ledger.db"))
}

// OpenAt opens a store on the file at path, creating and migrating it if
// needed. The store is closed when tb has finished; failing to close it
// fails tb. Two stores open on one path stand for two processes sharing
// the file.
func OpenAt(tb testing.TB, path string) *sqlitestore.Store {
	tb.Helper()
	s, err := sqlitestore.Open(tb.Context(), path)
	if err != nil {
		tb.Fatalf("sqlitetest: open %s: %v", path, err)
	}
	tb.Cleanup(func() {
		if err := s.Close(); err != nil {
			tb.Errorf("sqlitetest: close %s: %v", path, err)
		}
	})
	return s
}
