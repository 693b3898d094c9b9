package httpapi_test

import (
	"context"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/resolutionflow/ledgerd/domain"
	"github.com/resolutionflow/ledgerd/internal/pgtest"
)

// msgDatabaseUnavailable is the detail of every answer given while the
// database is out of reach.
const msgDatabaseUnavailable = "Database unavailable, please retry"

// outageBound bounds how long the API may take to answer normally again
// once the database is back: the pool drops its broken connections as it
// meets them, and the projector takes its lock again.
const outageBound = 15 * time.Second

// TestDatabaseOutage_Postgres cuts the database off (new connections
// refused, open ones terminated, as a restart does): every command and
// read answers 503 with Retry-After and says the database is unavailable,
// never 500; a key sent during the outage is released; and once the
// database is back, the same requests answer normally.
func TestDatabaseOutage_Postgres(t *testing.T) {
	url := pgtest.NewDatabase(t)
	pool := pgtest.Pool(t, url, poolSize)
	s := startServer(t, func(tb testing.TB) Backend { return postgresBackend(tb, postgresOptions{Pool: pool}) })
	tm := newTeam()
	alice, bob, auditor := tm.user(domain.RoleEngineer), tm.user(domain.RoleAdmin), tm.user(domain.RoleAuditor)
	session := uuid.New()
	h := s.escalate(t, alice, session)

	requests := map[string]request{
		"create":          as(t, alice, http.MethodPost, createPath(uuid.New()), `{"intent":"park"}`),
		"create with key": withKey(as(t, alice, http.MethodPost, createPath(uuid.New()), `{"intent":"park"}`), "outage-1"),
		"claim":           withKey(as(t, bob, http.MethodPost, actionPath(session, h.ID, "claim"), ""), "outage-2"),
		"history":         as(t, alice, http.MethodGet, historyPath(session), ""),
		"queue":           as(t, bob, http.MethodGet, "/ai-sessions/queue", ""),
		"account queue":   as(t, auditor, http.MethodGet, "/ai-sessions/queue", ""),
	}
	end := pgtest.Outage(t, url)
	for name, r := range requests {
		res := s.do(t, r, http.StatusServiceUnavailable)
		if got := detail(t, res); got != msgDatabaseUnavailable {
			t.Errorf("%s during the outage: detail %q, want %q", name, got, msgDatabaseUnavailable)
		}
		if got := res.header.Get("Retry-After"); got != "1" {
			t.Errorf("%s during the outage: Retry-After %q, want 1", name, got)
		}
	}
	s.do(t, request{method: http.MethodGet, path: "/readyz"}, http.StatusServiceUnavailable)

	end()
	want := map[string]int{"create": http.StatusCreated, "create with key": http.StatusCreated,
		"claim": http.StatusOK, "history": http.StatusOK, "queue": http.StatusOK, "account queue": http.StatusOK}
	for name, r := range requests {
		if res := s.untilAvailable(t, r); res.status != want[name] {
			t.Errorf("%s after the outage: status %d, want %d; body %s", name, res.status, want[name], res.body)
		}
	}
}

// untilAvailable sends r until it gets an answer other than 503, within
// outageBound, and returns that answer; it fails the test on any 5xx but
// 503.
func (s *apiServer) untilAvailable(tb testing.TB, r request) response {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), outageBound)
	defer cancel()
	for {
		res, err := s.send(ctx, r)
		if err != nil {
			tb.Fatal(err)
		}
		switch {
		case res.status == http.StatusServiceUnavailable && ctx.Err() == nil:
			time.Sleep(50 * time.Millisecond)
			continue
		case res.status >= http.StatusInternalServerError:
			tb.Fatalf("%s %s: status %d; body %s", r.method, r.path, res.status, res.body)
		}
		return res
	}
}

// TestCommittedCommandRetry_Postgres breaks the database connection of a
// command right after its append committed, so the client gets a 503 for
// a command that took effect, and checks that retrying it is safe: a blind
// retry gets 409 and appends nothing. A command with an Idempotency-Key
// commits its events and its stored answer together, so the same break
// leaves nothing committed, and the retry with the key runs it once.
func TestCommittedCommandRetry_Postgres(t *testing.T) {
	proxy := pgtest.NewProxy(t, pgtest.NewDatabase(t))
	s := startServer(t, func(tb testing.TB) Backend {
		return postgresBackend(tb, postgresOptions{Pool: pgtest.Pool(tb, proxy.URL, poolSize)})
	})
	tm := newTeam()
	alice, bob := tm.user(domain.RoleEngineer), tm.user(domain.RoleAdmin)
	session := uuid.New()

	// The session id is in the append's parameters (its stream name), and
	// in no statement a create runs before it.
	blind := as(t, alice, http.MethodPost, createPath(session), `{"intent":"escalate"}`)
	proxy.CutAfter([]byte(session.String()))
	s.expectError(t, blind, http.StatusServiceUnavailable, msgDatabaseUnavailable)
	if n := len(s.stream(t, tm.account, session)); n != 1 {
		t.Fatalf("after the broken create the stream has %d events, want 1: the append committed", n)
	}
	s.expectError(t, blind, http.StatusConflict, domain.MsgOpenHandoffExist)
	s.expectError(t, withKey(blind, "create-1"), http.StatusConflict, domain.MsgOpenHandoffExist)

	keyed := uuid.New()
	create := withKey(as(t, alice, http.MethodPost, createPath(keyed), `{"intent":"escalate"}`), "create-2")
	proxy.CutAfter([]byte(keyed.String()))
	s.expectError(t, create, http.StatusServiceUnavailable, msgDatabaseUnavailable)
	if n := len(s.stream(t, tm.account, keyed)); n != 0 {
		t.Fatalf("after the broken keyed create the stream has %d events, want none: its transaction never committed", n)
	}
	if res := s.do(t, create, http.StatusCreated); res.header.Get("Idempotent-Replayed") != "" {
		t.Fatal("the retry of a create that never committed was a replay")
	}
	if res := s.do(t, create, http.StatusCreated); res.header.Get("Idempotent-Replayed") != "true" {
		t.Fatal("the second retry of the keyed create was not a replay")
	}

	// The handoff id is in the claim's appended event, and in no statement
	// a claim runs before its append.
	h := s.history(t, alice, session)[0]
	claim := as(t, bob, http.MethodPost, actionPath(session, h.ID, "claim"), "")
	proxy.CutAfter([]byte(h.ID.String()))
	s.expectError(t, claim, http.StatusServiceUnavailable, msgDatabaseUnavailable)
	for _, retry := range []request{claim, withKey(claim, "claim-1")} {
		got := decode[struct {
			Detail    string    `json:"detail"`
			ClaimedBy uuid.UUID `json:"claimed_by"`
			ClaimedAt time.Time `json:"claimed_at"`
		}](t, s.do(t, retry, http.StatusConflict))
		if got.Detail != "Handoff already claimed" || got.ClaimedBy != bob.UserID {
			t.Fatalf("retried claim = %+v, want Handoff already claimed by %s", got, bob.UserID)
		}
	}
	want := []string{domain.TypeHandoffEscalated, domain.TypeHandoffClaimed}
	if got := types(s.stream(t, tm.account, session)); !slices.Equal(got, want) {
		t.Fatalf("stream = %v, want %v", got, want)
	}
}
