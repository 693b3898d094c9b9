package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/resolutionflow/ledgerd/commands"
	"github.com/resolutionflow/ledgerd/domain"
	"github.com/resolutionflow/ledgerd/eventcodec"
	"github.com/resolutionflow/ledgerd/shred"
)

func TestErase_Postgres(t *testing.T) {
	t.Parallel()
	testErase(t, postgresLedger(t))
}

func TestErase_SQLite(t *testing.T) {
	t.Parallel()
	testErase(t, sqliteLedger(t))
}

// ledgerdRun runs ledgerd with args and returns what it printed on stdout.
func ledgerdRun(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	err := run(t.Context(), args, &stdout, &stderr)
	return stdout.String(), err
}

// testErase records two sessions through a handler that seals their
// notes, then checks the operators' side of an erasure: `ledgerd erase`
// (refused for a session the account lacks; idempotent), `projections
// rebuild` and `replay` and `history` without the notes afterwards while
// the other session keeps its own, `verify` intact after it and still
// catching an altered ciphertext, `keys rotate`, and a lost or wrong master
// key refused at start with nothing made in its place.
func testErase(t *testing.T, l tamperable) {
	ctx := t.Context()
	store := l.storage[:2]
	keyFile := masterKeyFileFor(t)
	keyArgs := append(append([]string{}, store...), "--master-key-file", keyFile)
	if store[0] == "--data-dir" {
		// The embedded mode keeps the key in its data directory.
		if err := os.WriteFile(filepath.Join(store[1], masterKeyFile), []byte(testMasterKey+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		keyArgs = store
	}
	m, err := shred.ParseMasterKey(testMasterKey)
	if err != nil {
		t.Fatal(err)
	}
	keys := shred.NewKeyring(m)
	h := commands.NewHandler(shred.NewStore(l.log, keys), nil, commands.WithKeyring(keys))
	account, team := uuid.New(), uuid.New()
	alice := domain.Actor{UserID: uuid.New(), AccountID: account, TeamID: team, Role: domain.RoleEngineer}
	erased, kept := uuid.New(), uuid.New()
	const secret, other = "call Jane Roe on +44 20 7946 0000", "notes that stay"
	for session, notes := range map[uuid.UUID]string{erased: secret, kept: other} {
		cmd := domain.CreateHandoff{Actor: alice, HandoffID: uuid.New(), Intent: domain.IntentEscalate, Notes: notes, Priority: domain.PriorityHigh, At: h.Now()}
		if _, err := h.Execute(ctx, alice, session, cmd, commands.Trace{RequestID: "r", ClientIP: "192.0.2.1"}); err != nil {
			t.Fatal(err)
		}
	}
	replay := func(session uuid.UUID, args []string) (string, error) {
		return ledgerdRun(t, append([]string{"replay", "--account", account.String(), "--session", session.String()}, args...)...)
	}
	if out, err := replay(erased, keyArgs); err != nil || !strings.Contains(out, secret) {
		t.Fatalf("replay before the erasure = %q, %v; want the notes", out, err)
	}

	eraseArgs := append([]string{"erase", "--account", account.String(), "--session", erased.String(), "--reason", "ticket 7"}, store...)
	if _, err := ledgerdRun(t, append([]string{"erase", "--account", account.String(), "--session", uuid.NewString(), "--reason", "x"}, store...)...); err == nil || !strings.Contains(err.Error(), domain.MsgSessionNotFound) || exitCode(err) != 2 {
		t.Fatalf("erase of a session the account lacks = %v, want a usage error %q", err, domain.MsgSessionNotFound)
	}
	for i, appended := range []bool{true, false} {
		out, err := ledgerdRun(t, eraseArgs...)
		var res struct {
			NotesErased bool `json:"notes_erased"`
			Appended    bool `json:"appended"`
		}
		if err != nil || json.Unmarshal([]byte(out), &res) != nil || !res.NotesErased || res.Appended != appended {
			t.Fatalf("erase %d = %q, %v; want notes_erased and appended %v", i+1, out, err, appended)
		}
	}
	if _, err := ledgerdRun(t, append([]string{"projections", "rebuild"}, keyArgs...)...); err != nil {
		t.Fatalf("projections rebuild after the erasure: %v", err)
	}
	history, err := ledgerdRun(t, append([]string{"history", "--account", account.String(), "--session", erased.String()}, keyArgs...)...)
	if err != nil || strings.Contains(history, secret) || !strings.Contains(history, `"notes_erased":true`) {
		t.Fatalf("history after the erasure and a rebuild = %q, %v", history, err)
	}
	if out, err := replay(erased, keyArgs); err != nil || strings.Contains(out, secret) || strings.Contains(out, "192.0.2.1") || !strings.Contains(out, "SessionDataErased") {
		t.Fatalf("replay after the erasure = %q, %v", out, err)
	}
	if out, err := replay(kept, keyArgs); err != nil || !strings.Contains(out, other) || !strings.Contains(out, "192.0.2.1") {
		t.Fatalf("replay of another session = %q, %v; want its notes and address", out, err)
	}
	if out, err := runVerify(t, l.storage...); err != nil || !strings.HasPrefix(out, "intact: 3 events in 2 streams") {
		t.Fatalf("verify after the erasure = %q, %v", out, err)
	}

	// Rotation: the kept session opens with the new key, not the old.
	newKey := filepath.Join(t.TempDir(), "new-master-key")
	newText, _ := shred.NewMasterKey()
	if err := os.WriteFile(newKey, []byte(newText+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	rotateArgs := append([]string{"keys", "rotate", "--new-master-key-file", newKey}, keyArgs...)
	for range 2 { // twice: the second finds them rewrapped
		if out, err := ledgerdRun(t, rotateArgs...); err != nil || !strings.Contains(out, "data keys rewrapped") {
			t.Fatalf("keys rotate = %q, %v", out, err)
		}
	}
	newArgs := append(append([]string{}, store...), "--master-key-file", newKey)
	if out, err := replay(kept, newArgs); err != nil || !strings.Contains(out, other) {
		t.Fatalf("replay with the new master key = %q, %v; want the notes", out, err)
	}
	if _, err := replay(kept, append(append([]string{}, store...), "--master-key-file", keyFile)); err == nil || !strings.Contains(err.Error(), "does not wrap") {
		t.Fatalf("replay with the old master key = %v, want it refused", err)
	}
	if store[0] == "--data-dir" {
		keptKey, err := os.ReadFile(filepath.Join(store[1], masterKeyFile))
		if err != nil || strings.TrimSpace(string(keptKey)) != newText {
			t.Fatalf("the data directory's master key after the rotation = %q, %v; want the new one", keptKey, err)
		}
		// A lost key file: refused, and none made in its place.
		path := filepath.Join(store[1], masterKeyFile)
		if err := os.Remove(path); err != nil {
			t.Fatal(err)
		}
		for _, args := range [][]string{
			append([]string{"replay", "--account", account.String(), "--session", kept.String()}, store...),
			append([]string{"serve", "--http-addr", freeAddr(t), "--nats-listen", "127.0.0.1:0"}, store...),
		} {
			if _, err := ledgerdRun(t, args...); err == nil || !strings.Contains(err.Error(), "master key file "+path+" is missing") {
				t.Fatalf("%s without the master key file = %v, want it refused", args[0], err)
			}
			if _, err := os.Stat(path); !os.IsNotExist(err) {
				t.Fatalf("%s made a master key file in place of the lost one: %v", args[0], err)
			}
		}
	}

	// An altered ciphertext is caught like any altered byte.
	events, err := l.log.ReadStream(ctx, eventcodec.StreamName(account, kept))
	if err != nil || len(events) != 1 || !strings.Contains(string(events[0].Data), "engineer_notes_sealed") {
		t.Fatalf("the kept session's stored events = %+v, %v", events, err)
	}
	altered := strings.Replace(string(events[0].Data), `_sealed":"`, `_sealed":"A`, 1)
	l.tamper(t, stmt(`UPDATE events SET data = ? WHERE position = ?`, altered, events[0].Position))
	_, err = runVerify(t, l.storage...)
	wantFailure(t, err, events[0].Position, events[0].Stream)
}
