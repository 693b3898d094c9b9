package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/resolutionflow/ledgerd/internal/ledgertest"
	"github.com/resolutionflow/ledgerd/internal/pgtest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// freeAddr returns a loopback address with a port nobody listens on.
func freeAddr(tb testing.TB) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("find a free port: %v", err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// startServe runs `ledgerd serve` in-process, with its data directory and
// embedded NATS server out of the way, until the returned stop function
// cancels it (as SIGTERM would) and returns its error.
func startServe(tb testing.TB, args ...string) (base string, stop func() error) {
	tb.Helper()
	return startServeLogging(tb, io.Discard, args...)
}

// startServeLogging is startServe with the service's log written to
// stderr.
func startServeLogging(tb testing.TB, stderr io.Writer, args ...string) (base string, stop func() error) {
	tb.Helper()
	addr := freeAddr(tb)
	args = append([]string{"--data-dir", tb.TempDir(), "--nats-listen", "127.0.0.1:0"}, args...)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, append([]string{"serve", "--http-addr", addr}, args...), io.Discard, stderr)
	}()
	base = "http://" + addr
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(base + "/healthz")
		if err == nil {
			resp.Body.Close()
			break
		}
		select {
		case err := <-done:
			tb.Fatalf("serve exited before it was healthy: %v", err)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			tb.Fatalf("serve not healthy after 30s: %v", err)
		}
	}
	var stopped bool
	stop = func() error {
		if stopped {
			return nil
		}
		stopped = true
		cancel()
		return <-done
	}
	tb.Cleanup(func() { _ = stop() })
	return base, stop
}

func mintToken(tb testing.TB, secret string, args ...string) string {
	tb.Helper()
	var out, errOut bytes.Buffer
	if err := run(context.Background(), append([]string{"token", "--jwt-secret", secret}, args...), &out, &errOut); err != nil {
		tb.Fatalf("token: %v: %s", err, errOut.String())
	}
	return strings.TrimSpace(out.String())
}

func post(tb testing.TB, url, token, body string) (*http.Response, error) {
	tb.Helper()
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		tb.Fatalf("new request: %v", err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	return http.DefaultClient.Do(req)
}

// TestServe_FinishesInFlightRequestsOnShutdown holds an escalation inside
// the database, stops the service while it is in flight, and checks that it
// still completes with 201 and that serve then exits cleanly.
func TestServe_FinishesInFlightRequestsOnShutdown(t *testing.T) {
	dbURL := pgtest.NewDatabase(t)
	base, stop := startServe(t, "--database-url", dbURL, "--embedded-nats", "--jwt-secret", testSecret, "--audit-key-file", auditKeyFileFor(t), "--master-key-file", masterKeyFileFor(t))
	token := mintToken(t, testSecret)

	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer conn.Close(ctx)
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatalf("begin: %v", err)
	}
	if _, err := tx.Exec(ctx, `LOCK TABLE events IN EXCLUSIVE MODE`); err != nil {
		t.Fatalf("lock events: %v", err)
	}

	type result struct {
		status int
		err    error
	}
	inFlight := make(chan result, 1)
	go func() {
		resp, err := post(t, fmt.Sprintf("%s/ai-sessions/%s/handoff", base, uuid.New()), token, `{"intent":"escalate","engineer_notes":"in flight"}`)
		if err != nil {
			inFlight <- result{err: err}
			return
		}
		resp.Body.Close()
		inFlight <- result{status: resp.StatusCode}
	}()
	waitForLockWaiter(t, conn)

	stopped := make(chan error, 1)
	go func() { stopped <- stop() }()
	select {
	case err := <-stopped:
		t.Fatalf("serve stopped (%v) while a request was in flight", err)
	case <-time.After(300 * time.Millisecond):
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatalf("release lock: %v", err)
	}
	if r := <-inFlight; r.err != nil || r.status != http.StatusCreated {
		t.Fatalf("in-flight escalate = %d, %v; want 201", r.status, r.err)
	}
	if err := <-stopped; err != nil {
		t.Fatalf("serve returned %v after shutdown, want nil", err)
	}
}

// waitForLockWaiter waits until some session waits for a lock held by conn.
func waitForLockWaiter(tb testing.TB, conn *pgx.Conn) {
	tb.Helper()
	ledgertest.WaitUntil(tb, 20*time.Second, "the request reaches the database", func() bool {
		var waiting bool
		err := conn.QueryRow(tb.Context(), `SELECT EXISTS (SELECT 1 FROM pg_locks WHERE NOT granted AND relation = 'events'::regclass)`).Scan(&waiting)
		if err != nil {
			tb.Fatalf("look for lock waiters: %v", err)
		}
		return waiting
	})
}

