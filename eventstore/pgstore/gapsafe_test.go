package pgstore_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/oklog/ulid/v2"

	"github.com/resolutionflow/ledgerd/eventstore"
	"github.com/resolutionflow/ledgerd/eventstore/pgstore"
	"github.com/resolutionflow/ledgerd/eventstore/storetest"
	"github.com/resolutionflow/ledgerd/internal/pgtest"
)

// openPool opens a pool of up to 32 connections on a new database.
func openPool(tb testing.TB) *pgxpool.Pool {
	tb.Helper()
	return pgtest.NewPool(tb, 32)
}

// beginInsert opens a transaction that appends one event to stream and
// leaves it open, returning the transaction and the event's position.
func beginInsert(tb testing.TB, pool *pgxpool.Pool, stream string) (pgx.Tx, int64) {
	tb.Helper()
	ctx := context.Background()
	tx, err := pool.Begin(ctx)
	if err != nil {
		tb.Fatalf("begin: %v", err)
	}
	tb.Cleanup(func() { _ = tx.Rollback(ctx) })
	e := eventstore.Event{
		ID: ulid.Make().String(), Stream: stream, Version: 1, Type: "Test",
		Data: []byte(`{}`), RawMetadata: []byte(`{}`), RecordedAt: eventstore.RecordTime(time.Now()),
	}
	e.Hash = eventstore.HashEvent(e.PrevHash, e)
	var pos int64
	err = tx.QueryRow(ctx, `INSERT INTO events (id, stream, version, type, data, metadata, recorded_at, prev_hash, hash)
		VALUES ($1, $2, 1, $3, $4, $5, $6, $7, $8) RETURNING position`,
		e.ID, e.Stream, e.Type, []byte(e.Data), []byte(e.RawMetadata), e.RecordedAt, e.PrevHash[:], e.Hash[:]).Scan(&pos)
	if err != nil {
		tb.Fatalf("insert into %s: %v", stream, err)
	}
	return tx, pos
}

// readNothingYet asserts that ReadAll returns no event, and waits until the
// deadline, while a transaction holding a lower position than a committed
// event is still open: it must wait, not skip ahead.
func readNothingYet(tb testing.TB, store *pgstore.Store, after int64) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
	defer cancel()
	events, err := store.ReadAll(ctx, after, 100)
	if len(events) != 0 {
		tb.Fatalf("ReadAll returned %d events while a lower position was uncommitted: %+v", len(events), events)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		tb.Fatalf("ReadAll error = %v, want it to wait until the deadline", err)
	}
}

// TestReadAll_NeverSkipsALateCommit commits four transactions in reverse
// order of their positions, one of them rolled back, and checks that a tail
// of the log sees exactly the three committed events, in position order.
func TestReadAll_NeverSkipsALateCommit(t *testing.T) {
	pool := openPool(t)
	store := pgstore.New(pool)
	ctx := context.Background()

	var txs [4]pgx.Tx
	var pos [4]int64
	for i, stream := range []string{"late-1", "late-2", "late-3", "late-4"} {
		txs[i], pos[i] = beginInsert(t, pool, stream)
	}
	for i := 1; i < 4; i++ {
		if pos[i] <= pos[i-1] {
			t.Fatalf("positions not increasing: %v", pos)
		}
	}

	for _, i := range []int{3, 2} {
		if err := txs[i].Commit(ctx); err != nil {
			t.Fatalf("commit %d: %v", i, err)
		}
		readNothingYet(t, store, 0)
	}
	if err := txs[1].Rollback(ctx); err != nil {
		t.Fatalf("rollback: %v", err)
	}
	readNothingYet(t, store, 0)
	if err := txs[0].Commit(ctx); err != nil {
		t.Fatalf("commit 0: %v", err)
	}

	// With no append open, one read crosses the hole left by the rollback.
	want := []int64{pos[0], pos[2], pos[3]}
	events, err := store.ReadAll(ctx, 0, 100)
	if err != nil {
		t.Fatalf("ReadAll: %v", err)
	}
	if got := positionsOf(events); !slices.Equal(got, want) {
		t.Fatalf("ReadAll read positions %v, want %v", got, want)
	}
}

