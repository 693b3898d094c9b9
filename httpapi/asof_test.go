package httpapi_test

import (
	"bytes"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/resolutionflow/ledgerd/domain"
)

// asOfPath is path asking for the list as of t, spelt in t's own zone.
func asOfPath(path string, t time.Time) string {
	return path + "?as_of=" + url.QueryEscape(t.Format(time.RFC3339Nano))
}

// moment is what the live lists answered after a step of a scripted run,
// and the recorded time of that step's event: the instant they answer.
type moment struct {
	step    string
	at      time.Time
	history map[uuid.UUID][]byte
	// queues are the answers of /ai-sessions/queue to each reader.
	queues [][]byte
}

// testAsOf runs a script of escalations, parks, claims and withdrawals
// across sessions, records the live answers after each step, then asks
// as_of each step's instant and checks that the answers are the same,
// byte for byte.
func testAsOf(t *testing.T, nb NewBackend) {
	s := startServer(t, nb)
	tm := newTeam()
	alice, bob, carol := tm.user(domain.RoleEngineer), tm.user(domain.RoleAdmin), tm.user(domain.RoleEngineer)
	viewer := tm.user(domain.RoleViewer)
	otherTeam := team{account: tm.account, id: uuid.New()}
	dave := otherTeam.user(domain.RoleEngineer)
	auditor := team{account: tm.account, id: uuid.New()}.user(domain.RoleAuditor)
	// The team's queue, the other team's and the auditor's (every team's).
	readers := []domain.Actor{viewer, dave, auditor}
	// Another account's events, which no answer may show.
	outsider := newTeam().user(domain.RoleEngineer)
	sessions := []uuid.UUID{uuid.New(), uuid.New(), uuid.New(), uuid.New()}
	withdraw := func(actor domain.Actor, h handoff) {
		s.do(t, as(t, actor, http.MethodPost, actionPath(h.SessionID, h.ID, "withdraw"), ""), http.StatusOK)
	}
	var first, parked, third handoff
	script := []struct {
		name    string
		session uuid.UUID
		run     func()
	}{
		{"alice escalates 1", sessions[0], func() { first = s.escalate(t, alice, sessions[0]) }},
		{"carol parks 2", sessions[1], func() {
			parked = s.create(t, carol, sessions[1], `{"intent":"park","engineer_notes":"waiting","priority":"low"}`)
		}},
		{"bob claims 1", sessions[0], func() { s.claim(t, bob, first) }},
		{"alice escalates 3", sessions[2], func() { third = s.escalate(t, alice, sessions[2]) }},
		{"carol withdraws 2", sessions[1], func() { withdraw(carol, parked) }},
		{"bob parks 1", sessions[0], func() {
			s.create(t, bob, sessions[0], `{"intent":"park","engineer_notes":"later","priority":"urgent"}`)
		}},
		{"carol claims 3", sessions[2], func() { s.claim(t, carol, third) }},
		{"dave escalates 4", sessions[3], func() {
			s.escalate(t, dave, sessions[3])
			s.escalate(t, outsider, sessions[3])
		}},
		{"carol escalates 2", sessions[1], func() { s.escalate(t, carol, sessions[1]) }},
	}
	read := func(reader domain.Actor, path string) []byte {
		return s.do(t, as(t, reader, http.MethodGet, path, ""), http.StatusOK).body
	}
	live := func(path string) []byte { return read(viewer, path) }
	var moments []moment
	for _, step := range script {
		step.run()
		events := s.stream(t, tm.account, step.session)
		m := moment{step: step.name, at: events[len(events)-1].RecordedAt, history: map[uuid.UUID][]byte{}}
		for _, reader := range readers {
			m.queues = append(m.queues, read(reader, "/ai-sessions/queue"))
		}
		for _, session := range sessions {
			m.history[session] = live(historyPath(session))
		}
		if len(moments) > 0 && !m.at.After(moments[len(moments)-1].at) {
			t.Fatalf("step %q recorded at %s, not after the step before it", step.name, m.at)
		}
		moments = append(moments, m)
	}

	// Before the first event, every session had no handoff.
	before := moments[0].at.Add(-time.Microsecond)
	for _, path := range []string{historyPath(sessions[0]), historyPath(sessions[1]), "/ai-sessions/queue"} {
		if got := read(auditor, asOfPath(path, before)); strings.TrimSpace(string(got)) != "[]" {
			t.Errorf("%s as of %s = %s, want []", path, before, got)
		}
	}
	// At each step's instant, and just before the next step's, the
	// history is what the live route answered after the step.
	paris := time.FixedZone("Paris", 2*60*60)
	for i, m := range moments {
		instants := []time.Time{m.at, m.at.In(paris)}
		if i+1 < len(moments) {
			instants = append(instants, moments[i+1].at.Add(-time.Microsecond))
		}
		for _, at := range instants {
			for _, session := range sessions {
				if got := live(asOfPath(historyPath(session), at)); !bytes.Equal(got, m.history[session]) {
					t.Errorf("after %q: history of %s as of %s =\n%s\nlive answer was\n%s", m.step, session, at.Format(time.RFC3339Nano), got, m.history[session])
				}
				// The auditor reads every session's history, then as now.
				if got := read(auditor, asOfPath(historyPath(session), at)); !bytes.Equal(got, m.history[session]) {
					t.Errorf("after %q: auditor's history of %s as of %s = %s, want %s", m.step, session, at.Format(time.RFC3339Nano), got, m.history[session])
				}
			}
			for r, reader := range readers {
				if got := read(reader, asOfPath("/ai-sessions/queue", at)); !bytes.Equal(got, m.queues[r]) {
					t.Errorf("after %q: %s's queue as of %s =\n%s\nlive answer was\n%s", m.step, reader.Role, at.Format(time.RFC3339Nano), got, m.queues[r])
				}
			}
		}
	}

	// as_of answers come in the same pages as the live ones, and their
	// Link keeps the instant.
	last := moments[len(moments)-1]
	sizes, all := s.pages(t, viewer, asOfPath(historyPath(sessions[0]), last.at)+"&limit=1")
	if !slices.Equal(sizes, []int{1, 1}) || !slices.Equal(ids(all), ids(decode[[]handoff](t, response{body: last.history[sessions[0]]}))) {
		t.Errorf("pages of the history as of %s: sizes %v, ids %v; want the live history %s", last.at, sizes, ids(all), last.history[sessions[0]])
	}
	_, next := s.page(t, viewer, asOfPath(historyPath(sessions[0]), moments[2].at)+"&limit=1")
	if next != "" {
		t.Errorf("history as of the claim (one handoff) has a next page %q", next)
	}
	for r, reader := range readers {
		want := ids(decode[[]handoff](t, response{body: last.queues[r]}))
		sizes, all := s.pages(t, reader, asOfPath("/ai-sessions/queue", last.at)+"&limit=1")
		if !slices.Equal(ids(all), want) || len(sizes) != max(len(want), 1) {
			t.Errorf("%s's queue as of %s in pages of 1: sizes %v, ids %v; want %v", reader.Role, last.at, sizes, ids(all), want)
		}
	}

	// Another account sees nothing of the session, then or now.
	stranger := newTeam().user(domain.RoleAdmin)
	res := s.do(t, as(t, stranger, http.MethodGet, asOfPath(historyPath(sessions[0]), last.at), ""), http.StatusOK)
	if strings.TrimSpace(string(res.body)) != "[]" {
		t.Errorf("another account's history as of %s = %s, want []", last.at, res.body)
	}
}

