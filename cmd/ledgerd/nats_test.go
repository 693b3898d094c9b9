package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"

	"github.com/resolutionflow/ledgerd/embeddednats"
)

// TestServe_EmbeddedNATSNeedsTheKeptCredentials runs serve in the embedded
// mode and checks that its NATS server refuses anonymous clients, that it
// keeps the ledger's client URL in <data-dir>/nats-url, mode 0600, and that
// tail reads the events with it by default, or as the read-only user with
// --nats-user and --nats-password or with the reader's URL.
func TestServe_EmbeddedNATSNeedsTheKeptCredentials(t *testing.T) {
	dir := t.TempDir()
	base, _ := startServe(t, "--data-dir", dir, "--jwt-secret", testSecret)
	path := filepath.Join(dir, embeddednats.URLFile)
	info, err := os.Stat(path)
	if err != nil {
		t.Fatalf("serve made no NATS URL file: %v", err)
	}
	if perm := info.Mode().Perm(); perm != 0o600 {
		t.Errorf("%s has mode %04o, want 0600", path, perm)
	}
	ledgerURL := readURL(t, dir, embeddednats.URLFile)
	if ledgerURL.User.Username() != embeddednats.User {
		t.Errorf("%s holds a URL of user %q, want %q", path, ledgerURL.User.Username(), embeddednats.User)
	}
	address := "nats://" + ledgerURL.Host
	if nc, err := nats.Connect(address); !errors.Is(err, nats.ErrAuthorization) {
		if nc != nil {
			nc.Close()
		}
		t.Fatalf("anonymous connect to the embedded NATS server: err = %v, want %v", err, nats.ErrAuthorization)
	}

	session := uuid.New()
	resp, err := post(t, fmt.Sprintf("%s/ai-sessions/%s/handoff", base, session), mintToken(t, testSecret), `{"intent":"escalate","engineer_notes":"tail me"}`)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("escalate = %d, want 201", resp.StatusCode)
	}

	reader := readURL(t, dir, embeddednats.ReaderURLFile)
	password, _ := reader.User.Password()
	for name, args := range map[string][]string{
		"ByDefault": {"--data-dir", dir},
		"AsReader":  {"--nats-url", address, "--nats-user", embeddednats.ReaderUser, "--nats-password", password},
		"ReaderURL": {"--nats-url", reader.String()},
	} {
		t.Run(name, func(t *testing.T) {
			line := tailFirstLine(t, args...)
			if !strings.Contains(line, `"type":"HandoffEscalated"`) || !strings.Contains(line, session.String()) {
				t.Fatalf("tail printed %q, want the escalation of session %s", line, session)
			}
		})
	}
}

// readURL parses the client URL the embedded server keeps in the file
// name of dir.
func readURL(tb testing.TB, dir, name string) *url.URL {
	tb.Helper()
	raw, err := embeddednats.ReadClientURL(dir, name)
	if err != nil {
		tb.Fatal(err)
	}
	u, err := url.Parse(raw)
	if err != nil {
		tb.Fatalf("%s: %v", name, err)
	}
	return u
}

// tailFirstLine runs `ledgerd tail --from all` with args until it prints a
// line, trying again while the relay has not made the stream yet.
func tailFirstLine(tb testing.TB, args ...string) string {
	tb.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(tb.Context(), time.Until(deadline))
		out := &lineWriter{done: cancel}
		var errOut bytes.Buffer
		err := run(ctx, append([]string{"tail", "--from", "all"}, args...), out, &errOut)
		cancel()
		if line, ok := out.first(); ok {
			return line
		}
		if time.Now().After(deadline) {
			tb.Fatalf("tail printed nothing within 30s: %v %s", err, errOut.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// lineWriter keeps what is written and calls done at the first full line.
type lineWriter struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	done func()
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	if bytes.Contains(w.buf.Bytes(), []byte("\n")) {
		w.done()
	}
	return len(p), nil
}

func (w *lineWriter) first() (string, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	line, _, ok := strings.Cut(w.buf.String(), "\n")
	return line, ok
}

func TestNATSCredentials_RefusesConflictingFlags(t *testing.T) {
	for name, c := range map[string]struct {
		args []string
		want string
	}{
		"ServeEmbeddedWithAUser": {[]string{"serve", "--data-dir", t.TempDir(), "--http-addr", freeAddr(t), "--jwt-secret", testSecret, "--nats-listen", "127.0.0.1:0", "--nats-user", "ledger", "--nats-password", "secret"}, "need --nats-url"},
		"TailEmbeddedWithAToken": {[]string{"tail", "--data-dir", t.TempDir(), "--nats-token", "t"}, "need --nats-url"},
		"CredsAndUser":           {[]string{"tail", "--nats-url", "nats://127.0.0.1:1", "--nats-creds", "x.creds", "--nats-user", "u", "--nats-password", "p"}, "one kind"},
		"UserWithoutPassword":    {[]string{"tail", "--nats-url", "nats://127.0.0.1:1", "--nats-user", "u"}, "go together"},
		"MissingCredsFile":       {[]string{"tail", "--nats-url", "nats://127.0.0.1:1", "--nats-creds", filepath.Join(t.TempDir(), "none.creds")}, "--nats-creds"},
	} {
		t.Run(name, func(t *testing.T) {
			err := run(t.Context(), c.args, io.Discard, io.Discard)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("%s = %v, want an error saying %q", c.args[0], err, c.want)
			}
		})
	}
}

func TestRedact_HidesPasswordsAndTokens(t *testing.T) {
	got := redact("nats://ledger:s3cret@a:4222, nats://t0ken@b:4222,nats://c:4222")
	if strings.Contains(got, "s3cret") || strings.Contains(got, "t0ken") || !strings.Contains(got, "ledger:") || !strings.Contains(got, "c:4222") {
		t.Fatalf("redact = %q", got)
	}
}
