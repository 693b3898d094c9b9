package httpapi_test

import (
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/resolutionflow/ledgerd/domain"
	"github.com/resolutionflow/ledgerd/eventcodec"
	"github.com/resolutionflow/ledgerd/eventstore"
	"github.com/resolutionflow/ledgerd/httpapi"
)

// testAuditorReadsAndCommandsNothing checks the auditor's role: it reads
// the history of any session of its account and the queue of every team
// of it, and every command route answers it 403 before it looks at the
// request, appending nothing.
func testAuditorReadsAndCommandsNothing(t *testing.T, nb NewBackend) {
	s := startServer(t, nb)
	tm := newTeam()
	otherTeam := team{account: tm.account, id: uuid.New()}
	alice, carol := tm.user(domain.RoleEngineer), otherTeam.user(domain.RoleEngineer)
	auditor := team{account: tm.account, id: uuid.New()}.user(domain.RoleAuditor)
	outsider := newTeam().user(domain.RoleEngineer)

	mine := s.escalate(t, alice, uuid.New())
	theirs := s.create(t, carol, uuid.New(), `{"intent":"park","priority":"urgent"}`)
	s.escalate(t, outsider, uuid.New())

	// The queue of the whole account: escalations first, then parks.
	if q := s.queue(t, auditor); len(q) != 2 || !sameHandoff(q[0], mine) || !sameHandoff(q[1], theirs) {
		t.Fatalf("auditor's queue = %+v, want [%+v %+v]", q, mine, theirs)
	}
	if h := s.history(t, auditor, theirs.SessionID); len(h) != 1 || !sameHandoff(h[0], theirs) {
		t.Fatalf("auditor's history of another team's session = %+v", h)
	}
	// Its pages have cursors of their own.
	first, next := s.page(t, auditor, "/ai-sessions/queue?limit=1")
	second, last := s.page(t, auditor, next)
	if len(first) != 1 || len(second) != 1 || !sameHandoff(second[0], theirs) || last != "" {
		t.Fatalf("auditor's pages = %+v then %+v (next %q)", first, second, last)
	}
	s.expectError(t, as(t, alice, http.MethodGet, next, ""), http.StatusUnprocessableEntity, "cursor is not valid for this list")

	before := len(s.events(t))
	for _, r := range []request{
		as(t, auditor, http.MethodPost, createPath(uuid.New()), `{"intent":"park"}`),
		as(t, auditor, http.MethodPost, createPath(uuid.New()), `not json`),
		as(t, auditor, http.MethodPost, actionPath(mine.SessionID, mine.ID, "claim"), ""),
		as(t, auditor, http.MethodPost, actionPath(mine.SessionID, mine.ID, "withdraw"), ""),
		as(t, auditor, http.MethodPost, "/ai-sessions/not-a-uuid/handoffs/not-a-uuid/claim", ""),
		as(t, auditor, http.MethodPost, createPath(uuid.New()), `{"intent":"park"}`).with("Idempotency-Key", "k1"),
	} {
		s.expectError(t, r, http.StatusForbidden, domain.MsgReadOnlyRole)
	}
	s.expectNoNewEvents(t, before)
}

// sameEvents reports whether the envelopes a client read are the events
// the log holds, field for field.
func sameEvents(tb testing.TB, what string, got, want []eventstore.Event) {
	tb.Helper()
	if len(got) == 0 && len(want) == 0 {
		return
	}
	g, errG := json.Marshal(got)
	w, errW := json.Marshal(want)
	if errG != nil || errW != nil || !bytes.Equal(g, w) {
		tb.Fatalf("%s:\n got %s\nwant %s", what, g, w)
	}
}

func eventsPath(session uuid.UUID) string { return "/ai-sessions/" + session.String() + "/events" }

