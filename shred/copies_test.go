package shred_test

import (
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/resolutionflow/ledgerd/domain"
	"github.com/resolutionflow/ledgerd/eventcodec"
	"github.com/resolutionflow/ledgerd/eventstore"
)

// TestNotesOfRows checks the read model's copy of the notes: sealed under
// the stream's key (no plaintext, tagged), opened by it to exactly what
// they were, erased under no key, another key of the stream, another
// stream or another master key; and that notes of a session without a
// key, stored as they are, read back as they were even when they look
// tagged.
func TestNotesOfRows(t *testing.T) {
	k := keyring(t)
	const notes = "Jane Roe <jane@example.com>"
	_, key, err := k.NewDataKey(stream)
	if err != nil {
		t.Fatal(err)
	}
	stored, err := k.SealNotes(stream, key, notes)
	if err != nil || strings.Contains(stored, "Jane") || !strings.HasPrefix(stored, "sealed:") {
		t.Fatalf("SealNotes = %q, %v; want it sealed and tagged", stored, err)
	}
	if got, erased := k.OpenNotes(stream, key, stored); got != notes || erased {
		t.Fatalf("OpenNotes = %q, %v; want the notes", got, erased)
	}
	_, other, err := k.NewDataKey(stream)
	if err != nil {
		t.Fatal(err)
	}
	_, elsewhere, err := k.NewDataKey("session:other")
	if err != nil {
		t.Fatal(err)
	}
	for what, open := range map[string]func() (string, bool){
		"no key":                func() (string, bool) { return k.OpenNotes(stream, nil, stored) },
		"another key":           func() (string, bool) { return k.OpenNotes(stream, other, stored) },
		"another stream":        func() (string, bool) { return k.OpenNotes("session:other", elsewhere, stored) },
		"another master key":    func() (string, bool) { return keyring(t).OpenNotes(stream, key, stored) },
		"altered":               func() (string, bool) { return k.OpenNotes(stream, key, stored[:len(stored)-2]+"AA") },
		"the key's row altered": func() (string, bool) { return k.OpenNotes(stream, altered(key), stored) },
	} {
		if got, erased := open(); got != "" || !erased {
			t.Errorf("%s: OpenNotes = %q, %v; want erased", what, got, erased)
		}
	}
	for _, plain := range []string{"", "VPN drops", "sealed:not really", "plain:as typed"} {
		s, err := k.SealNotes(stream, nil, plain)
		if err != nil {
			t.Fatal(err)
		}
		if got, erased := k.OpenNotes(stream, nil, s); got != plain || erased {
			t.Errorf("notes %q without a key stored as %q read back as %q, %v", plain, s, got, erased)
		}
	}

	account, session := uuid.New(), uuid.New()
	st := eventcodec.StreamName(account, session)
	_, key, err = k.NewDataKey(st)
	if err != nil {
		t.Fatal(err)
	}
	h := domain.Handoff{AccountID: account, SessionID: session}
	if h.Notes, err = k.SealNotes(st, key, notes); err != nil {
		t.Fatal(err)
	}
	if got := k.OpenHandoff(h, key); got.Notes != notes || got.NotesErased {
		t.Fatalf("OpenHandoff = %+v, want the notes", got)
	}
	if got := k.OpenHandoff(h, nil); got.Notes != "" || !got.NotesErased {
		t.Fatalf("OpenHandoff without the key = %+v, want erased", got)
	}
}

// altered is key with its wrapped bytes changed: the cache of unwrapped
// keys must not answer for it.
func altered(key *eventstore.DataKey) *eventstore.DataKey {
	w := append([]byte(nil), key.Wrapped...)
	w[len(w)-1] ^= 1
	return &eventstore.DataKey{ID: key.ID, Wrapped: w, MasterKeyID: key.MasterKeyID}
}

// TestAnswers checks the stored answers' copy: sealed under the stream's
// key, opened by it, and not opened once the key is gone; an answer stored
// as it is (no key) reads as it is.
func TestAnswers(t *testing.T) {
	k := keyring(t)
	body := []byte(`{"engineer_notes":"Jane Roe"}`)
	_, key, err := k.NewDataKey(stream)
	if err != nil {
		t.Fatal(err)
	}
	stored, err := k.SealAnswer(stream, key, body)
	if err != nil || strings.Contains(string(stored), "Jane") {
		t.Fatalf("SealAnswer = %q, %v", stored, err)
	}
	if got, ok := k.OpenAnswer(stream, key, stored); !ok || string(got) != string(body) {
		t.Fatalf("OpenAnswer = %q, %v", got, ok)
	}
	if got, ok := k.OpenAnswer(stream, nil, stored); ok || got != nil {
		t.Fatalf("OpenAnswer without the key = %q, %v; want nothing", got, ok)
	}
	if got, ok := k.OpenAnswer(stream, altered(key), stored); ok || got != nil {
		t.Fatalf("OpenAnswer with an altered key row = %q, %v; want nothing", got, ok)
	}
	plain, err := k.SealAnswer(stream, nil, body)
	if err != nil || string(plain) != string(body) {
		t.Fatalf("SealAnswer without a key = %q, %v; want it as it is", plain, err)
	}
	if got, ok := k.OpenAnswer(stream, nil, plain); !ok || string(got) != string(body) {
		t.Fatalf("OpenAnswer of a plain answer = %q, %v", got, ok)
	}
}
