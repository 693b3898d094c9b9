package shred_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/resolutionflow/ledgerd/domain"
	"github.com/resolutionflow/ledgerd/eventstore"
	"github.com/resolutionflow/ledgerd/shred"
)

func keyring(tb testing.TB) *shred.Keyring {
	tb.Helper()
	keys, err := shred.NewScratchKeyring()
	if err != nil {
		tb.Fatal(err)
	}
	return keys
}

const stream = "session:0b8e5d0e-1d7a-4d0e-9f57-3c2b9a3c0a11:5f0b8a1c-2a64-4d57-8f44-4f5b8a2f6e10"

// sealed returns a parked handoff's event sealed under a new key of
// stream, as stored, with the key.
func sealed(tb testing.TB, k *shred.Keyring, notes, ip string) (eventstore.Event, *eventstore.DataKey) {
	tb.Helper()
	dk, stored, err := k.NewDataKey(stream)
	if err != nil {
		tb.Fatal(err)
	}
	data := `{"handoff_id":"6f1c3a2e-8b0e-4f55-9a43-7d2c1b0e9f21","engineer_notes":` + string(mustJSON(notes)) + `,"priority":"high"}`
	out, err := shred.Seal(dk, []eventstore.NewEvent{{Type: domain.TypeHandoffParked, Data: json.RawMessage(data), Metadata: eventstore.Metadata{ActorID: "u", ClientIP: ip}}})
	if err != nil {
		tb.Fatal(err)
	}
	e := out[0]
	return eventstore.Event{ID: "e", Stream: stream, Type: e.Type, Data: e.Data, Metadata: e.Metadata, RawMetadata: e.Metadata.AppendJSON(nil)}, stored
}

func mustJSON(v any) []byte {
	b, _ := json.Marshal(v)
	return b
}

// TestSealAndOpen checks that sealed data holds neither the notes nor the
// address, that the stream's key opens it to exactly what it was, and that
// without the key, with another key of the stream, or with the sealed
// value altered or moved to another stream, it shows as erased.
func TestSealAndOpen(t *testing.T) {
	k := keyring(t)
	const notes, ip = "Jane Roe <jane@example.com>", "198.51.100.23"
	e, key := sealed(t, k, notes, ip)
	if raw := string(e.Data) + string(e.RawMetadata); strings.Contains(raw, "Jane") || strings.Contains(raw, ip) {
		t.Fatalf("sealed event holds plaintext: %s", raw)
	}
	e.DataKey = key
	opened := k.Open(e)
	var data map[string]any
	if err := json.Unmarshal(opened.Data, &data); err != nil || data["engineer_notes"] != notes || data["notes_erased"] != nil || data["engineer_notes_sealed"] != nil {
		t.Fatalf("opened data = %s, %v", opened.Data, err)
	}
	if opened.Metadata.ClientIP != ip || opened.Metadata.ClientIPSealed != "" || string(opened.RawMetadata) != string(e.RawMetadata) {
		t.Fatalf("opened metadata = %+v, raw %s", opened.Metadata, opened.RawMetadata)
	}

	_, otherKey := sealed(t, k, "x", "")
	altered := e
	altered.Data = json.RawMessage(strings.Replace(string(e.Data), `_sealed":"`, `_sealed":"0`, 1))
	moved := e
	moved.Stream = stream + "0"
	for name, c := range map[string]eventstore.Event{
		"NoKey":        withKey(e, nil),
		"AnotherKey":   withKey(e, otherKey),
		"OtherMaster":  withKey(e, rewrapped(t, key)),
		"AlteredValue": altered,
		"MovedStream":  moved,
	} {
		got := k.Open(c)
		var data map[string]any
		if err := json.Unmarshal(got.Data, &data); err != nil {
			t.Fatalf("%s: %s: %v", name, got.Data, err)
		}
		// Only the notes were altered: the address still opens.
		ipGone := got.Metadata.ClientIP == "" || name == "AlteredValue" && got.Metadata.ClientIP == ip
		if _, ok := data["engineer_notes"]; !ok || data["engineer_notes"] != nil || data["notes_erased"] != true || !ipGone || got.Metadata.ClientIPSealed != "" {
			t.Errorf("%s: opened %s %+v, want the notes erased and no address", name, got.Data, got.Metadata)
		}
	}
}

func withKey(e eventstore.Event, key *eventstore.DataKey) eventstore.Event {
	e.DataKey = key
	return e
}

// rewrapped is key wrapped by another master key, which the test's
// keyring cannot unwrap.
func rewrapped(tb testing.TB, key *eventstore.DataKey) *eventstore.DataKey {
	tb.Helper()
	other := keyring(tb)
	k2 := *key
	k2.MasterKeyID = other.MasterKeyID()
	return &k2
}

// TestRewrap checks that a rotated data key opens what the old one sealed
// under the new master key only, and that a key is bound to its stream.
func TestRewrap(t *testing.T) {
	from, to := keyring(t), keyring(t)
	e, key := sealed(t, from, "notes", "")
	next, err := from.Rewrap(stream, key, to)
	if err != nil {
		t.Fatal(err)
	}
	if next.ID != key.ID || next.MasterKeyID != to.MasterKeyID() {
		t.Fatalf("rewrapped key %+v", next)
	}
	var data map[string]any
	if err := json.Unmarshal(to.Open(withKey(e, next)).Data, &data); err != nil || data["engineer_notes"] != "notes" {
		t.Fatalf("the new master key does not open the rewrapped key: %v", data)
	}
	if _, err := from.Unwrap(stream, next); !errors.Is(err, shred.ErrWrongMasterKey) {
		t.Fatalf("the old master key unwraps the rewrapped key: %v", err)
	}
	if _, err := to.Unwrap(stream+"0", next); !errors.Is(err, shred.ErrWrongMasterKey) {
		t.Fatalf("a key unwraps for another stream: %v", err)
	}
}

func TestParseMasterKey(t *testing.T) {
	for _, bad := range []string{"", "abc", strings.Repeat("zz", 32), strings.Repeat("ab", 31)} {
		if _, err := shred.ParseMasterKey(bad); err == nil {
			t.Errorf("ParseMasterKey(%q) accepted", bad)
		}
	}
	a, err := shred.ParseMasterKey(strings.Repeat("ab", 32) + "\n")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := shred.ParseMasterKey(strings.Repeat("ab", 31) + "ac")
	if a.ID() == b.ID() || len(a.ID()) != 16 || strings.Contains(a.ID(), "abab") {
		t.Fatalf("master key ids %q and %q", a.ID(), b.ID())
	}
}
