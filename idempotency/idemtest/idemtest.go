// Package idemtest is the conformance suite of idempotency.Store: the
// behaviour every store must have, run against each (pgidem, sqliteidem)
// on a real database.
package idemtest

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/resolutionflow/ledgerd/eventcodec"
	"github.com/resolutionflow/ledgerd/eventstore"
	"github.com/resolutionflow/ledgerd/idempotency"
	"github.com/resolutionflow/ledgerd/internal/ledgertest"
	"github.com/resolutionflow/ledgerd/shred"
)

// Backend is a Store under test and a way to make its keys older.
type Backend struct {
	Store idempotency.Store
	// Age moves the reservation time of a key back by d.
	Age func(tb testing.TB, owner idempotency.Owner, key string, d time.Duration)
	// Count returns how many keys the store holds.
	Count func(tb testing.TB) int
	// Sealed is a store on the same database that seals answers by
	// Keyring; PutKey and DropKey write and delete a stream's data
	// key, and Stored reads a key's answer as stored.
	Sealed  idempotency.Store
	PutKey  func(tb testing.TB, stream string, key *eventstore.DataKey)
	DropKey func(tb testing.TB, stream string)
	Stored  func(tb testing.TB, owner idempotency.Owner, key string) []byte
}

// Run runs the behaviour every Store must have against stores that open
// makes, one per test, each on a fresh database.
func Run(t *testing.T, open func(testing.TB) Backend) {
	tests := []struct {
		name string
		run  func(t *testing.T, b Backend)
	}{
		{"ReserveThenReplay", testReserveThenReplay},
		{"PendingUntilComplete", testPendingUntilComplete},
		{"ReleaseLetsRetryRun", testReleaseLetsRetryRun},
		{"KeysBelongToOneUser", testKeysBelongToOneUser},
		{"KeysBelongToOneAccount", testKeysBelongToOneAccount},
		{"ExpiredKeyIsAbsent", testExpiredKeyIsAbsent},
		{"AbandonedReservationIsTakenOver", testAbandonedReservation},
		{"OneOfManyConcurrentReservesWins", testConcurrentReserve},
		{"SweepDeletesExpiredKeys", testSweep},
		{"RunSweepsSweepsAgain", testRunSweeps},
		{"SealedAnswers", testSealedAnswers},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.run(t, open(t))
		})
	}
}

// newOwner returns a new user in a new account.
func newOwner() idempotency.Owner {
	return idempotency.Owner{Account: uuid.New(), User: uuid.New()}
}

func reserve(tb testing.TB, s idempotency.Store, owner idempotency.Owner, key, hash string) (idempotency.Record, bool) {
	tb.Helper()
	rec, ok, err := s.Reserve(context.Background(), owner, key, hash)
	if err != nil {
		tb.Fatalf("Reserve(%s): %v", key, err)
	}
	return rec, ok
}

func complete(tb testing.TB, s idempotency.Store, owner idempotency.Owner, key string, status int, body string) {
	tb.Helper()
	if err := s.Complete(context.Background(), owner, key, status, []byte(body)); err != nil {
		tb.Fatalf("Complete(%s): %v", key, err)
	}
}

func testReserveThenReplay(t *testing.T, b Backend) {
	owner := newOwner()
	if _, ok := reserve(t, b.Store, owner, "k", "h1"); !ok {
		t.Fatal("first Reserve did not reserve")
	}
	complete(t, b.Store, owner, "k", 201, `{"id":"x"}`)
	rec, ok := reserve(t, b.Store, owner, "k", "h2")
	if ok {
		t.Fatal("second Reserve reserved a completed key")
	}
	want := idempotency.Record{RequestHash: "h1", StatusCode: 201, Response: []byte(`{"id":"x"}`)}
	if rec.RequestHash != want.RequestHash || rec.StatusCode != want.StatusCode || string(rec.Response) != string(want.Response) || rec.Pending() {
		t.Fatalf("record = %+v, want %+v", rec, want)
	}
}

