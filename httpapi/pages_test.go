package httpapi_test

import (
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/resolutionflow/ledgerd/domain"
)

// linkNext matches a Link header that points to a next page, and captures
// its target.
var linkNext = regexp.MustCompile(`^<([^>]+)>; rel="next"$`)

// page gets one page of a list as actor and returns it with the path of
// the next page, empty when the response has no Link header.
func (s *apiServer) page(tb testing.TB, actor domain.Actor, path string) ([]handoff, string) {
	tb.Helper()
	res := s.do(tb, as(tb, actor, http.MethodGet, path, ""), http.StatusOK)
	link := res.header.Get("Link")
	if link == "" {
		return decode[[]handoff](tb, res), ""
	}
	m := linkNext.FindStringSubmatch(link)
	if m == nil {
		tb.Fatalf("GET %s: Link header %q is not one rel=\"next\" link", path, link)
	}
	return decode[[]handoff](tb, res), m[1]
}

// pages follows a list's Link headers from path and returns the number of
// handoffs on each page and the pages one after the other.
func (s *apiServer) pages(tb testing.TB, actor domain.Actor, path string) ([]int, []handoff) {
	tb.Helper()
	var (
		sizes []int
		all   []handoff
	)
	for path != "" {
		var hs []handoff
		hs, path = s.page(tb, actor, path)
		sizes, all = append(sizes, len(hs)), append(all, hs...)
	}
	return sizes, all
}

func ids(hs []handoff) []uuid.UUID {
	out := make([]uuid.UUID, len(hs))
	for i, h := range hs {
		out[i] = h.ID
	}
	return out
}

// testPages checks that both lists come in pages of at most limit
// handoffs, linked by Link headers, that concatenate to the whole list,
// and that a list that fits in one page has no Link header.
func testPages(t *testing.T, nb NewBackend) {
	s := startServer(t, nb)
	tm := newTeam()
	alice, bob := tm.user(domain.RoleEngineer), tm.user(domain.RoleAdmin)
	for range 7 {
		s.escalate(t, alice, uuid.New())
	}
	whole, next := s.page(t, bob, "/ai-sessions/queue")
	if len(whole) != 7 || next != "" {
		t.Fatalf("queue without a limit: %d handoffs, next %q; want 7 and no Link", len(whole), next)
	}
	for _, c := range []struct {
		path  string
		sizes []int
	}{
		{"/ai-sessions/queue?limit=3", []int{3, 3, 1}},
		{"/ai-sessions/queue?limit=7", []int{7}},
		{"/ai-sessions/queue?limit=1", []int{1, 1, 1, 1, 1, 1, 1}},
		{"/ai-sessions/queue?limit=500", []int{7}},
	} {
		sizes, got := s.pages(t, bob, c.path)
		if !slices.Equal(sizes, c.sizes) || !slices.Equal(ids(got), ids(whole)) {
			t.Errorf("%s: pages of %v holding %v, want pages of %v holding %v", c.path, sizes, ids(got), c.sizes, ids(whole))
		}
	}
	_, next = s.page(t, bob, "/ai-sessions/queue?limit=3")
	if !strings.HasPrefix(next, "/ai-sessions/queue?limit=3&cursor=") {
		t.Errorf("next page of the queue = %q, want /ai-sessions/queue?limit=3&cursor=...", next)
	}

	// A session with five handoffs: claims pass it between alice and bob.
	session := uuid.New()
	h := s.escalate(t, alice, session)
	for i := range 4 {
		claimer := []domain.Actor{bob, alice}[i%2]
		s.claim(t, claimer, h)
		h = s.escalate(t, claimer, session)
	}
	full := s.history(t, alice, session)
	if len(full) != 5 {
		t.Fatalf("history has %d handoffs, want 5", len(full))
	}
	sizes, got := s.pages(t, alice, historyPath(session)+"?limit=2")
	if !slices.Equal(sizes, []int{2, 2, 1}) || !slices.Equal(ids(got), ids(full)) {
		t.Errorf("history pages of %v holding %v, want pages of [2 2 1] holding %v", sizes, ids(got), ids(full))
	}
}