// testAsOfBadInstants checks that an as_of that names no past instant is
// 422 naming as_of, and appends nothing.
func testAsOfBadInstants(t *testing.T, nb NewBackend) {
	s := startServer(t, nb)
	alice := newTeam().user(domain.RoleEngineer)
	session := uuid.New()
	s.escalate(t, alice, session)
	const bad = "as_of must be an RFC 3339 time, such as 2026-01-02T15:04:05Z (a + in an offset is sent as %2B)"
	for _, query := range []string{
		"as_of=",
		"as_of=yesterday",
		"as_of=2026-01-02",
		"as_of=2026-01-02T15:04:05",
		"as_of=2026-01-02%2015:04:05Z",
		"as_of=2026-01-02T15:04:05+01:00", // an unescaped + is a space
		"as_of=2026-13-02T15:04:05Z",
		"as_of=2026-01-02T15:04:05Z&as_of=2026-01-02T15:04:06Z",
	} {
		for _, path := range []string{historyPath(session), "/ai-sessions/queue", historyPath(uuid.New()), "/ai-sessions/not-a-uuid/handoffs"} {
			s.expectError(t, as(t, alice, http.MethodGet, path+"?"+query, ""), http.StatusUnprocessableEntity, bad)
		}
	}
	future := asOfPath(historyPath(session), time.Now().Add(time.Hour))
	s.expectError(t, as(t, alice, http.MethodGet, future, ""), http.StatusUnprocessableEntity, "as_of must not be in the future")
	s.expectNoNewEvents(t, 1)
}