func testPendingUntilComplete(t *testing.T, b Backend) {
	owner := newOwner()
	reserve(t, b.Store, owner, "k", "h")
	rec, ok := reserve(t, b.Store, owner, "k", "h")
	if ok || !rec.Pending() || rec.RequestHash != "h" {
		t.Fatalf("Reserve during the first request = %+v, %v; want pending record of h", rec, ok)
	}
}

func testReleaseLetsRetryRun(t *testing.T, b Backend) {
	owner := newOwner()
	reserve(t, b.Store, owner, "k", "h")
	if err := b.Store.Release(context.Background(), owner, "k"); err != nil {
		t.Fatalf("Release: %v", err)
	}
	if _, ok := reserve(t, b.Store, owner, "k", "h"); !ok {
		t.Fatal("Reserve after Release did not reserve")
	}
	complete(t, b.Store, owner, "k", 200, "{}")
	if err := b.Store.Release(context.Background(), owner, "k"); err != nil {
		t.Fatalf("Release of a completed key: %v", err)
	}
	if rec, ok := reserve(t, b.Store, owner, "k", "h"); ok || rec.StatusCode != 200 {
		t.Fatalf("Release removed a completed key: %+v, %v", rec, ok)
	}
}

// testSweep checks that Sweep deletes the keys older than TTL, completed or
// not, of every owner, and keeps the others.
func testSweep(t *testing.T, b Backend) {
	alice, bob := newOwner(), newOwner()
	for _, k := range []struct {
		owner    idempotency.Owner
		key      string
		age      time.Duration
		complete bool
	}{
		{alice, "old", idempotency.TTL + time.Minute, true},
		{alice, "old-pending", idempotency.TTL + time.Minute, false},
		{bob, "old", idempotency.TTL + time.Hour, true},
		{alice, "young", idempotency.TTL - time.Minute, true},
		{bob, "new", 0, false},
	} {
		reserve(t, b.Store, k.owner, k.key, "h")
		if k.complete {
			complete(t, b.Store, k.owner, k.key, 201, "{}")
		}
		b.Age(t, k.owner, k.key, k.age)
	}
	n, err := b.Store.Sweep(context.Background())
	if err != nil || n != 3 {
		t.Fatalf("Sweep = %d, %v; want the 3 expired keys", n, err)
	}
	if got := b.Count(t); got != 2 {
		t.Fatalf("%d keys left, want 2", got)
	}
	if rec, ok := reserve(t, b.Store, alice, "young", "h"); ok || rec.StatusCode != 201 {
		t.Fatalf("young key after the sweep = %+v, %v; want its stored response", rec, ok)
	}
	if n, err := b.Store.Sweep(context.Background()); err != nil || n != 0 {
		t.Fatalf("second Sweep = %d, %v; want 0", n, err)
	}
}

// testRunSweeps checks that RunSweeps sweeps at once and then again every
// interval, and returns nil when its context ends.
func testRunSweeps(t *testing.T, b Backend) {
	owner := newOwner()
	reserve(t, b.Store, owner, "first", "h")
	b.Age(t, owner, "first", idempotency.TTL+time.Minute)
	stop := ledgertest.Go(context.Background(), t, "sweeps", func(ctx context.Context) error {
		return idempotency.RunSweeps(ctx, b.Store, 10*time.Millisecond, slog.New(slog.NewTextHandler(io.Discard, nil)))
	})
	ledgertest.WaitUntil(t, 10*time.Second, "the first expired key is swept", func() bool { return b.Count(t) == 0 })
	reserve(t, b.Store, owner, "second", "h")
	b.Age(t, owner, "second", idempotency.TTL+time.Minute)
	ledgertest.WaitUntil(t, 10*time.Second, "the second expired key is swept", func() bool { return b.Count(t) == 0 })
	stop()
}

func testKeysBelongToOneUser(t *testing.T, b Backend) {
	alice, bob := newOwner(), newOwner()
	reserve(t, b.Store, alice, "k", "h")
	if _, ok := reserve(t, b.Store, bob, "k", "other"); !ok {
		t.Fatal("a key of one owner blocked another owner")
	}
}

