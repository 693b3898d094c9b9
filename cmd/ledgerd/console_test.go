package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
)

// consoleLinkOf runs `ledgerd console` with args and returns the link it
// printed and the claims of its token.
func consoleLinkOf(t *testing.T, args ...string) (link, token string, claims map[string]string) {
	t.Helper()
	var out, errOut bytes.Buffer
	if err := run(context.Background(), append([]string{"console"}, args...), &out, &errOut); err != nil {
		t.Fatalf("console: %v: %s", err, errOut.String())
	}
	link = strings.TrimSpace(out.String())
	_, token, ok := strings.Cut(link, "/console/#token=")
	if !ok || strings.Contains(link, "\n") {
		t.Fatalf("console printed %q, want one link", out.String())
	}
	payload, err := base64.RawURLEncoding.DecodeString(strings.Split(token, ".")[1])
	if err != nil {
		t.Fatal(err)
	}
	// exp and iat are numbers: keep the strings only.
	var all map[string]any
	if err := json.Unmarshal(payload, &all); err != nil {
		t.Fatal(err)
	}
	claims = map[string]string{}
	for k, v := range all {
		if s, ok := v.(string); ok {
			claims[k] = s
		}
	}
	return link, token, claims
}

// TestConsoleCommand_PrintsALinkThatSignsIn checks the link: the server's
// console, a token the server accepts in its fragment, and, for every link
// of one secret, one account and team but a user of its own.
func TestConsoleCommand_PrintsALinkThatSignsIn(t *testing.T) {
	base, _ := startServe(t, "--jwt-secret", testSecret)
	addr := strings.TrimPrefix(base, "http://")
	link, token, admin := consoleLinkOf(t, "--jwt-secret", testSecret, "--http-addr", addr, "--role", "admin")
	if !strings.HasPrefix(link, base+"/console/#token=") {
		t.Fatalf("link %q, want the server's console %s/console/", link, base)
	}
	_, _, engineer := consoleLinkOf(t, "--jwt-secret", testSecret, "--http-addr", addr)
	if admin["role"] != "admin" || engineer["role"] != "engineer" || admin["account_id"] != engineer["account_id"] ||
		admin["team_id"] != engineer["team_id"] || admin["sub"] == engineer["sub"] {
		t.Fatalf("claims of two links: %v and %v", admin, engineer)
	}
	_, _, other := consoleLinkOf(t, "--jwt-secret", testSecret+"-other", "--http-addr", addr)
	if other["account_id"] == admin["account_id"] {
		t.Fatal("links of two secrets share an account")
	}
	team := uuid.NewString()
	if _, _, c := consoleLinkOf(t, "--jwt-secret", testSecret, "--team", team); c["team_id"] != team {
		t.Fatalf("--team %s gave %v", team, c)
	}

	req, _ := http.NewRequest(http.MethodGet, base+"/ai-sessions/queue", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("the link's token: queue answered %d", res.StatusCode)
	}
	page, err := http.Get(base + "/console/")
	if err != nil {
		t.Fatal(err)
	}
	page.Body.Close()
	if page.StatusCode != http.StatusOK || !strings.Contains(page.Header.Get("Content-Security-Policy"), "frame-ancestors 'none'") {
		t.Fatalf("GET /console/: %d, CSP %q", page.StatusCode, page.Header.Get("Content-Security-Policy"))
	}
}

func TestConsoleCommand_RefusesBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"--role", "janitor"},
		{"--account", "not-a-uuid"},
		{"--team", uuid.Nil.String()},
	} {
		var out, errOut bytes.Buffer
		err := run(context.Background(), append([]string{"console", "--jwt-secret", testSecret}, args...), &out, &errOut)
		if err == nil || exitCode(err) != 2 || out.Len() != 0 {
			t.Errorf("console %v: err %v (exit %d), printed %q; want a usage error and no link", args, err, exitCode(err), out.String())
		}
	}
	var out, errOut bytes.Buffer
	if err := run(context.Background(), []string{"console", "--data-dir", t.TempDir()}, &out, &errOut); err == nil || out.Len() != 0 {
		t.Errorf("console in a data directory with no secret: %v, printed %q", err, out.String())
	}
}

// TestServe_QueueStreamsEndAtShutdown checks that an open queue stream
// does not hold a shutdown up for its grace period.
func TestServe_QueueStreamsEndAtShutdown(t *testing.T) {
	base, stop := startServe(t, "--jwt-secret", testSecret, "--shutdown-timeout", "30s")
	token := mintToken(t, testSecret, "--role", "viewer")
	req, _ := http.NewRequest(http.MethodGet, base+"/ai-sessions/queue/stream", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if line, err := bufio.NewReader(res.Body).ReadString('\n'); err != nil || line != "event: ready\n" {
		t.Fatalf("stream began with %q, %v", line, err)
	}
	start := time.Now()
	if err := stop(); err != nil && !errors.Is(err, context.Canceled) {
		t.Fatalf("serve: %v", err)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Fatalf("the shutdown took %v with a queue stream open", took)
	}
}