// testPageLimits checks that a limit that is not an integer from 1 to 500
// is refused with 422 on both lists.
func testPageLimits(t *testing.T, nb NewBackend) {
	s := startServer(t, nb)
	alice := newTeam().user(domain.RoleEngineer)
	const want = "limit must be an integer from 1 to 500"
	for _, list := range []string{"/ai-sessions/queue", historyPath(uuid.New())} {
		for _, q := range []string{"limit=0", "limit=-1", "limit=501", "limit=abc", "limit=1.5", "limit=", "limit=99999999999999999999", "limit=1&limit=2"} {
			s.expectError(t, as(t, alice, http.MethodGet, list+"?"+q, ""), http.StatusUnprocessableEntity, want)
		}
		s.do(t, as(t, alice, http.MethodGet, list+"?limit=500", ""), http.StatusOK)
	}
}

// testPageCursors checks that a cursor works only for the list and the
// caller it was made for: an altered, truncated or made-up cursor, or a
// valid one used on another list, by another team or by another account,
// is refused with 422 and shows nothing.
func testPageCursors(t *testing.T, nb NewBackend) {
	s := startServer(t, nb)
	tm := newTeam()
	alice, bob := tm.user(domain.RoleEngineer), tm.user(domain.RoleAdmin)
	h := s.escalate(t, alice, uuid.New())
	s.escalate(t, alice, uuid.New())
	session := uuid.New()
	first := s.escalate(t, alice, session)
	s.claim(t, bob, first)
	s.escalate(t, bob, session)

	_, queueNext := s.page(t, bob, "/ai-sessions/queue?limit=1")
	_, historyNext := s.page(t, bob, historyPath(session)+"?limit=1")
	if queueNext == "" || historyNext == "" {
		t.Fatalf("no next page: queue %q, history %q", queueNext, historyNext)
	}
	queueCursor := queueNext[strings.Index(queueNext, "cursor=")+len("cursor="):]
	historyCursor := historyNext[strings.Index(historyNext, "cursor=")+len("cursor="):]
	// The valid cursors work for the team and, for the history, any team
	// of the account.
	s.page(t, alice, queueNext)
	s.page(t, team{account: tm.account, id: uuid.New()}.user(domain.RoleViewer), historyNext)

	// One character of the sort key changed to another of the alphabet.
	altered := []byte(queueCursor)
	altered[5] = map[bool]byte{true: 'B', false: 'A'}[altered[5] == 'A']
	const want = "cursor is not valid for this list"
	stranger := newTeam().user(domain.RoleOwner)
	sameAccountOtherTeam := team{account: tm.account, id: uuid.New()}.user(domain.RoleOwner)
	for _, c := range []struct {
		actor domain.Actor
		path  string
	}{
		{bob, "/ai-sessions/queue?cursor=" + string(altered)},
		{bob, "/ai-sessions/queue?cursor=" + queueCursor[:len(queueCursor)-1]},
		{bob, "/ai-sessions/queue?cursor=" + queueCursor + "A"},
		{bob, "/ai-sessions/queue?cursor="},
		{bob, "/ai-sessions/queue?cursor=%21%21%21"},
		{bob, "/ai-sessions/queue?cursor=" + strings.Repeat("A", 56)},
		{bob, "/ai-sessions/queue?cursor=" + queueCursor + "&cursor=" + queueCursor},
		{bob, "/ai-sessions/queue?cursor=" + historyCursor},
		{bob, historyPath(session) + "?cursor=" + queueCursor},
		{bob, historyPath(h.SessionID) + "?cursor=" + historyCursor},
		{sameAccountOtherTeam, queueNext},
		{stranger, queueNext},
		{stranger, historyNext},
	} {
		s.expectError(t, as(t, c.actor, http.MethodGet, c.path, ""), http.StatusUnprocessableEntity, want)
	}
}
