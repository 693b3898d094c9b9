package main

import (
	"io"
	"strings"
	"testing"

	"github.com/resolutionflow/ledgerd/internal/pgtest"
)

// TestServe_PostgresNeedsOneNATSServer checks that serve on PostgreSQL
// refuses to start without --nats-url unless --embedded-nats is given, and
// that a second process with an embedded NATS server of its own on the
// same database is refused while the first runs, and starts once it
// stopped.
func TestServe_PostgresNeedsOneNATSServer(t *testing.T) {
	unreachable := []string{"serve", "--database-url", "postgres://127.0.0.1:1/none", "--http-addr", freeAddr(t),
		"--jwt-secret", testSecret, "--audit-key-file", auditKeyFileFor(t), "--master-key-file", masterKeyFileFor(t)}
	for name, c := range map[string]struct {
		args []string
		want string
	}{
		"NoNATSURL": {unreachable, "--nats-url (NATS_URL) is required with PostgreSQL"},
		"Both":      {append(unreachable, "--nats-url", "nats://127.0.0.1:1", "--embedded-nats"), "not both"},
	} {
		err := run(t.Context(), c.args, io.Discard, io.Discard)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: serve = %v, want an error containing %q", name, err, c.want)
		}
	}

	dbURL := pgtest.NewDatabase(t)
	auditKey := auditKeyFileFor(t)
	args := []string{"--database-url", dbURL, "--jwt-secret", testSecret, "--audit-key-file", auditKey, "--master-key-file", masterKeyFileFor(t)}
	_, stop := startServe(t, append(args, "--embedded-nats")...)

	t.Setenv("LEDGER_EMBEDDED_NATS", "true")
	second := append([]string{"serve", "--http-addr", freeAddr(t), "--data-dir", t.TempDir(), "--nats-listen", "127.0.0.1:0"}, args...)
	err := run(t.Context(), second, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "another ledgerd process on this database runs its own embedded NATS server") {
		t.Fatalf("a second serve with an embedded NATS server = %v, want it refused", err)
	}
	if strings.Contains(err.Error(), "\n") {
		t.Errorf("the refusal is not one line: %q", err)
	}

	if err := stop(); err != nil {
		t.Fatalf("stop the first serve: %v", err)
	}
	startServe(t, args...) // LEDGER_EMBEDDED_NATS=true
}
