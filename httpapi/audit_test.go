package httpapi_test

import (
	"net/http"
	"testing"

	"github.com/google/uuid"

	"github.com/resolutionflow/ledgerd/domain"
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
