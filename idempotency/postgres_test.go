package idempotency_test

import (
	"context"
	"io"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/resolutionflow/ledgerd/eventstore"
	"github.com/resolutionflow/ledgerd/idempotency"
	"github.com/resolutionflow/ledgerd/internal/ledgertest"
	"github.com/resolutionflow/ledgerd/internal/pgtest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// backend is a Store under test and a way to make its keys older.
type backend struct {
	store idempotency.Store
	// age moves the reservation time of a key back by d.
	age func(tb testing.TB, owner idempotency.Owner, key string, d time.Duration)
	// count returns how many keys the store holds.
	count func(tb testing.TB) int
	// sealed is a store on the same database that seals answers by
	// testKeyring; putKey and dropKey write and delete a stream's data
	// key, and stored reads a key's answer as stored.
	sealed  idempotency.Store
	putKey  func(tb testing.TB, stream string, key *eventstore.DataKey)
	dropKey func(tb testing.TB, stream string)
	stored  func(tb testing.TB, owner idempotency.Owner, key string) []byte
}

func newPostgres(tb testing.TB) backend {
	tb.Helper()
	pool, err := pgxpool.New(context.Background(), pgtest.NewDatabase(tb))
	if err != nil {
		tb.Fatalf("open pool: %v", err)
	}
	tb.Cleanup(pool.Close)
	exec := func(tb testing.TB, query string, args ...any) {
		tb.Helper()
		if _, err := pool.Exec(context.Background(), query, args...); err != nil {
			tb.Fatalf("%s: %v", query, err)
		}
	}
	return backend{
		store:  idempotency.NewPostgres(pool),
		sealed: idempotency.NewPostgres(pool, idempotency.SealedBy(testKeyring)),
		putKey: func(tb testing.TB, stream string, key *eventstore.DataKey) {
			exec(tb, `INSERT INTO data_keys (stream_id, key_id, wrapped, master_key_id) VALUES ($1, $2, $3, $4)`, stream, key.ID, key.Wrapped, key.MasterKeyID)
		},
		dropKey: func(tb testing.TB, stream string) { exec(tb, `DELETE FROM data_keys WHERE stream_id = $1`, stream) },
		stored: func(tb testing.TB, owner idempotency.Owner, key string) []byte {
			tb.Helper()
			var body []byte
			err := pool.QueryRow(context.Background(), `SELECT response FROM idempotency_keys WHERE account_id = $1 AND user_id = $2 AND key = $3`,
				owner.Account, owner.User, key).Scan(&body)
			if err != nil {
				tb.Fatalf("read stored answer: %v", err)
			}
			return body
		},
		age: func(tb testing.TB, owner idempotency.Owner, key string, d time.Duration) {
			tb.Helper()
			_, err := pool.Exec(context.Background(),
				`UPDATE idempotency_keys SET created_at = created_at - make_interval(secs => $4) WHERE account_id = $1 AND user_id = $2 AND key = $3`,
				owner.Account, owner.User, key, d.Seconds())
			if err != nil {
				tb.Fatalf("age key: %v", err)
			}
		},
		count: func(tb testing.TB) int {
			tb.Helper()
			var n int
			if err := pool.QueryRow(context.Background(), `SELECT count(*) FROM idempotency_keys`).Scan(&n); err != nil {
				tb.Fatalf("count keys: %v", err)
			}
			return n
		},
	}
}

func TestStore_Postgres(t *testing.T) {
	testStore(t, newPostgres)
}

// testStore is the behaviour every Store must have.
func testStore(t *testing.T, open func(testing.TB) backend) {
	tests := []struct {
		name string
		run  func(t *testing.T, b backend)
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

func testReserveThenReplay(t *testing.T, b backend) {
	owner := newOwner()
	if _, ok := reserve(t, b.store, owner, "k", "h1"); !ok {
		t.Fatal("first Reserve did not reserve")
	}
	complete(t, b.store, owner, "k", 201, `{"id":"x"}`)
	rec, ok := reserve(t, b.store, owner, "k", "h2")
	if ok {
		t.Fatal("second Reserve reserved a completed key")
	}
	want := idempotency.Record{RequestHash: "h1", StatusCode: 201, Response: []byte(`{"id":"x"}`)}
	if rec.RequestHash != want.RequestHash || rec.StatusCode != want.StatusCode || string(rec.Response) != string(want.Response) || rec.Pending() {
		t.Fatalf("record = %+v, want %+v", rec, want)
	}
}

func testPendingUntilComplete(t *testing.T, b backend) {
	owner := newOwner()
	reserve(t, b.store, owner, "k", "h")
	rec, ok := reserve(t, b.store, owner, "k", "h")
	if ok || !rec.Pending() || rec.RequestHash != "h" {
		t.Fatalf("Reserve during the first request = %+v, %v; want pending record of h", rec, ok)
	}
}

func testReleaseLetsRetryRun(t *testing.T, b backend) {
	owner := newOwner()
	reserve(t, b.store, owner, "k", "h")
	if err := b.store.Release(context.Background(), owner, "k"); err != nil {
		t.Fatalf("Release: %v", err)
	}
	if _, ok := reserve(t, b.store, owner, "k", "h"); !ok {
		t.Fatal("Reserve after Release did not reserve")
	}
	complete(t, b.store, owner, "k", 200, "{}")
	if err := b.store.Release(context.Background(), owner, "k"); err != nil {
		t.Fatalf("Release of a completed key: %v", err)
	}
	if rec, ok := reserve(t, b.store, owner, "k", "h"); ok || rec.StatusCode != 200 {
		t.Fatalf("Release removed a completed key: %+v, %v", rec, ok)
	}
}

// testSweep checks that Sweep deletes the keys older than TTL, completed or
// not, of every owner, and keeps the others.
func testSweep(t *testing.T, b backend) {
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
		reserve(t, b.store, k.owner, k.key, "h")
		if k.complete {
			complete(t, b.store, k.owner, k.key, 201, "{}")
		}
		b.age(t, k.owner, k.key, k.age)
	}
	n, err := b.store.Sweep(context.Background())
	if err != nil || n != 3 {
		t.Fatalf("Sweep = %d, %v; want the 3 expired keys", n, err)
	}
	if got := b.count(t); got != 2 {
		t.Fatalf("%d keys left, want 2", got)
	}
	if rec, ok := reserve(t, b.store, alice, "young", "h"); ok || rec.StatusCode != 201 {
		t.Fatalf("young key after the sweep = %+v, %v; want its stored response", rec, ok)
	}
	if n, err := b.store.Sweep(context.Background()); err != nil || n != 0 {
		t.Fatalf("second Sweep = %d, %v; want 0", n, err)
	}
}

// testRunSweeps checks that RunSweeps sweeps at once and then again every
// interval, and returns nil when its context ends.
func testRunSweeps(t *testing.T, b backend) {
	owner := newOwner()
	reserve(t, b.store, owner, "first", "h")
	b.age(t, owner, "first", idempotency.TTL+time.Minute)
	stop := ledgertest.Go(context.Background(), t, "sweeps", func(ctx context.Context) error {
		return idempotency.RunSweeps(ctx, b.store, 10*time.Millisecond, slog.New(slog.NewTextHandler(io.Discard, nil)))
	})
	ledgertest.WaitUntil(t, 10*time.Second, "the first expired key is swept", func() bool { return b.count(t) == 0 })
	reserve(t, b.store, owner, "second", "h")
	b.age(t, owner, "second", idempotency.TTL+time.Minute)
	ledgertest.WaitUntil(t, 10*time.Second, "the second expired key is swept", func() bool { return b.count(t) == 0 })
	stop()
}

func testKeysBelongToOneUser(t *testing.T, b backend) {
	alice, bob := newOwner(), newOwner()
	reserve(t, b.store, alice, "k", "h")
	if _, ok := reserve(t, b.store, bob, "k", "other"); !ok {
		t.Fatal("a key of one owner blocked another owner")
	}
}

// testKeysBelongToOneAccount uses one user id and one key in two accounts:
// neither sees the other's record, and each completes and releases only its
// own.
func testKeysBelongToOneAccount(t *testing.T, b backend) {
	inA := newOwner()
	inB := idempotency.Owner{Account: uuid.New(), User: inA.User}
	reserve(t, b.store, inA, "k", "h")
	complete(t, b.store, inA, "k", 201, `{"notes":"account A's"}`)
	rec, ok := reserve(t, b.store, inB, "k", "h")
	if !ok {
		t.Fatalf("the key of account A answered in account B: %+v", rec)
	}
	if err := b.store.Release(context.Background(), inB, "k"); err != nil {
		t.Fatalf("Release in account B: %v", err)
	}
	if rec, ok := reserve(t, b.store, inA, "k", "h"); ok || string(rec.Response) != `{"notes":"account A's"}` {
		t.Fatalf("account A's key after account B released its own = %+v, %v; want A's response", rec, ok)
	}
	reserve(t, b.store, inB, "k", "h")
	complete(t, b.store, inB, "k", 200, "{}")
	if rec, _ := reserve(t, b.store, inB, "k", "h"); rec.StatusCode != 200 {
		t.Fatalf("account B's key = %+v, want its own response", rec)
	}
	if got := b.count(t); got != 2 {
		t.Fatalf("%d keys stored, want 2", got)
	}
}

func testExpiredKeyIsAbsent(t *testing.T, b backend) {
	owner := newOwner()
	reserve(t, b.store, owner, "old", "h1")
	complete(t, b.store, owner, "old", 201, "{}")
	b.age(t, owner, "old", idempotency.TTL+time.Minute)
	if _, ok := reserve(t, b.store, owner, "old", "h2"); !ok {
		t.Fatal("an expired key was not reserved anew")
	}
	complete(t, b.store, owner, "old", 200, "{}")
	if rec, _ := reserve(t, b.store, owner, "old", "h2"); rec.StatusCode != 200 || rec.RequestHash != "h2" {
		t.Fatalf("record after re-use = %+v, want the new request's", rec)
	}
	// A key just inside its lifetime is kept.
	reserve(t, b.store, owner, "young", "h")
	complete(t, b.store, owner, "young", 201, "{}")
	b.age(t, owner, "young", idempotency.TTL-time.Minute)
	if _, ok := reserve(t, b.store, owner, "young", "h"); ok {
		t.Fatal("a key younger than TTL was reserved anew")
	}
}

func testAbandonedReservation(t *testing.T, b backend) {
	owner := newOwner()
	reserve(t, b.store, owner, "k", "h")
	b.age(t, owner, "k", idempotency.PendingTimeout/2)
	if _, ok := reserve(t, b.store, owner, "k", "h"); ok {
		t.Fatal("a reservation younger than PendingTimeout was taken over")
	}
	b.age(t, owner, "k", idempotency.PendingTimeout)
	if _, ok := reserve(t, b.store, owner, "k", "h"); !ok {
		t.Fatal("an abandoned reservation was not taken over")
	}
}

func testConcurrentReserve(t *testing.T, b backend) {
	const n = 32
	owner := newOwner()
	var wg sync.WaitGroup
	start := make(chan struct{})
	reserved := make([]bool, n)
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			<-start
			_, reserved[i], errs[i] = b.store.Reserve(context.Background(), owner, "k", "h")
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