// testKeysBelongToOneAccount uses one user id and one key in two accounts:
// neither sees the other's record, and each completes and releases only its
// own.
func testKeysBelongToOneAccount(t *testing.T, b Backend) {
	inA := newOwner()
	inB := idempotency.Owner{Account: uuid.New(), User: inA.User}
	reserve(t, b.Store, inA, "k", "h")
	complete(t, b.Store, inA, "k", 201, `{"notes":"account A's"}`)
	rec, ok := reserve(t, b.Store, inB, "k", "h")
	if !ok {
		t.Fatalf("the key of account A answered in account B: %+v", rec)
	}
	if err := b.Store.Release(context.Background(), inB, "k"); err != nil {
		t.Fatalf("Release in account B: %v", err)
	}
	if rec, ok := reserve(t, b.Store, inA, "k", "h"); ok || string(rec.Response) != `{"notes":"account A's"}` {
		t.Fatalf("account A's key after account B released its own = %+v, %v; want A's response", rec, ok)
	}
	reserve(t, b.Store, inB, "k", "h")
	complete(t, b.Store, inB, "k", 200, "{}")
	if rec, _ := reserve(t, b.Store, inB, "k", "h"); rec.StatusCode != 200 {
		t.Fatalf("account B's key = %+v, want its own response", rec)
	}
	if got := b.Count(t); got != 2 {
		t.Fatalf("%d keys stored, want 2", got)
	}
}

func testExpiredKeyIsAbsent(t *testing.T, b Backend) {
	owner := newOwner()
	reserve(t, b.Store, owner, "old", "h1")
	complete(t, b.Store, owner, "old", 201, "{}")
	b.Age(t, owner, "old", idempotency.TTL+time.Minute)
	if _, ok := reserve(t, b.Store, owner, "old", "h2"); !ok {
		t.Fatal("an expired key was not reserved anew")
	}
	complete(t, b.Store, owner, "old", 200, "{}")
	if rec, _ := reserve(t, b.Store, owner, "old", "h2"); rec.StatusCode != 200 || rec.RequestHash != "h2" {
		t.Fatalf("record after re-use = %+v, want the new request's", rec)
	}
	// A key just inside its lifetime is kept.
	reserve(t, b.Store, owner, "young", "h")
	complete(t, b.Store, owner, "young", 201, "{}")
	b.Age(t, owner, "young", idempotency.TTL-time.Minute)
	if _, ok := reserve(t, b.Store, owner, "young", "h"); ok {
		t.Fatal("a key younger than TTL was reserved anew")
	}
}

func testAbandonedReservation(t *testing.T, b Backend) {
	owner := newOwner()
	reserve(t, b.Store, owner, "k", "h")
	b.Age(t, owner, "k", idempotency.PendingTimeout/2)
	if _, ok := reserve(t, b.Store, owner, "k", "h"); ok {
		t.Fatal("a reservation younger than PendingTimeout was taken over")
	}
	b.Age(t, owner, "k", idempotency.PendingTimeout)
	if _, ok := reserve(t, b.Store, owner, "k", "h"); !ok {
		t.Fatal("an abandoned reservation was not taken over")
	}
}

func testConcurrentReserve(t *testing.T, b Backend) {
	const n = 32
	owner := newOwner()
	var wg sync.WaitGroup
	start := make(chan struct{})
	reserved := make([]bool, n)
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			<-start
			_, reserved[i], errs[i] = b.Store.Reserve(context.Background(), owner, "k", "h")
		})
	}
	close(start)
	wg.Wait()
	won := 0
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("Reserve %d: %v", i, errs[i])
		}
		if reserved[i] {
			won++
		}
	}
	if won != 1 {
		t.Fatalf("%d of %d concurrent Reserves reserved the key, want 1", won, n)
	}
}