// testEventRoutesRoles checks who may read the event log: auditor, admin
// and owner; viewer and engineer get 403 on both routes, export included.
func testEventRoutesRoles(t *testing.T, nb NewBackend) {
	s := startServer(t, nb)
	tm := newTeam()
	h := s.escalate(t, tm.user(domain.RoleEngineer), uuid.New())
	for _, role := range []domain.Role{domain.RoleAuditor, domain.RoleAdmin, domain.RoleOwner} {
		reader := tm.user(role)
		if got := decode[[]eventstore.Event](t, s.do(t, as(t, reader, http.MethodGet, eventsPath(h.SessionID), ""), http.StatusOK)); len(got) != 1 {
			t.Fatalf("%s: session events = %d, want 1", role, len(got))
		}
		if got := decode[[]eventstore.Event](t, s.do(t, as(t, reader, http.MethodGet, "/events", ""), http.StatusOK)); len(got) != 1 {
			t.Fatalf("%s: account events = %d, want 1", role, len(got))
		}
	}
	for _, role := range []domain.Role{domain.RoleViewer, domain.RoleEngineer} {
		reader := tm.user(role)
		for _, r := range []request{
			as(t, reader, http.MethodGet, eventsPath(h.SessionID), ""),
			as(t, reader, http.MethodGet, "/events", ""),
			as(t, reader, http.MethodGet, "/events?limit=0", ""),
			as(t, reader, http.MethodGet, "/events", "").with("Accept", "application/x-ndjson"),
		} {
			s.expectError(t, r, http.StatusForbidden, domain.MsgAuditRoleNeeded)
		}
	}
}

// testSessionEvents checks GET /ai-sessions/{id}/events: the session's
// envelopes in stream order, exactly as the log holds them, with the
// metadata of the requests behind them; [] for another account's session
// or none; 422 for the nil UUID.
func testSessionEvents(t *testing.T, nb NewBackend) {
	s := startServer(t, nb)
	tm := newTeam()
	alice, bob := tm.user(domain.RoleEngineer), tm.user(domain.RoleAdmin)
	auditor := tm.user(domain.RoleAuditor)
	session := uuid.New()
	h := decode[handoff](t, s.do(t, as(t, alice, http.MethodPost, createPath(session), `{"intent":"escalate"}`).
		with("X-Request-ID", "req-7").with("X-Correlation-ID", "case-12"), http.StatusCreated))
	s.claim(t, bob, h)
	parked := s.create(t, bob, session, `{"intent":"park"}`)
	s.do(t, as(t, bob, http.MethodPost, actionPath(session, parked.ID, "withdraw"), ""), http.StatusOK)

	got := decode[[]eventstore.Event](t, s.do(t, as(t, auditor, http.MethodGet, eventsPath(session), ""), http.StatusOK))
	want := s.stream(t, tm.account, session)
	sameEvents(t, "session events", got, want)
	wantTypes := []string{domain.TypeHandoffEscalated, domain.TypeHandoffClaimed, domain.TypeHandoffParked, domain.TypeHandoffWithdrawn}
	if !slices.Equal(types(got), wantTypes) {
		t.Fatalf("types = %v, want %v", types(got), wantTypes)
	}
	for i, e := range got {
		if e.Version != int64(i+1) || e.Stream != eventcodec.StreamName(tm.account, session) || e.Position == 0 || e.RecordedAt.IsZero() {
			t.Fatalf("event %d = %+v", i, e)
		}
	}
	m := got[0].Metadata
	if m.ActorID != alice.UserID.String() || m.AccountID != tm.account.String() || m.Role != "engineer" ||
		m.RequestID == "" || m.CausationID != m.RequestID || m.ClientRequestID != "req-7" || m.ClientCorrelationID != "case-12" || m.ClientIP != "127.0.0.1" {
		t.Fatalf("metadata of the escalation = %+v", m)
	}

	outsider := newTeam().user(domain.RoleAuditor)
	for _, r := range []request{
		as(t, outsider, http.MethodGet, eventsPath(session), ""),
		as(t, auditor, http.MethodGet, eventsPath(uuid.New()), ""),
	} {
		if body := s.do(t, r, http.StatusOK).body; string(body) != "[]\n" {
			t.Fatalf("GET %s: %s, want []", r.path, body)
		}
	}
	s.expectError(t, as(t, auditor, http.MethodGet, eventsPath(uuid.Nil), ""), http.StatusUnprocessableEntity, "session_id must not be the nil UUID")
}

