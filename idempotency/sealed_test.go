package idempotency_test

import (
	"bytes"
	"testing"

	"github.com/google/uuid"

	"github.com/resolutionflow/ledgerd/eventcodec"
	"github.com/resolutionflow/ledgerd/idempotency"
	"github.com/resolutionflow/ledgerd/shred"
)

// testKeyring seals the answers of the sealing stores.
var testKeyring = func() *shred.Keyring {
	text, err := shred.NewMasterKey()
	if err != nil {
		panic(err)
	}
	m, err := shred.ParseMasterKey(text)
	if err != nil {
		panic(err)
	}
	return shred.NewKeyring(m)
}()

// testSealedAnswers checks that a store that seals answers stores the
// answer of a request on a session sealed under the session's data key
// and replays it opened; that one on no session, or on a session without
// a key, is stored as it is; and that once the session's key is gone, the
// answer is never replayed: the key is taken anew.
func testSealedAnswers(t *testing.T, b backend) {
	const secret = `{"engineer_notes":"Jane Roe, vpn-7"}`
	owner := newOwner()
	owner.Session = uuid.New()
	stream := eventcodec.StreamName(owner.Account, owner.Session)
	_, stored, err := testKeyring.NewDataKey(stream)
	if err != nil {
		t.Fatal(err)
	}
	b.putKey(t, stream, stored)

	if _, ok := reserve(t, b.sealed, owner, "k", "h"); !ok {
		t.Fatal("a new key was not reserved")
	}
	complete(t, b.sealed, owner, "k", 201, secret)
	if raw := b.stored(t, owner, "k"); bytes.Contains(raw, []byte("Jane Roe")) || !bytes.HasPrefix(raw, []byte("sealed:")) {
		t.Fatalf("the answer is stored as %q, want it sealed", raw)
	}
	rec, ok := reserve(t, b.sealed, owner, "k", "h")
	if ok || rec.StatusCode != 201 || string(rec.Response) != secret {
		t.Fatalf("replay = %+v (reserved %v), want the answer opened", rec, ok)
	}

	if rec, found, err := b.sealed.Lookup(t.Context(), owner, "k"); err != nil || !found || string(rec.Response) != secret {
		t.Fatalf("Lookup = %+v, %v, %v; want the answer opened", rec, found, err)
	}
	if _, saved, err := b.sealed.Save(t.Context(), owner, "saved", "h", 422, []byte(secret)); err != nil || !saved {
		t.Fatalf("Save = %v, %v", saved, err)
	}
	if raw := b.stored(t, owner, "saved"); bytes.Contains(raw, []byte("Jane Roe")) {
		t.Fatalf("a saved answer is stored as %q, want it sealed", raw)
	}
	if rec, found, err := b.sealed.Lookup(t.Context(), owner, "saved"); err != nil || !found || string(rec.Response) != secret || rec.StatusCode != 422 {
		t.Fatalf("Lookup of a saved answer = %+v, %v, %v", rec, found, err)
	}

	// No session, or a session without a key: stored as it is.
	plain := newOwner()
	otherSession := newOwner()
	otherSession.Session = uuid.New()
	for _, o := range []idempotency.Owner{plain, otherSession} {
		reserve(t, b.sealed, o, "k", "h")
		complete(t, b.sealed, o, "k", 200, `{"ok":true}`)
		if raw := b.stored(t, o, "k"); string(raw) != `{"ok":true}` {
			t.Fatalf("an answer of %+v is stored as %q, want it as it is", o, raw)
		}
		if rec, _ := reserve(t, b.sealed, o, "k", "h"); string(rec.Response) != `{"ok":true}` {
			t.Fatalf("replay of %+v = %+v", o, rec)
		}
	}

	// The session's key destroyed: the answers are gone with it.
	b.dropKey(t, stream)
	if rec, found, err := b.sealed.Lookup(t.Context(), owner, "saved"); err != nil || found {
		t.Fatalf("after the key was destroyed, Lookup = %+v, %v, %v; want none", rec, found, err)
	}
	rec, ok = reserve(t, b.sealed, owner, "k", "h2")
	if !ok || len(rec.Response) != 0 {
		t.Fatalf("after the key was destroyed, Reserve = %+v (reserved %v), want the key taken anew", rec, ok)
	}
}
