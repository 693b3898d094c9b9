package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/resolutionflow/ledgerd/idempotency/pgidem"
	"github.com/resolutionflow/ledgerd/internal/ledgertest"
	"github.com/resolutionflow/ledgerd/internal/pgtest"
	"github.com/resolutionflow/ledgerd/relay"
)

// leastPrivilegeDatabase makes an empty database owned by a new role
// (not a superuser), and a second role for serve. It returns the
// superuser's URL, the owner's and the runtime role's URLs, and the
// runtime role's name.
func leastPrivilegeDatabase(t *testing.T) (adminURL, ownerURL, runtimeURL, runtime string) {
	t.Helper()
	adminURL = pgtest.NewEmptyDatabase(t)
	owner, ownerURL := pgtest.NewRole(t, adminURL)
	runtime, runtimeURL = pgtest.NewRole(t, adminURL)
	u, err := url.Parse(adminURL)
	if err != nil {
		t.Fatal(err)
	}
	if err := execAs(t, adminURL, "ALTER DATABASE "+pgx.Identifier{strings.TrimPrefix(u.Path, "/")}.Sanitize()+" OWNER TO "+pgx.Identifier{owner}.Sanitize()); err != nil {
		t.Fatalf("hand the database to its owner: %v", err)
	}
	return adminURL, ownerURL, runtimeURL, runtime
}

// execAs runs one statement on the database at dbURL as the URL's role.
func execAs(tb testing.TB, dbURL, query string) error {
	tb.Helper()
	conn, err := pgx.Connect(tb.Context(), dbURL)
	if err != nil {
		tb.Fatalf("connect: %v", err)
	}
	defer conn.Close(context.WithoutCancel(tb.Context()))
	_, err = conn.Exec(tb.Context(), query)
	return err
}

func runLedgerd(tb testing.TB, args ...string) error {
	tb.Helper()
	return run(tb.Context(), args, io.Discard, io.Discard)
}