// accountLog makes events in two accounts, interleaved, and returns the
// first account's team and the events of each account as the log holds
// them.
func accountLog(t *testing.T, s *apiServer) (team, [2][]eventstore.Event) {
	t.Helper()
	teams := [2]team{newTeam(), newTeam()}
	sessions := map[team][]uuid.UUID{}
	for i := range 6 {
		tm := teams[i%2]
		session := uuid.New()
		sessions[tm] = append(sessions[tm], session)
		h := s.escalate(t, tm.user(domain.RoleEngineer), session)
		if i%3 == 0 {
			s.claim(t, tm.user(domain.RoleAdmin), h)
		}
	}
	var logs [2][]eventstore.Event
	for i, tm := range teams {
		for _, session := range sessions[tm] {
			logs[i] = append(logs[i], s.stream(t, tm.account, session)...)
		}
		slices.SortFunc(logs[i], func(a, b eventstore.Event) int { return cmp.Compare(a.Position, b.Position) })
	}
	return teams[0], logs
}

// testAccountEvents checks GET /events: the caller's account's events in
// global order, a page at a time through Link headers, never another
// account's, whatever position it starts after; bad parameters are 422
// naming the parameter.
func testAccountEvents(t *testing.T, nb NewBackend) {
	s := startServer(t, nb)
	tm, logs := accountLog(t, s)
	mine, theirs := logs[0], logs[1]
	auditor := tm.user(domain.RoleAuditor)

	whole := decode[[]eventstore.Event](t, s.do(t, as(t, auditor, http.MethodGet, "/events", ""), http.StatusOK))
	sameEvents(t, "the account's events", whole, mine)

	var paged []eventstore.Event
	path, pages := "/events?limit=2", 0
	for path != "" {
		res := s.do(t, as(t, auditor, http.MethodGet, path, ""), http.StatusOK)
		page := decode[[]eventstore.Event](t, res)
		paged, pages, path = append(paged, page...), pages+1, ""
		if link := res.header.Get("Link"); link != "" {
			m := linkNext.FindStringSubmatch(link)
			if m == nil || len(page) != 2 {
				t.Fatalf("page %d: Link %q after %d events", pages, link, len(page))
			}
			path = m[1]
		}
	}
	sameEvents(t, "pages of 2", paged, mine)
	if want := (len(mine) + 1) / 2; pages != want && pages != want+1 {
		t.Fatalf("%d events came in %d pages of 2", len(mine), pages)
	}

	// A position of another account's only says where to start.
	for _, e := range theirs {
		page := decode[[]eventstore.Event](t, s.do(t, as(t, auditor, http.MethodGet, "/events?after="+strconv.FormatInt(e.Position, 10), ""), http.StatusOK))
		var want []eventstore.Event
		for _, m := range mine {
			if m.Position > e.Position {
				want = append(want, m)
			}
		}
		sameEvents(t, fmt.Sprintf("after their position %d", e.Position), page, want)
	}
	if body := s.do(t, as(t, newTeam().user(domain.RoleOwner), http.MethodGet, "/events", ""), http.StatusOK).body; string(body) != "[]\n" {
		t.Fatalf("an account without events: %s", body)
	}

	for query, want := range map[string]string{
		"after=-1":                   "after must be an integer position, 0 or more",
		"after=x":                    "after must be an integer position, 0 or more",
		"after=1&after=2":            "after must be an integer position, 0 or more",
		"after=1e3":                  "after must be an integer position, 0 or more",
		"limit=0":                    "limit must be an integer from 1 to 1000",
		"limit=1001":                 "limit must be an integer from 1 to 1000",
		"limit=ten":                  "limit must be an integer from 1 to 1000",
		"limit=1&limit=2":            "limit must be an integer from 1 to 1000",
		"after=99999999999999999999": "after must be an integer position, 0 or more",
	} {
		s.expectError(t, as(t, auditor, http.MethodGet, "/events?"+query, ""), http.StatusUnprocessableEntity, want)
		s.expectError(t, as(t, auditor, http.MethodGet, "/events?"+query, "").with("Accept", "application/x-ndjson"), http.StatusUnprocessableEntity, want)
	}
}

