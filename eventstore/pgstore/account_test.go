package pgstore_test

import (
	"context"
	"errors"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/resolutionflow/ledgerd/eventcodec"
	"github.com/resolutionflow/ledgerd/eventstore"
	"github.com/resolutionflow/ledgerd/eventstore/pgstore"
)

// TestReadAccount_NeverSkipsALateCommit checks that ReadAccount returns
// none of an account's events while one of its events at a lower
// position is still being appended, and both once it commits: a reader
// resuming from the last position it saw would otherwise skip it.
func TestReadAccount_NeverSkipsALateCommit(t *testing.T) {
	pool := openPool(t)
	store := pgstore.New(pool)
	ctx := context.Background()
	account := uuid.New()
	tx, late := beginInsert(t, pool, eventcodec.StreamName(account, uuid.New()))
	early, err := store.Append(ctx, eventcodec.StreamName(account, uuid.New()), eventstore.NoStream, []eventstore.NewEvent{{Type: "Test", Data: []byte(`{}`)}})
	if err != nil {
		t.Fatalf("append: %v", err)
	}

	quick, cancel := context.WithTimeout(ctx, 150*time.Millisecond)
	defer cancel()
	events, err := store.ReadAccount(quick, account, 0, 100)
	if len(events) != 0 || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("ReadAccount with a lower position uncommitted = positions %v, %v; want it to wait", positionsOf(events), err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatalf("commit: %v", err)
	}
	events, err = store.ReadAccount(ctx, account, 0, 100)
	if got, want := positionsOf(events), []int64{late, early[0].Position}; err != nil || !slices.Equal(got, want) {
		t.Fatalf("ReadAccount after the commit = positions %v, %v; want %v", got, err, want)
	}
}

// TestReadAccount_UsesTheAccountIndex checks that an account's read is an
// index scan of events_account, whose cost follows the account's events:
// its 5 events among 20,000 of other accounts' are not found by reading
// the others.
func TestReadAccount_UsesTheAccountIndex(t *testing.T) {
	pool := openPool(t)
	ctx := t.Context()
	account := uuid.New()
	// The hashes chain nothing: the read does not check them.
	_, err := pool.Exec(ctx, `INSERT INTO events (id, stream, version, type, data, metadata, prev_hash, hash)
SELECT 'other-' || i, 'session:' || gen_random_uuid() || ':' || gen_random_uuid(), 1, 'Test', '{}', '{}', sha256(''), sha256('')
FROM generate_series(1, 20000) AS i`)
	if err != nil {
		t.Fatalf("insert others' events: %v", err)
	}
	store := pgstore.New(pool)
	for range 5 {
		if _, err := store.Append(ctx, eventcodec.StreamName(account, uuid.New()), eventstore.NoStream, []eventstore.NewEvent{{Type: "Test", Data: []byte(`{}`)}}); err != nil {
			t.Fatalf("append: %v", err)
		}
	}
	if _, err := pool.Exec(ctx, `ANALYZE events`); err != nil {
		t.Fatalf("analyze: %v", err)
	}
	rows, err := pool.Query(ctx, `EXPLAIN `+pgstore.ReadAccountSQL, account.String(), 0, int64(math.MaxInt64), 100)
	if err != nil {
		t.Fatalf("explain: %v", err)
	}
	var plan []string
	for rows.Next() {
		var line string
		if err := rows.Scan(&line); err != nil {
			t.Fatalf("explain: %v", err)
		}
		plan = append(plan, line)
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("explain: %v", err)
	}
	text := strings.Join(plan, "\n")
	if !strings.Contains(text, "events_account") || strings.Contains(text, "Seq Scan on events") {
		t.Fatalf("plan of ReadAccount does not scan events_account:\n%s", text)
	}
	events, err := store.ReadAccount(ctx, account, 0, 100)
	if err != nil || len(events) != 5 {
		t.Fatalf("ReadAccount = %d events, %v; want 5", len(events), err)
	}
}