func positionsOf(events []eventstore.Event) []int64 {
	positions := make([]int64, len(events))
	for i, e := range events {
		positions[i] = e.Position
	}
	return positions
}

// TestReadAll_ReturnsEventsBelowAnOpenTransaction checks that an open
// transaction holds back only the positions above its own, and that a
// reader with nothing committed after it gets nothing at once.
func TestReadAll_ReturnsEventsBelowAnOpenTransaction(t *testing.T) {
	pool := openPool(t)
	store := pgstore.New(pool)
	ctx := context.Background()
	appendOne := func(stream string) int64 {
		t.Helper()
		recorded, err := store.Append(ctx, stream, eventstore.NoStream, []eventstore.NewEvent{{Type: "Test", Data: []byte(`{}`)}})
		if err != nil {
			t.Fatalf("append to %s: %v", stream, err)
		}
		return recorded[0].Position
	}

	before := appendOne("before")
	tx, open := beginInsert(t, pool, "open")
	if got := positionsOf(storetest.ReadLog(t, store, 0)); !slices.Equal(got, []int64{before}) {
		t.Fatalf("tail from 0 read positions %v, want only %d, below the open transaction", got, before)
	}
	after := appendOne("after")
	// The run before the open append comes at once; after it, nothing
	// until the append ends.
	quick, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	events, err := store.ReadAll(quick, 0, 100)
	if got := positionsOf(events); err != nil || !slices.Equal(got, []int64{before}) {
		t.Fatalf("ReadAll from 0 = positions %v, %v; want only %d", got, err, before)
	}
	readNothingYet(t, store, before)
	if err := tx.Commit(ctx); err != nil {
		t.Fatalf("commit: %v", err)
	}
	if got, want := positionsOf(storetest.ReadLog(t, store, before)), []int64{open, after}; !slices.Equal(got, want) {
		t.Fatalf("tail after the commit read positions %v, want %v", got, want)
	}
}

// TestAppend_OtherStreamsDoNotWait checks that an append to one stream does
// not wait for an open transaction appending to another: there is no table
// lock, counter row or global lock on the write path.
func TestAppend_OtherStreamsDoNotWait(t *testing.T) {
	pool := openPool(t)
	store := pgstore.New(pool)
	beginInsert(t, pool, "held")

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	for i := range 10 {
		stream := "free-" + ulid.Make().String()
		if _, err := store.Append(ctx, stream, eventstore.NoStream, []eventstore.NewEvent{{Type: "Test", Data: []byte(`{}`)}}); err != nil {
			t.Fatalf("append %d while another stream's transaction is open: %v", i, err)
		}
	}
}

// TestHead_IsTheLastCommittedEvent checks that positions drawn by failed or
// rolled-back appends are never the head: a reader waiting to reach the head
// could never get there.
func TestHead_IsTheLastCommittedEvent(t *testing.T) {
	pool := openPool(t)
	store := pgstore.New(pool)
	ctx := context.Background()
	first, err := store.Append(ctx, "s", eventstore.NoStream, []eventstore.NewEvent{{Type: "Test", Data: []byte(`{}`)}})
	if err != nil {
		t.Fatalf("append: %v", err)
	}
	if _, err := store.Append(ctx, "s", eventstore.NoStream, []eventstore.NewEvent{{Type: "Test", Data: []byte(`{}`)}}); !errors.Is(err, eventstore.ErrConflict) {
		t.Fatalf("second NoStream append: err = %v, want a conflict", err)
	}
	tx, _ := beginInsert(t, pool, "rolled-back")
	if err := tx.Rollback(ctx); err != nil {
		t.Fatalf("rollback: %v", err)
	}
	head, err := store.Head(ctx)
	if err != nil || head != first[0].Position {
		t.Fatalf("Head = %d, %v; want %d, the last committed event", head, err, first[0].Position)
	}
}
