package main

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"

	"github.com/resolutionflow/ledgerd/audit"
	"github.com/resolutionflow/ledgerd/audit/natswitness"
	"github.com/resolutionflow/ledgerd/embeddednats"
	"github.com/resolutionflow/ledgerd/httpapi"
	"github.com/resolutionflow/ledgerd/internal/ledgertest"
	"github.com/resolutionflow/ledgerd/internal/natstest"
	"github.com/resolutionflow/ledgerd/internal/pgtest"
)

// auditKeyFileFor writes a new checkpoint signing key to a file of the
// test, made by `ledgerd audit keygen`, and returns its path.
func auditKeyFileFor(tb testing.TB) string {
	tb.Helper()
	var out bytes.Buffer
	if err := run(tb.Context(), []string{"audit", "keygen", "--name", "ledgerd.test"}, &out, &out); err != nil {
		tb.Fatalf("audit keygen: %v", err)
	}
	path := filepath.Join(tb.TempDir(), "audit-key")
	if err := os.WriteFile(path, out.Bytes(), 0o600); err != nil {
		tb.Fatal(err)
	}
	return path
}

// TestAuditKey checks `ledgerd audit key`: the public key of a key file,
// the one the embedded mode makes (once, mode 0600), and the error with
// PostgreSQL and no key.
func TestAuditKey(t *testing.T) {
	file := auditKeyFileFor(t)
	skey, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	key, err := audit.ParseKey(string(skey))
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := run(t.Context(), []string{"audit", "key", "--audit-key-file", file}, &out, &out); err != nil || strings.TrimSpace(out.String()) != key.Verifier() {
		t.Fatalf("audit key --audit-key-file = %q, %v; want %q", out.String(), err, key.Verifier())
	}

	dir := filepath.Join(t.TempDir(), "data")
	var first, second bytes.Buffer
	for _, o := range []*bytes.Buffer{&first, &second} {
		if err := run(t.Context(), []string{"audit", "key", "--data-dir", dir}, o, o); err != nil {
			t.Fatalf("audit key --data-dir: %v", err)
		}
	}
	if first.String() != second.String() || !strings.HasPrefix(first.String(), "ledgerd+") {
		t.Fatalf("embedded keys %q then %q, want one key named ledgerd", first.String(), second.String())
	}
	info, err := os.Stat(filepath.Join(dir, auditKeyFile))
	if err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("embedded key file: %v, %v; want mode 0600", info, err)
	}

	err = run(t.Context(), []string{"serve", "--database-url", "postgres://127.0.0.1:1/none", "--jwt-secret", testSecret}, &out, &out)
	if err == nil || !strings.Contains(err.Error(), "--audit-key-file (LEDGER_AUDIT_KEY_FILE) is required with PostgreSQL") {
		t.Fatalf("serve on PostgreSQL without a key = %v, want an error naming --audit-key-file", err)
	}
}

