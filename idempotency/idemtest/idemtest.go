// Package idemtest is the conformance suite of idempotency.Store: the
// behaviour every store must have, run against each (pgidem, sqliteidem)
// on a real database.
package idemtest

import (
	"bytes"
	"context"
	"errors"
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

// Backend is a Store under test, the event store that writes answers
// with its appends on the same database, and ways to reach under them.
type Backend struct {
	Store idempotency.Store
	// Log is the event store of the same database: an append with an
	// answer (eventstore.WithAnswer) stores it, as a command does.
	Log eventstore.Store
	// Age moves the time a key was stored back by d.
	Age func(tb testing.TB, owner idempotency.Owner, key string, d time.Duration)
	// Pend stores owner's key without an answer, for a request with hash:
	// a pending key, as a process of an earlier version reserved one
	// before running its request.
	Pend func(tb testing.TB, owner idempotency.Owner, key, hash string)
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
		{"SaveThenLookup", testSaveThenLookup},
		{"AnswerOfAnAppendIsLookedUp", testAnswerOfAppend},
		{"PendingKeyIsInProgress", testPendingKey},
		{"KeysBelongToOneUser", testKeysBelongToOneUser},
		{"KeysBelongToOneAccount", testKeysBelongToOneAccount},
		{"ExpiredKeyIsAbsent", testExpiredKeyIsAbsent},
		{"AbandonedPendingKeyIsTakenOver", testAbandonedPendingKey},
		{"OneOfManyConcurrentSavesWins", testConcurrentSave},
		{"DeleteSessionDeletesItsAnswers", testDeleteSession},
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

// save stores an answer under owner's key and returns whether it did, and
// otherwise the record of the request that holds the key.
func save(tb testing.TB, s idempotency.Store, owner idempotency.Owner, key, hash string, status int, body string) (idempotency.Record, bool) {
	tb.Helper()
	rec, saved, err := s.Save(context.Background(), owner, key, hash, status, []byte(body))
	if err != nil {
		tb.Fatalf("Save(%s): %v", key, err)
	}
	return rec, saved
}

// mustSave stores an answer under owner's key, which no request holds.
func mustSave(tb testing.TB, s idempotency.Store, owner idempotency.Owner, key, hash string, status int, body string) {
	tb.Helper()
	if rec, saved := save(tb, s, owner, key, hash, status, body); !saved {
		tb.Fatalf("Save(%s) found the key held: %+v", key, rec)
	}
}

// lookup returns the record of owner's key, and whether there is one.
func lookup(tb testing.TB, s idempotency.Store, owner idempotency.Owner, key string) (idempotency.Record, bool) {
	tb.Helper()
	rec, found, err := s.Lookup(context.Background(), owner, key)
	if err != nil {
		tb.Fatalf("Lookup(%s): %v", key, err)
	}
	return rec, found
}

// appendWithAnswer appends one event to a new stream with a as its
// answer, as a command does, and returns the append's error.
func appendWithAnswer(tb testing.TB, log eventstore.Store, a eventstore.Answer) error {
	tb.Helper()
	return log.AppendNoReadBack(context.Background(), "idemtest-"+uuid.NewString(), eventstore.NoStream,
		[]eventstore.NewEvent{{Type: "Test", Data: []byte(`{}`)}}, eventstore.WithAnswer(a))
}

func sameRecord(rec idempotency.Record, hash string, status int, body string) bool {
	return rec.RequestHash == hash && rec.StatusCode == status && string(rec.Response) == body
}

// testSaveThenLookup checks that a saved answer is looked up, and that a
// second Save with the key stores nothing and returns the first answer.
func testSaveThenLookup(t *testing.T, b Backend) {
	owner := newOwner()
	if rec, found := lookup(t, b.Store, owner, "k"); found {
		t.Fatalf("Lookup of a new key = %+v, want none", rec)
	}
	mustSave(t, b.Store, owner, "k", "h1", 201, `{"id":"x"}`)
	if rec, found := lookup(t, b.Store, owner, "k"); !found || rec.Pending() || !sameRecord(rec, "h1", 201, `{"id":"x"}`) {
		t.Fatalf("Lookup = %+v, %v; want the saved answer", rec, found)
	}
	rec, saved := save(t, b.Store, owner, "k", "h2", 422, `{"detail":"no"}`)
	if saved || !sameRecord(rec, "h1", 201, `{"id":"x"}`) {
		t.Fatalf("second Save = %+v (saved %v), want the first answer kept", rec, saved)
	}
}

// testAnswerOfAppend checks that the answer an append stores with its
// events is what Lookup returns and what Save yields to, and that an
// append whose key is held writes nothing.
func testAnswerOfAppend(t *testing.T, b Backend) {
	owner := newOwner()
	owner.Session = uuid.New()
	if err := appendWithAnswer(t, b.Log, idempotency.Answer(owner, "k", "h1", 201, []byte(`{"id":"x"}`))); err != nil {
		t.Fatalf("append with an answer: %v", err)
	}
	if rec, found := lookup(t, b.Store, owner, "k"); !found || !sameRecord(rec, "h1", 201, `{"id":"x"}`) {
		t.Fatalf("Lookup = %+v, %v; want the append's answer", rec, found)
	}
	if rec, saved := save(t, b.Store, owner, "k", "h2", 422, "{}"); saved || !sameRecord(rec, "h1", 201, `{"id":"x"}`) {
		t.Fatalf("Save over the append's answer = %+v (saved %v), want the append's answer kept", rec, saved)
	}
	err := appendWithAnswer(t, b.Log, idempotency.Answer(owner, "k", "h3", 200, []byte("{}")))
	if !errors.Is(err, eventstore.ErrAnswerTaken) {
		t.Fatalf("append with a held key = %v, want ErrAnswerTaken", err)
	}
	// A saved answer holds the key against an append the same way.
	mustSave(t, b.Store, owner, "saved", "h1", 422, "{}")
	if err := appendWithAnswer(t, b.Log, idempotency.Answer(owner, "saved", "h2", 201, []byte("{}"))); !errors.Is(err, eventstore.ErrAnswerTaken) {
		t.Fatalf("append with a saved key = %v, want ErrAnswerTaken", err)
	}
	// The session is stored with the answer: its erasure deletes it.
	if n, err := b.Store.DeleteSession(context.Background(), owner.Account, owner.Session); err != nil || n != 2 {
		t.Fatalf("DeleteSession = %d, %v; want the 2 answers", n, err)
	}
}

// testPendingKey checks that a key held without an answer is looked up
// as pending, and that neither Save nor an append takes it.
func testPendingKey(t *testing.T, b Backend) {
	owner := newOwner()
	b.Pend(t, owner, "k", "h")
	if rec, found := lookup(t, b.Store, owner, "k"); !found || !rec.Pending() || rec.RequestHash != "h" {
		t.Fatalf("Lookup of a pending key = %+v, %v; want the pending record of h", rec, found)
	}
	if rec, saved := save(t, b.Store, owner, "k", "h", 201, "{}"); saved || !rec.Pending() || rec.RequestHash != "h" {
		t.Fatalf("Save over a pending key = %+v (saved %v), want the pending record", rec, saved)
	}
	if err := appendWithAnswer(t, b.Log, idempotency.Answer(owner, "k", "h", 201, []byte("{}"))); !errors.Is(err, eventstore.ErrAnswerTaken) {
		t.Fatalf("append over a pending key = %v, want ErrAnswerTaken", err)
	}
}

// testDeleteSession checks that DeleteSession deletes the answers of one
// session of one account, whoever saved them, and no other.
func testDeleteSession(t *testing.T, b Backend) {
	alice, bob := newOwner(), newOwner()
	bob.Account = alice.Account
	alice.Session, bob.Session = uuid.New(), uuid.New()
	other := alice
	other.Session = bob.Session
	elsewhere := idempotency.Owner{Account: uuid.New(), User: alice.User, Session: alice.Session}
	noSession := idempotency.Owner{Account: alice.Account, User: alice.User}
	for _, o := range []idempotency.Owner{alice, bob, elsewhere} {
		mustSave(t, b.Store, o, "k", "h", 201, "{}")
	}
	mustSave(t, b.Store, other, "on-bob's", "h", 201, "{}")
	mustSave(t, b.Store, noSession, "none", "h", 201, "{}")
	n, err := b.Store.DeleteSession(context.Background(), alice.Account, alice.Session)
	if err != nil || n != 1 {
		t.Fatalf("DeleteSession = %d, %v; want alice's one answer", n, err)
	}
	if rec, found := lookup(t, b.Store, alice, "k"); found {
		t.Fatalf("the erased session's answer is still there: %+v", rec)
	}
	if n, err := b.Store.DeleteSession(context.Background(), alice.Account, bob.Session); err != nil || n != 2 {
		t.Fatalf("DeleteSession of bob's session = %d, %v; want its 2 answers, whoever saved them", n, err)
	}
	for _, k := range []struct {
		owner idempotency.Owner
		key   string
	}{{elsewhere, "k"}, {noSession, "none"}} {
		if _, found := lookup(t, b.Store, k.owner, k.key); !found {
			t.Fatalf("DeleteSession deleted the answer of %+v", k.owner)
		}
	}
}

// testSweep checks that Sweep deletes the keys older than TTL, answered
// or pending, of every owner, and keeps the others.
func testSweep(t *testing.T, b Backend) {
	alice, bob := newOwner(), newOwner()
	for _, k := range []struct {
		owner   idempotency.Owner
		key     string
		age     time.Duration
		pending bool
	}{
		{alice, "old", idempotency.TTL + time.Minute, false},
		{alice, "old-pending", idempotency.TTL + time.Minute, true},
		{bob, "old", idempotency.TTL + time.Hour, false},
		{alice, "young", idempotency.TTL - time.Minute, false},
		{bob, "new", 0, true},
	} {
		if k.pending {
			b.Pend(t, k.owner, k.key, "h")
		} else {
			mustSave(t, b.Store, k.owner, k.key, "h", 201, "{}")
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
	if rec, found := lookup(t, b.Store, alice, "young"); !found || rec.StatusCode != 201 {
		t.Fatalf("young key after the sweep = %+v, %v; want its stored response", rec, found)
	}
	if n, err := b.Store.Sweep(context.Background()); err != nil || n != 0 {
		t.Fatalf("second Sweep = %d, %v; want 0", n, err)
	}
}

// testRunSweeps checks that RunSweeps sweeps at once and then again every
// interval, and returns nil when its context ends.
func testRunSweeps(t *testing.T, b Backend) {
	owner := newOwner()
	mustSave(t, b.Store, owner, "first", "h", 201, "{}")
	b.Age(t, owner, "first", idempotency.TTL+time.Minute)
	stop := ledgertest.Go(context.Background(), t, "sweeps", func(ctx context.Context) error {
		return idempotency.RunSweeps(ctx, b.Store, 10*time.Millisecond, slog.New(slog.NewTextHandler(io.Discard, nil)))
	})
	ledgertest.WaitUntil(t, 10*time.Second, "the first expired key is swept", func() bool { return b.Count(t) == 0 })
	mustSave(t, b.Store, owner, "second", "h", 201, "{}")
	b.Age(t, owner, "second", idempotency.TTL+time.Minute)
	ledgertest.WaitUntil(t, 10*time.Second, "the second expired key is swept", func() bool { return b.Count(t) == 0 })
	stop()
}

func testKeysBelongToOneUser(t *testing.T, b Backend) {
	alice, bob := newOwner(), newOwner()
	mustSave(t, b.Store, alice, "k", "h", 201, `{"of":"alice"}`)
	if rec, found := lookup(t, b.Store, bob, "k"); found {
		t.Fatalf("a key of one owner answered for another: %+v", rec)
	}
	if _, saved := save(t, b.Store, bob, "k", "other", 200, `{"of":"bob"}`); !saved {
		t.Fatal("a key of one owner blocked another owner")
	}
	if rec, _ := lookup(t, b.Store, alice, "k"); string(rec.Response) != `{"of":"alice"}` {
		t.Fatalf("alice's key after bob's Save = %+v, want her answer", rec)
	}
}

// testKeysBelongToOneAccount uses one user id and one key in two accounts:
// neither sees the other's record, and each stores only its own.
func testKeysBelongToOneAccount(t *testing.T, b Backend) {
	inA := newOwner()
	inB := idempotency.Owner{Account: uuid.New(), User: inA.User}
	mustSave(t, b.Store, inA, "k", "h", 201, `{"notes":"account A's"}`)
	if rec, found := lookup(t, b.Store, inB, "k"); found {
		t.Fatalf("the key of account A answered in account B: %+v", rec)
	}
	if err := appendWithAnswer(t, b.Log, idempotency.Answer(inB, "k", "h", 200, []byte("{}"))); err != nil {
		t.Fatalf("an append with the key in account B: %v", err)
	}
	if rec, _ := lookup(t, b.Store, inA, "k"); !sameRecord(rec, "h", 201, `{"notes":"account A's"}`) {
		t.Fatalf("account A's key after account B stored its own = %+v; want A's response", rec)
	}
	if rec, _ := lookup(t, b.Store, inB, "k"); !sameRecord(rec, "h", 200, "{}") {
		t.Fatalf("account B's key = %+v, want its own response", rec)
	}
	if got := b.Count(t); got != 2 {
		t.Fatalf("%d keys stored, want 2", got)
	}
}

func testExpiredKeyIsAbsent(t *testing.T, b Backend) {
	owner := newOwner()
	mustSave(t, b.Store, owner, "old", "h1", 201, "{}")
	b.Age(t, owner, "old", idempotency.TTL+time.Minute)
	if rec, found := lookup(t, b.Store, owner, "old"); found {
		t.Fatalf("Lookup of an expired key = %+v, want none", rec)
	}
	if _, saved := save(t, b.Store, owner, "old", "h2", 200, "{}"); !saved {
		t.Fatal("an expired key was not taken anew")
	}
	if rec, _ := lookup(t, b.Store, owner, "old"); !sameRecord(rec, "h2", 200, "{}") {
		t.Fatalf("record after re-use = %+v, want the new request's", rec)
	}
	// An append takes an expired key too.
	mustSave(t, b.Store, owner, "appended", "h1", 201, "{}")
	b.Age(t, owner, "appended", idempotency.TTL+time.Minute)
	if err := appendWithAnswer(t, b.Log, idempotency.Answer(owner, "appended", "h2", 200, []byte("{}"))); err != nil {
		t.Fatalf("an append over an expired key: %v", err)
	}
	if rec, _ := lookup(t, b.Store, owner, "appended"); !sameRecord(rec, "h2", 200, "{}") {
		t.Fatalf("record after the append = %+v, want the append's answer", rec)
	}
	// A key just inside its lifetime is kept.
	mustSave(t, b.Store, owner, "young", "h", 201, "{}")
	b.Age(t, owner, "young", idempotency.TTL-time.Minute)
	if _, found := lookup(t, b.Store, owner, "young"); !found {
		t.Fatal("a key younger than TTL was not found")
	}
	if _, saved := save(t, b.Store, owner, "young", "h", 200, "{}"); saved {
		t.Fatal("a key younger than TTL was taken anew")
	}
}

// testAbandonedPendingKey checks that a pending key holds until it is
// older than PendingTimeout, and is then taken over by Save or an append.
func testAbandonedPendingKey(t *testing.T, b Backend) {
	owner := newOwner()
	for _, key := range []string{"saved", "appended"} {
		b.Pend(t, owner, key, "h")
		b.Age(t, owner, key, idempotency.PendingTimeout/2)
		if rec, found := lookup(t, b.Store, owner, key); !found || !rec.Pending() {
			t.Fatalf("Lookup of a key pending for less than PendingTimeout = %+v, %v; want it pending", rec, found)
		}
		b.Age(t, owner, key, idempotency.PendingTimeout)
		if rec, found := lookup(t, b.Store, owner, key); found {
			t.Fatalf("Lookup of an abandoned pending key = %+v, want none", rec)
		}
	}
	if _, saved := save(t, b.Store, owner, "saved", "h", 201, "{}"); !saved {
		t.Fatal("Save did not take over an abandoned pending key")
	}
	if err := appendWithAnswer(t, b.Log, idempotency.Answer(owner, "appended", "h", 201, []byte("{}"))); err != nil {
		t.Fatalf("an append over an abandoned pending key: %v", err)
	}
	for _, key := range []string{"saved", "appended"} {
		if rec, found := lookup(t, b.Store, owner, key); !found || !sameRecord(rec, "h", 201, "{}") {
			t.Fatalf("%s key after the take-over = %+v, %v; want its answer", key, rec, found)
		}
	}
}

// testConcurrentSave runs many Saves of one key at once, each with its
// own answer: exactly one stores its answer, and every other gets it.
func testConcurrentSave(t *testing.T, b Backend) {
	const n = 32
	owner := newOwner()
	var wg sync.WaitGroup
	start := make(chan struct{})
	recs := make([]idempotency.Record, n)
	saved := make([]bool, n)
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			<-start
			recs[i], saved[i], errs[i] = b.Store.Save(context.Background(), owner, "k", "h", 200+i, []byte("{}"))
		})
	}
	close(start)
	wg.Wait()
	winner := -1
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("Save %d: %v", i, errs[i])
		}
		if saved[i] {
			if winner >= 0 {
				t.Fatalf("Saves %d and %d both stored their answer", winner, i)
			}
			winner = i
		}
	}
	if winner < 0 {
		t.Fatalf("none of %d concurrent Saves stored its answer", n)
	}
	for i := range n {
		if recs[i].StatusCode != 200+winner {
			t.Fatalf("Save %d returned %+v, want the answer of Save %d", i, recs[i], winner)
		}
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

	mustSave(t, b.Sealed, owner, "k", "h", 201, secret)
	if raw := b.Stored(t, owner, "k"); bytes.Contains(raw, []byte("Jane Roe")) || !bytes.HasPrefix(raw, []byte("sealed:")) {
		t.Fatalf("the answer is stored as %q, want it sealed", raw)
	}
	if rec, found := lookup(t, b.Sealed, owner, "k"); !found || !sameRecord(rec, "h", 201, secret) {
		t.Fatalf("Lookup = %+v, %v; want the answer opened", rec, found)
	}
	if rec, saved := save(t, b.Sealed, owner, "k", "h", 422, "{}"); saved || !sameRecord(rec, "h", 201, secret) {
		t.Fatalf("a second Save = %+v (saved %v), want the first answer opened", rec, saved)
	}

	// No session, or a session without a key: stored as it is.
	plain := newOwner()
	otherSession := newOwner()
	otherSession.Session = uuid.New()
	for _, o := range []idempotency.Owner{plain, otherSession} {
		mustSave(t, b.Sealed, o, "k", "h", 200, `{"ok":true}`)
		if raw := b.Stored(t, o, "k"); string(raw) != `{"ok":true}` {
			t.Fatalf("an answer of %+v is stored as %q, want it as it is", o, raw)
		}
		if rec, _ := lookup(t, b.Sealed, o, "k"); string(rec.Response) != `{"ok":true}` {
			t.Fatalf("replay of %+v = %+v", o, rec)
		}
	}

	// The session's key destroyed: the answers are gone with it, and the
	// key is taken anew.
	b.DropKey(t, stream)
	keys := b.Count(t)
	if rec, found := lookup(t, b.Sealed, owner, "k"); found {
		t.Fatalf("after the key was destroyed, Lookup = %+v; want none", rec)
	}
	if got := b.Count(t); got != keys-1 {
		t.Fatalf("%d keys after the Lookup of an answer that can no longer be opened, want %d: it is deleted", got, keys-1)
	}
	if rec, saved := save(t, b.Sealed, owner, "k", "h2", 200, "{}"); !saved {
		t.Fatalf("after the key was destroyed, Save = %+v; want the key taken anew", rec)
	}
}