// TestMigrate_RuntimeRole migrates as an owner that is not a superuser,
// grants a runtime role, and checks that the runtime role cannot change
// the log or the schema, while serve, rebuild and the idempotency sweep
// work as it.
func TestMigrate_RuntimeRole(t *testing.T) {
	adminURL, ownerURL, runtimeURL, runtime := leastPrivilegeDatabase(t)

	if err := runLedgerd(t, "migrate", "--database-url", runtimeURL); err == nil || !strings.Contains(err.Error(), "run `ledgerd migrate` with the owner's") {
		t.Fatalf("migrate as the runtime role on an empty database = %v, want an error saying to migrate as the owner", err)
	}
	for range 2 { // re-running is safe
		if err := runLedgerd(t, "migrate", "--database-url", ownerURL, "--runtime-role", runtime); err != nil {
			t.Fatalf("migrate --runtime-role: %v", err)
		}
	}

	base, stop := startServe(t, "--database-url", runtimeURL, "--embedded-nats", "--jwt-secret", testSecret, "--audit-key-file", auditKeyFileFor(t), "--master-key-file", masterKeyFileFor(t))
	account := uuid.NewString()
	token := mintToken(t, testSecret, "--account", account, "--role", "owner")
	session := uuid.New()
	createURL := fmt.Sprintf("%s/ai-sessions/%s/handoff", base, session)
	for i, want := range []string{"", "true"} {
		req, _ := http.NewRequest(http.MethodPost, createURL, strings.NewReader(`{"intent":"escalate"}`))
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Idempotency-Key", "k")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("escalate %d: %v", i, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusCreated || resp.Header.Get("Idempotent-Replayed") != want {
			t.Fatalf("escalate %d = %d (replayed %q) %s, want 201 (replayed %q)", i, resp.StatusCode, resp.Header.Get("Idempotent-Replayed"), body, want)
		}
	}
	req, _ := http.NewRequest(http.MethodGet, fmt.Sprintf("%s/ai-sessions/%s/handoffs", base, session), nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("history: %v", err)
	}
	var history []json.RawMessage
	err = json.NewDecoder(resp.Body).Decode(&history)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK || len(history) != 1 {
		t.Fatalf("history = %d, %d handoffs, %v; want 200 and the escalation", resp.StatusCode, len(history), err)
	}
	// An erasure deletes the session's data key and idempotency keys as
	// the runtime role.
	req, _ = http.NewRequest(http.MethodPost, fmt.Sprintf("%s/ai-sessions/%s/erase", base, session), strings.NewReader(`{"reason": "runtime role"}`))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	if resp, err = http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("erase as the runtime role = %v, %v; want 200", resp, err)
	}
	resp.Body.Close()
	admin := pgtest.Pool(t, adminURL, 1)
	var keys, responses int
	if err := admin.QueryRow(t.Context(), `SELECT (SELECT count(*) FROM data_keys), (SELECT count(*) FROM idempotency_keys WHERE session_id IS NOT NULL)`).Scan(&keys, &responses); err != nil || keys != 0 || responses != 0 {
		t.Fatalf("after the erasure: %d data keys, %d stored responses of the session, %v; want none", keys, responses, err)
	}
	ledgertest.WaitUntil(t, 30*time.Second, "the relay publishes the escalation", func() bool {
		var pos int64
		err := admin.QueryRow(t.Context(), `SELECT coalesce(max(position), 0) FROM checkpoints WHERE name = $1`, relay.Name).Scan(&pos)
		if err != nil {
			t.Fatalf("read the relay's checkpoint: %v", err)
		}
		return pos > 0
	})
	if err := stop(); err != nil {
		t.Fatalf("serve as the runtime role: %v", err)
	}
	if err := runLedgerd(t, "projections", "rebuild", "--database-url", runtimeURL, "--master-key-file", masterKeyFileFor(t)); err != nil {
		t.Fatalf("rebuild as the runtime role: %v", err)
	}
	if _, err := pgidem.New(pgtest.Pool(t, runtimeURL, 1)).Sweep(t.Context()); err != nil {
		t.Fatalf("sweep as the runtime role: %v", err)
	}

	// A table a later migration adds is granted by the next migrate.
	if err := execAs(t, ownerURL, `CREATE TABLE added_later (id bigserial PRIMARY KEY, n integer)`); err != nil {
		t.Fatalf("add a table as the owner: %v", err)
	}
	if err := runLedgerd(t, "migrate", "--database-url", ownerURL, "--runtime-role", runtime); err != nil {
		t.Fatalf("migrate --runtime-role after a new table: %v", err)
	}
	if err := execAs(t, runtimeURL, `INSERT INTO added_later (n) VALUES (1)`); err != nil {
		t.Fatalf("insert into the new table as the runtime role: %v", err)
	}

	for _, q := range []string{
		`UPDATE events SET data = '{}'`,
		`DELETE FROM events`,
		`TRUNCATE events`,
		`ALTER TABLE events DISABLE TRIGGER ALL`,
		`ALTER TABLE events DISABLE TRIGGER events_no_update_delete`,
		`DROP TRIGGER events_no_update_delete ON events`,
		`DROP TABLE events`,
		`DROP TABLE handoffs`,
		`ALTER TABLE handoffs ADD COLUMN x integer`,
		`TRUNCATE handoffs`,
		`CREATE TABLE sneaky (n integer)`,
		`INSERT INTO goose_db_version (version_id, is_applied) VALUES (999, true)`,
		`SELECT setval('events_position_seq', 1)`,
		`DELETE FROM leader_leases`,
		`UPDATE merkle_leaves SET position = 0`,
		`DELETE FROM merkle_nodes`,
		`DELETE FROM merkle_checkpoints`,
		`TRUNCATE merkle_checkpoints`,
	} {
		err := execAs(t, runtimeURL, q)
		if pgErr := (*pgconn.PgError)(nil); !errors.As(err, &pgErr) || pgErr.Code != "42501" {
			t.Errorf("%s as the runtime role = %v, want insufficient privilege (42501)", q, err)
		}
	}

	// The Merkle tree's tables may only be read and appended to.
	for _, table := range []string{"merkle_leaves", "merkle_nodes", "merkle_checkpoints"} {
		for privilege, want := range map[string]bool{"SELECT": true, "INSERT": true, "UPDATE": false, "DELETE": false, "TRUNCATE": false} {
			var has bool
			if err := admin.QueryRow(t.Context(), `SELECT has_table_privilege($1, $2, $3)`, runtime, table, privilege).Scan(&has); err != nil {
				t.Fatal(err)
			}
			if has != want {
				t.Errorf("runtime role has %s on %s: %v, want %v", privilege, table, has, want)
			}
		}
	}

	// A later version's migration is pending: serve as the runtime role
	// says to migrate as the owner.
	if err := execAs(t, adminURL, `DELETE FROM goose_db_version WHERE version_id = (SELECT max(version_id) FROM goose_db_version)`); err != nil {
		t.Fatalf("forget the last migration: %v", err)
	}
	err = runLedgerd(t, "serve", "--database-url", runtimeURL, "--embedded-nats", "--jwt-secret", testSecret, "--audit-key-file", auditKeyFileFor(t), "--master-key-file", masterKeyFileFor(t), "--http-addr", freeAddr(t), "--data-dir", t.TempDir())
	if err == nil || !strings.Contains(err.Error(), "run `ledgerd migrate` with the owner's --database-url first") {
		t.Fatalf("serve as the runtime role with a migration pending = %v, want an error saying to migrate as the owner", err)
	}
}

// TestMigrate_RefusesARuntimeRoleThatCouldDoMore checks that migrate will
// not make a role the runtime role when it is missing, the owner itself, or
// a superuser.
func TestMigrate_RefusesARuntimeRoleThatCouldDoMore(t *testing.T) {
	adminURL, ownerURL, _, _ := leastPrivilegeDatabase(t)
	owner, err := url.Parse(ownerURL)
	if err != nil {
		t.Fatal(err)
	}
	admin, err := url.Parse(adminURL)
	if err != nil {
		t.Fatal(err)
	}
	for role, want := range map[string]string{
		"no_such_role":        "does not exist",
		owner.User.Username(): "role running the migrations",
		admin.User.Username(): "superuser",
	} {
		err := runLedgerd(t, "migrate", "--database-url", ownerURL, "--runtime-role", role)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("migrate --runtime-role %s = %v, want an error saying %q", role, err, want)
		}
	}
	if err := runLedgerd(t, "migrate", "--data-dir", t.TempDir(), "--runtime-role", "x"); err == nil {
		t.Error("migrate --runtime-role on the embedded store succeeded")
	}
}