// TestServe_SealsTheLog runs serve on each store, appends, and checks that
// the sealer signs a checkpoint of the log: /audit/head verifies with
// /audit/key, a receipt of the newest event verifies against it, and the
// checkpoint is in the NATS stream LEDGER_CHECKPOINTS.
func TestServe_SealsTheLog(t *testing.T) {
	for name, args := range map[string]func(t *testing.T) []string{
		"Embedded": func(t *testing.T) []string { return nil },
		"Postgres": func(t *testing.T) []string {
			return []string{"--database-url", pgtest.NewDatabase(t), "--embedded-nats", "--audit-key-file", auditKeyFileFor(t), "--master-key-file", masterKeyFileFor(t)}
		},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			base, _ := startServe(t, append([]string{"--data-dir", dir, "--jwt-secret", testSecret}, args(t)...)...)
			account, team := uuid.NewString(), uuid.NewString()
			engineer := mintToken(t, testSecret, "--account", account, "--team", team)
			auditor := mintToken(t, testSecret, "--account", account, "--team", team, "--role", "auditor")
			head, key := parkAndSeal(t, base, engineer, auditor, "", "")
			c, err := audit.OpenCheckpoint([]byte(head.Checkpoint), key)
			if err != nil {
				t.Fatalf("the head does not verify with /audit/key: %v", err)
			}
			var r httpapi.Receipt
			if status := getJSON(t, fmt.Sprintf("%s/audit/proof?position=%d", base, head.Position), auditor, &r); status != http.StatusOK {
				t.Fatalf("receipt of position %d = %d", head.Position, status)
			}
			leaf, _ := hex.DecodeString(r.LeafHash)
			hashes := make([][]byte, len(r.Proof))
			for i, h := range r.Proof {
				hashes[i], _ = hex.DecodeString(h)
			}
			if err := proof.VerifyInclusion(rfc6962.DefaultHasher, r.LeafIndex, r.TreeSize, leaf, hashes, c.Root); err != nil || r.LeafIndex != 1 {
				t.Fatalf("receipt of the newest event (leaf %d): %v", r.LeafIndex, err)
			}

			js := natstest.JetStream(t, readURL(t, dir, embeddednats.ReaderURLFile).String())
			ledgertest.WaitUntil(t, 30*time.Second, "the checkpoint reaches NATS", func() bool {
				stream, err := js.Stream(t.Context(), natswitness.DefaultStream)
				if err != nil {
					return false
				}
				m, err := stream.GetLastMsgForSubject(t.Context(), natswitness.Subject)
				return err == nil && string(m.Data) == head.Checkpoint
			})
		})
	}
}

// getJSON GETs url with the bearer token (none when empty), decodes the
// body into v and returns the status.
func getJSON(tb testing.TB, url, token string, v any) int {
	tb.Helper()
	req, err := http.NewRequestWithContext(tb.Context(), http.MethodGet, url, nil)
	if err != nil {
		tb.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		tb.Fatalf("GET %s: decode: %v", url, err)
	}
	return resp.StatusCode
}

// sealedHead is the /audit/head answer.
type sealedHead struct {
	Position   int64  `json:"position"`
	Size       uint64 `json:"size"`
	Checkpoint string `json:"checkpoint"`
}

// parkAndSeal parks one handoff per note on a new session through the API at
// base, as engineer, then waits until the sealer has signed a checkpoint of
// them all. It returns that head, read as auditor, and the server's
// verifier key from /audit/key.
func parkAndSeal(t *testing.T, base, engineer, auditor string, notes ...string) (sealedHead, string) {
	t.Helper()
	for _, n := range notes {
		resp, err := post(t, fmt.Sprintf("%s/ai-sessions/%s/handoff", base, uuid.New()), engineer, fmt.Sprintf(`{"intent": "park", "engineer_notes": %q}`, n))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusCreated {
			t.Fatalf("park = %d, want 201", resp.StatusCode)
		}
	}
	var head sealedHead
	ledgertest.WaitUntil(t, 30*time.Second, fmt.Sprintf("the sealer signs a checkpoint of %d events", len(notes)), func() bool {
		return getJSON(t, base+"/audit/head", auditor, &head) == http.StatusOK && head.Size == uint64(len(notes))
	})
	var key struct {
		Key string `json:"key"`
	}
	getJSON(t, base+"/audit/key", "", &key)
	return head, key.Key
}

// testMasterKey is the master key of the tests' servers on PostgreSQL:
// every process of a test must be given the same one.
const testMasterKey = "6c65646765726420746573742d6d6173746572206b6579206f6e6c7920202020"

// masterKeyFileFor writes testMasterKey to a private file and returns its
// path, for --master-key-file.
func masterKeyFileFor(tb testing.TB) string {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), "master-key")
	if err := os.WriteFile(path, []byte(testMasterKey+"\n"), 0o600); err != nil {
		tb.Fatal(err)
	}
	return path
}
