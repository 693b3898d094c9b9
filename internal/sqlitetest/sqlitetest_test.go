package sqlitetest_test

import (
	"path/filepath"
	"testing"

	"github.com/resolutionflow/ledgerd/eventstore"
	"github.com/resolutionflow/ledgerd/eventstore/sqlitestore"
	"github.com/resolutionflow/ledgerd/internal/sqlitetest"
)

// TestOpenAt_SharesTheFileAndClosesAfterTheTest appends through one store
// and reads through a second on the same file, then checks that both are
// closed once their test has finished.
func TestOpenAt_SharesTheFileAndClosesAfterTheTest(t *testing.T) {
	path := filepath.Join(t.TempDir(), "shared.db")
	var stores []*sqlitestore.Store
	t.Run("sub", func(t *testing.T) {
		a, b := sqlitetest.OpenAt(t, path), sqlitetest.OpenAt(t, path)
		stores = append(stores, a, b)
		if _, err := a.Append(t.Context(), "s", eventstore.NoStream, []eventstore.NewEvent{{Type: "Test", Data: []byte(`{}`)}}); err != nil {
			t.Fatalf("append: %v", err)
		}
		events, err := b.ReadStream(t.Context(), "s")
		if err != nil {
			t.Fatalf("read through the second store: %v", err)
		}
		if len(events) != 1 {
			t.Fatalf("the second store reads %d events, want the 1 the first appended", len(events))
		}
	})
	if len(stores) != 2 {
		t.Fatal("subtest opened no stores")
	}
	for i, s := range stores {
		if _, err := s.Head(t.Context()); err == nil {
			t.Errorf("store %d still answers after its test's cleanup", i+1)
		}
	}
}

// TestOpen_GivesEachTestAnEmptyStore checks that two stores from Open do
// not share a file.
func TestOpen_GivesEachTestAnEmptyStore(t *testing.T) {
	a, b := sqlitetest.Open(t), sqlitetest.Open(t)
	if _, err := a.Append(t.Context(), "s", eventstore.NoStream, []eventstore.NewEvent{{Type: "Test", Data: []byte(`{}`)}}); err != nil {
		t.Fatalf("append: %v", err)
	}
	head, err := b.Head(t.Context())
	if err != nil {
		t.Fatalf("head: %v", err)
	}
	if head != 0 {
		t.Errorf("a second store from Open is at position %d, want an empty log", head)
	}
}
