package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/resolutionflow/ledgerd/commands"
	"github.com/resolutionflow/ledgerd/domain"
	"github.com/resolutionflow/ledgerd/httpapi"
	"github.com/resolutionflow/ledgerd/internal/pgtest"
	"github.com/resolutionflow/ledgerd/projections"
)

func TestQueueAndHistory_Postgres(t *testing.T) {
	t.Parallel()
	testQueueAndHistory(t, "--database-url", pgtest.NewDatabase(t))
}

func TestQueueAndHistory_SQLite(t *testing.T) {
	t.Parallel()
	testQueueAndHistory(t, "--data-dir", t.TempDir())
}

// testQueueAndHistory records a session's history and a team's queue of
// more handoffs than a page holds, with others around them, builds the
// read models, and
// checks that `ledgerd queue` and `ledgerd history` print, in JSON, every
// handoff exactly as the REST API lists them page after page, that
// --limit cuts the list, and that the table shows each handoff.
func testQueueAndHistory(t *testing.T, storage ...string) {
	ctx := t.Context()
	// The master key opens the log and the read models' notes.
	openArgs := storage
	if storage[0] == "--database-url" {
		openArgs = append(slices.Clone(storage), "--master-key-file", masterKeyFileFor(t))
	}
	b, err := openBackend(ctx, "test", openArgs, newLogger(io.Discard))
	if err != nil {
		t.Fatalf("open the backend: %v", err)
	}
	h := commands.NewHandler(b.events, nil)
	account, team, session := uuid.New(), uuid.New(), uuid.New()
	alice := domain.Actor{UserID: uuid.New(), AccountID: account, TeamID: team, Role: domain.RoleAdmin}
	execute := func(actor domain.Actor, session uuid.UUID, cmd domain.Command) domain.Handoff {
		t.Helper()
		res, err := h.Execute(ctx, actor, session, cmd, commands.Trace{RequestID: uuid.NewString()})
		if err != nil {
			t.Fatalf("execute %T: %v", cmd, err)
		}
		return res.Handoff
	}
	create := func(actor domain.Actor, session uuid.UUID, i int) domain.Handoff {
		intent, priority := domain.IntentPark, domain.PriorityLow
		if i%3 == 0 {
			intent, priority = domain.IntentEscalate, domain.PriorityHigh
		}
		return execute(actor, session, domain.CreateHandoff{Actor: actor, HandoffID: uuid.New(), Intent: intent,
			Notes: "notes " + strconv.Itoa(i) + " \x1b[31m", Priority: priority, At: h.Now()})
	}
	// A history of a claimed, a withdrawn and an open handoff, and a queue
	// of more handoffs than a page holds: that one and one in each of as
	// many other sessions of the team (a session has one open handoff at
	// most).
	claimed := execute(alice, session, domain.ClaimHandoff{Actor: alice, HandoffID: create(alice, session, 0).ID, At: h.Now()})
	execute(alice, session, domain.WithdrawHandoff{Actor: alice, HandoffID: create(alice, session, 1).ID, At: h.Now()})
	create(alice, session, 2)
	const n = projections.MaxPageSize + 2
	for i := range n - 1 {
		create(alice, uuid.New(), i)
	}
	// Another team of the account, and another account with the same team
	// and session ids, are not listed.
	create(domain.Actor{UserID: uuid.New(), AccountID: account, TeamID: uuid.New(), Role: domain.RoleEngineer}, uuid.New(), 0)
	create(domain.Actor{UserID: uuid.New(), AccountID: uuid.New(), TeamID: team, Role: domain.RoleEngineer}, session, 0)
	if err := projections.Rebuild(ctx, b.events, b.views); err != nil {
		t.Fatalf("build the read models: %v", err)
	}

	api, err := httpapi.New(httpapi.Config{Commands: h, Queries: b.views, Events: b.events, Tail: b.events, Idempotency: b.idem, JWTSecret: []byte(testSecret)})
	if err != nil {
		t.Fatalf("httpapi.New: %v", err)
	}
	token, err := httpapi.SignToken([]byte(testSecret), alice, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	// restList follows the REST API's pages from path and returns the
	// handoffs of all of them.
	restList := func(path string) []httpapi.HandoffJSON {
		t.Helper()
		var all []httpapi.HandoffJSON
		for next := path + "?limit=" + strconv.Itoa(projections.MaxPageSize); next != ""; {
			req := httptest.NewRequestWithContext(ctx, http.MethodGet, next, nil)
			req.Header.Set("Authorization", "Bearer "+token)
			rec := httptest.NewRecorder()
			api.ServeHTTP(rec, req)
			if rec.Code != http.StatusOK {
				t.Fatalf("GET %s = %d: %s", next, rec.Code, rec.Body)
			}
			var page []httpapi.HandoffJSON
			if err := json.Unmarshal(rec.Body.Bytes(), &page); err != nil {
				t.Fatalf("GET %s: %v", next, err)
			}
			all = append(all, page...)
			next, _, _ = strings.Cut(strings.TrimPrefix(rec.Header().Get("Link"), "<"), ">")
		}
		return all
	}
	rest := map[string][]httpapi.HandoffJSON{
		"queue":   restList("/ai-sessions/queue"),
		"history": restList("/ai-sessions/" + session.String() + "/handoffs"),
	}
	b.close()
	if got := len(rest["history"]); got != 3 {
		t.Fatalf("the REST API lists %d handoffs in the history, want 3", got)
	}
	if got := len(rest["queue"]); got != n {
		t.Fatalf("the REST API lists %d handoffs in the queue, want %d", got, n)
	}

	ids := map[string][]string{
		"queue":   {"--account", strings.ToUpper(account.String()), "--team", team.String()},
		"history": {"--account", account.String(), "--session", "{" + session.String() + "}"},
	}
	for cmd, want := range rest {
		args := append(append([]string{cmd}, ids[cmd]...), openArgs...)
		if got := ledgerdOutput(t, args...); !bytes.Equal(got, append(mustJSON(t, want), '\n')) {
			t.Errorf("ledgerd %s printed\n%.300s...\nwant what the REST API lists\n%.300s...", cmd, got, mustJSON(t, want))
		}
		if got, want := ledgerdOutput(t, append(args, "--json")...), ledgerdOutput(t, args...); !bytes.Equal(got, want) {
			t.Errorf("ledgerd %s --json differs from its output to a pipe", cmd)
		}
		if got := ledgerdOutput(t, append(args, "--limit", "2")...); !bytes.Equal(got, append(mustJSON(t, want[:2]), '\n')) {
			t.Errorf("ledgerd %s --limit 2 printed %s, want the first two handoffs", cmd, got)
		}
		table := string(ledgerdOutput(t, append(args, "--json=false")...))
		if lines := strings.Count(table, "\n"); lines != len(want)+1 {
			t.Errorf("ledgerd %s --json=false printed %d lines, want a header and %d rows", cmd, lines, len(want))
		}
		if strings.Contains(table, "\x1b") || !strings.Contains(table, `\x1b[31m"`) {
			t.Errorf("ledgerd %s --json=false does not escape the notes' control characters", cmd)
		}
	}
	if table := string(ledgerdOutput(t, append(append([]string{"history"}, ids["history"]...), append(slices.Clone(openArgs), "--json=false")...)...)); !strings.Contains(table, claimed.ClaimedBy.String()) {
		t.Errorf("the history table does not show who claimed a handoff:\n%.500s", table)
	}
}

// ledgerdOutput runs ledgerd with args and returns what it printed.
func ledgerdOutput(tb testing.TB, args ...string) []byte {
	tb.Helper()
	var stdout, stderr bytes.Buffer
	if err := run(tb.Context(), args, &stdout, &stderr); err != nil {
		tb.Fatalf("ledgerd %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.Bytes()
}

// TestQueueAndHistory_RefuseBadArguments checks that queue and history
// refuse missing or malformed ids and limits, and a --data-dir without a
// ledger, with a one-line message naming the flag and exit status 2,
// before they open (or make) any store.
func TestQueueAndHistory_RefuseBadArguments(t *testing.T) {
	t.Parallel()
	id := uuid.NewString()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"queue", "--team", id}, "--account is required"},
		{[]string{"queue", "--account", id}, "--team is required"},
		{[]string{"queue", "--account", "acme", "--team", id}, `--account must be a UUID other than the nil UUID: "acme"`},
		{[]string{"queue", "--account", id, "--team", uuid.Nil.String()}, "--team must be a UUID other than the nil UUID"},
		{[]string{"queue", "--account", id, "--team", id, "--limit", "-1"}, "--limit must be 0 (all) or more: -1"},
		{[]string{"queue", "--account", id, "--team", id, "--limit", "many"}, "--limit"},
		{[]string{"queue", "--account", id, "--session", id}, "--session"},
		{[]string{"history", "--session", id}, "--account is required"},
		{[]string{"history", "--account", id}, "--session is required"},
		{[]string{"history", "--account", uuid.Nil.String(), "--session", id}, "--account must be a UUID other than the nil UUID"},
		{[]string{"history", "--account", id, "--session", "s-1"}, `--session must be a UUID other than the nil UUID: "s-1"`},
		{[]string{"history", "--account", id, "--team", id}, "--team"},
		{[]string{"queue", "--account", id, "--team", id}, "no ledger in --data-dir"},
		{[]string{"history", "--account", id, "--session", id}, "no ledger in --data-dir"},
	} {
		dir := filepath.Join(t.TempDir(), "data")
		var stdout bytes.Buffer
		err := run(t.Context(), append(tc.args, "--data-dir", dir), &stdout, io.Discard)
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") || exitCode(err) != 2 {
			t.Errorf("%v = %v (exit %d), want a line saying %q and exit 2", tc.args, err, exitCode(err), tc.want)
		}
		if stdout.Len() > 0 {
			t.Errorf("%v printed %q", tc.args, stdout.String())
		}
		if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%v made the data directory before checking its arguments: %v", tc.args, err)
		}
	}
}