// Keyring seals the answers of the sealing stores (Backend.Sealed).
var Keyring = func() *shred.Keyring {
	keys, err := shred.NewScratchKeyring()
	if err != nil {
		panic(err)
	}
	return keys
}()

// testSealedAnswers checks that a store that seals answers stores the
// answer of a request on a session sealed under the session's data key
// and replays it opened; that one on no session, or on a session without
// a key, is stored as it is; and that once the session's key is gone, the
// answer is never replayed: the key is taken anew.
func testSealedAnswers(t *testing.T, b Backend) {
	const secret = `{"engineer_notes":"Jane Roe, vpn-7"}`
	owner := newOwner()
	owner.Session = uuid.New()
	stream := eventcodec.StreamName(owner.Account, owner.Session)
	_, stored, err := Keyring.NewDataKey(stream)
	if err != nil {
		t.Fatal(err)
	}
	b.PutKey(t, stream, stored)

	if _, ok := reserve(t, b.Sealed, owner, "k", "h"); !ok {
		t.Fatal("a new key was not reserved")
	}
	complete(t, b.Sealed, owner, "k", 201, secret)
	if raw := b.Stored(t, owner, "k"); bytes.Contains(raw, []byte("Jane Roe")) || !bytes.HasPrefix(raw, []byte("sealed:")) {
		t.Fatalf("the answer is stored as %q, want it sealed", raw)
	}
	rec, ok := reserve(t, b.Sealed, owner, "k", "h")
	if ok || rec.StatusCode != 201 || string(rec.Response) != secret {
		t.Fatalf("replay = %+v (reserved %v), want the answer opened", rec, ok)
	}

	if rec, found, err := b.Sealed.Lookup(t.Context(), owner, "k"); err != nil || !found || string(rec.Response) != secret {
		t.Fatalf("Lookup = %+v, %v, %v; want the answer opened", rec, found, err)
	}
	if _, saved, err := b.Sealed.Save(t.Context(), owner, "saved", "h", 422, []byte(secret)); err != nil || !saved {
		t.Fatalf("Save = %v, %v", saved, err)
	}
	if raw := b.Stored(t, owner, "saved"); bytes.Contains(raw, []byte("Jane Roe")) {
		t.Fatalf("a saved answer is stored as %q, want it sealed", raw)
	}
	if rec, found, err := b.Sealed.Lookup(t.Context(), owner, "saved"); err != nil || !found || string(rec.Response) != secret || rec.StatusCode != 422 {
		t.Fatalf("Lookup of a saved answer = %+v, %v, %v", rec, found, err)
	}

	// No session, or a session without a key: stored as it is.
	plain := newOwner()
	otherSession := newOwner()
	otherSession.Session = uuid.New()
	for _, o := range []idempotency.Owner{plain, otherSession} {
		reserve(t, b.Sealed, o, "k", "h")
		complete(t, b.Sealed, o, "k", 200, `{"ok":true}`)
		if raw := b.Stored(t, o, "k"); string(raw) != `{"ok":true}` {
			t.Fatalf("an answer of %+v is stored as %q, want it as it is", o, raw)
		}
		if rec, _ := reserve(t, b.Sealed, o, "k", "h"); string(rec.Response) != `{"ok":true}` {
			t.Fatalf("replay of %+v = %+v", o, rec)
		}
	}

	// The session's key destroyed: the answers are gone with it.
	b.DropKey(t, stream)
	keys := b.Count(t)
	if rec, found, err := b.Sealed.Lookup(t.Context(), owner, "saved"); err != nil || found {
		t.Fatalf("after the key was destroyed, Lookup = %+v, %v, %v; want none", rec, found, err)
	}
	if got := b.Count(t); got != keys-1 {
		t.Fatalf("%d keys after the Lookup of an answer that can no longer be opened, want %d: it is deleted", got, keys-1)
	}
	rec, ok = reserve(t, b.Sealed, owner, "k", "h2")
	if !ok || len(rec.Response) != 0 {
		t.Fatalf("after the key was destroyed, Reserve = %+v (reserved %v), want the key taken anew", rec, ok)
	}
}