// testEventExport checks GET /events with Accept: application/x-ndjson:
// every event of the account after the position, one envelope a line.
func testEventExport(t *testing.T, nb NewBackend) {
	s := startServer(t, nb)
	tm, logs := accountLog(t, s)
	mine := logs[0]
	auditor := tm.user(domain.RoleAuditor)
	for _, after := range []int64{0, mine[2].Position} {
		res := s.do(t, as(t, auditor, http.MethodGet, "/events?limit=1&after="+strconv.FormatInt(after, 10), "").with("Accept", "application/x-ndjson"), http.StatusOK)
		if ct := res.header.Get("Content-Type"); ct != "application/x-ndjson" {
			t.Fatalf("Content-Type = %q", ct)
		}
		var got []eventstore.Event
		for line := range strings.Lines(string(res.body)) {
			e, err := decodeStrict[eventstore.Event]([]byte(line))
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, e)
		}
		var want []eventstore.Event
		for _, e := range mine {
			if e.Position > after {
				want = append(want, e)
			}
		}
		sameEvents(t, fmt.Sprintf("export after %d", after), got, want)
	}
}

// testClientAddress checks that a command's events record the address it
// came from: the peer's, whatever X-Forwarded-For says, unless the peer is
// a trusted proxy; then the last address of the chain that is not one.
func testClientAddress(t *testing.T, nb NewBackend) {
	trust := func(cidrs ...string) func(*httpapi.Config) {
		return func(cfg *httpapi.Config) {
			for _, c := range cidrs {
				_, n, err := net.ParseCIDR(c)
				if err != nil {
					t.Fatal(err)
				}
				cfg.TrustedProxies = append(cfg.TrustedProxies, n)
			}
		}
	}
	b := nb(t)
	for _, tc := range []struct {
		name    string
		trusted []string
		xff     string
		want    string
	}{
		{"NoProxyNoHeader", nil, "", "127.0.0.1"},
		{"UntrustedPeerIgnoresHeader", nil, "203.0.113.9", "127.0.0.1"},
		{"PrivateNetworksAreNotTrustedByDefault", []string{"10.0.0.0/8"}, "203.0.113.9", "127.0.0.1"},
		{"TrustedPeer", []string{"127.0.0.0/8"}, "198.51.100.1, 203.0.113.9", "203.0.113.9"},
		{"TrustedChain", []string{"127.0.0.0/8", "203.0.113.0/24"}, "198.51.100.1, 203.0.113.9", "198.51.100.1"},
		{"TrustedPeerMalformedHeader", []string{"127.0.0.0/8"}, "not an address", "127.0.0.1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := serveBackend(t, b, trust(tc.trusted...))
			tm := newTeam()
			session := uuid.New()
			r := as(t, tm.user(domain.RoleEngineer), http.MethodPost, createPath(session), `{"intent":"park"}`)
			if tc.xff != "" {
				r = r.with("X-Forwarded-For", tc.xff)
			}
			s.do(t, r, http.StatusCreated)
			got := decode[[]eventstore.Event](t, s.do(t, as(t, tm.user(domain.RoleAuditor), http.MethodGet, eventsPath(session), ""), http.StatusOK))
			if len(got) != 1 || got[0].Metadata.ClientIP != tc.want {
				t.Fatalf("events = %+v, want one from %s", got, tc.want)
			}
		})
	}
}