func TestServe_RefusesToStartWithoutSecretOnPostgres(t *testing.T) {
	t.Setenv("LEDGER_JWT_SECRET", "")
	err := run(context.Background(), []string{"serve", "--database-url", "postgres://127.0.0.1:1/none", "--http-addr", freeAddr(t)}, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "LEDGER_JWT_SECRET") {
		t.Fatalf("serve without a secret = %v, want an error naming LEDGER_JWT_SECRET", err)
	}
}

func TestServeAndToken_RefuseAShortSecret(t *testing.T) {
	short := testSecret[:31]
	for _, args := range [][]string{
		{"serve", "--database-url", "postgres://127.0.0.1:1/none", "--http-addr", freeAddr(t), "--jwt-secret", short},
		{"token", "--jwt-secret", short},
	} {
		var out bytes.Buffer
		err := run(context.Background(), args, &out, io.Discard)
		if err == nil || !strings.Contains(err.Error(), "at least 32 bytes") || out.Len() != 0 {
			t.Errorf("%s with a 31-byte secret = %v, printed %q; want an error naming the minimum", args[0], err, out.String())
		}
	}
}

func TestServe_RefusesNonPositiveDurations(t *testing.T) {
	for _, flag := range []string{"--read-wait-timeout", "--stall-after"} {
		for _, d := range []string{"0s", "-1s"} {
			err := run(context.Background(), []string{"serve", "--database-url", "postgres://127.0.0.1:1/none", "--http-addr", freeAddr(t),
				"--jwt-secret", testSecret, flag, d}, io.Discard, io.Discard)
			if err == nil || !strings.Contains(err.Error(), flag+" must be positive") {
				t.Errorf("serve %s %s = %v, want an error naming the flag", flag, d, err)
			}
		}
	}
}

func TestToken_PrintsOnlyAToken(t *testing.T) {
	var out, errOut bytes.Buffer
	err := run(context.Background(), []string{"token", "--jwt-secret", testSecret, "--role", "admin", "--user", "7d6f2b8e-1c3a-4e5f-9a0b-2c4d6e8f0a1b"}, &out, &errOut)
	if err != nil {
		t.Fatalf("token: %v", err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 1 || strings.Count(lines[0], ".") != 2 {
		t.Fatalf("token printed %q, want exactly one JWT line", out.String())
	}
	if err := run(context.Background(), []string{"token", "--jwt-secret", testSecret, "--role", "king"}, &out, &errOut); err == nil {
		t.Fatal("token with an unknown role succeeded")
	}
}

func TestRun_UnknownCommand(t *testing.T) {
	err := run(context.Background(), []string{"frobnicate"}, io.Discard, io.Discard)
	if err == nil || errors.Is(err, context.Canceled) {
		t.Fatalf("unknown command = %v, want an error", err)
	}
}

// testSecret signs the tokens of the tests; 32 bytes is the shortest
// accepted.
const testSecret = "test-secret-of-ledgerd-0123456789"

// TestServe_TokenRules checks that the token flags of serve and token
// match: a token minted with the issuer and audience serve asks for, within
// its lifetime cap, is accepted; one without them, or living longer, is not.
func TestServe_TokenRules(t *testing.T) {
	base, _ := startServe(t, "--jwt-secret", testSecret, "--jwt-issuer", "ledger-test", "--jwt-audience", "ledgerd", "--jwt-max-ttl", "2h")
	status := func(token string) int {
		t.Helper()
		req, err := http.NewRequest(http.MethodGet, base+"/ai-sessions/queue", nil)
		if err != nil {
			t.Fatalf("new request: %v", err)
		}
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("GET queue: %v", err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for _, tc := range []struct {
		name string
		args []string
		want int
	}{
		{"Matching", []string{"--issuer", "ledger-test", "--audience", "ledgerd", "--ttl", "2h"}, http.StatusOK},
		{"NoIssuer", []string{"--audience", "ledgerd"}, http.StatusUnauthorized},
		{"NoAudience", []string{"--issuer", "ledger-test"}, http.StatusUnauthorized},
		{"TooLong", []string{"--issuer", "ledger-test", "--audience", "ledgerd", "--ttl", "3h"}, http.StatusUnauthorized},
	} {
		if got := status(mintToken(t, testSecret, tc.args...)); got != tc.want {
			t.Errorf("%s: status %d, want %d", tc.name, got, tc.want)
		}
	}
	// The token command reads the issuer and audience serve reads.
	t.Setenv("LEDGER_JWT_ISSUER", "ledger-test")
	t.Setenv("LEDGER_JWT_AUDIENCE", "ledgerd")
	if got := status(mintToken(t, testSecret)); got != http.StatusOK {
		t.Errorf("token from the environment's issuer and audience: status %d, want 200", got)
	}
}
