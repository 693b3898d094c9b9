package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/resolutionflow/ledgerd/audit"
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
