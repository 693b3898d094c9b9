package storetest

import (
	"cmp"
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/resolutionflow/ledgerd/domain"
	"github.com/resolutionflow/ledgerd/projections"
)

// pageSize is the page size of the contract's reads: small, so that every
// test that reads a list also pages through it.
const pageSize = 7

// list is one of the two lists: how to read a page of it and where a
// handoff sits in it.
type list struct {
	read  func(ctx context.Context, page projections.Page) ([]domain.Handoff, error)
	place func(domain.Handoff) projections.Cursor
	// before reports whether a cursor comes before another in the list.
	before func(a, b projections.Cursor) bool
}

func queueList(q projections.Queries, account, team uuid.UUID) list {
	return list{
		read: func(ctx context.Context, page projections.Page) ([]domain.Handoff, error) {
			return q.Queue(ctx, account, team, page)
		},
		place:  projections.QueueCursor,
		before: func(a, b projections.Cursor) bool { return compareCursors(a, b) < 0 },
	}
}

func accountQueueList(q projections.Queries, account uuid.UUID) list {
	return list{
		read: func(ctx context.Context, page projections.Page) ([]domain.Handoff, error) {
			return q.AccountQueue(ctx, account, page)
		},
		place:  projections.QueueCursor,
		before: func(a, b projections.Cursor) bool { return compareCursors(a, b) < 0 },
	}
}

func historyList(q projections.Queries, account, session uuid.UUID) list {
	return list{
		read: func(ctx context.Context, page projections.Page) ([]domain.Handoff, error) {
			return q.History(ctx, account, session, page)
		},
		place:  projections.HistoryCursor,
		before: func(a, b projections.Cursor) bool { return compareCursors(a, b) > 0 },
	}
}

// compareCursors orders cursors as the queue does; the history is the
// reverse order (its Class is always 0).
func compareCursors(a, b projections.Cursor) int {
	return cmp.Or(cmp.Compare(a.Class, b.Class), a.CreatedAt.Compare(b.CreatedAt), cmp.Compare(a.ID.String(), b.ID.String()))
}

// readPages reads l a page of size handoffs at a time until a page comes
// back short, and returns the pages one after the other. between, when not
// nil, runs after each full page with the place of its last handoff.
func readPages(ctx context.Context, l list, size int, between func(after projections.Cursor) error) ([]domain.Handoff, error) {
	var (
		all   []domain.Handoff
		after *projections.Cursor
	)
	for {
		page, err := l.read(ctx, projections.Page{Limit: size, After: after})
		if err != nil {
			return nil, fmt.Errorf("page after %d handoffs: %w", len(all), err)
		}
		if len(page) > size {
			return nil, fmt.Errorf("page after %d handoffs has %d handoffs, more than its limit %d", len(all), len(page), size)
		}
		all = append(all, page...)
		if len(page) < size {
			return all, nil
		}
		c := l.place(page[len(page)-1])
		after = &c
		if between != nil {
			if err := between(c); err != nil {
				return nil, err
			}
		}
	}
}

// Queue returns the whole queue of a team of an account, read a page at a
// time.
func Queue(tb testing.TB, q projections.Queries, account, team uuid.UUID) []domain.Handoff {
	tb.Helper()
	hs, err := readPages(tb.Context(), queueList(q, account, team), pageSize, nil)
	if err != nil {
		tb.Fatalf("queue of team %s: %v", team, err)
	}
	return hs
}

// History returns the whole history of a session of an account, read a
// page at a time.
func History(tb testing.TB, q projections.Queries, account, session uuid.UUID) []domain.Handoff {
	tb.Helper()
	hs, err := readPages(tb.Context(), historyList(q, account, session), pageSize, nil)
	if err != nil {
		tb.Fatalf("history of session %s: %v", session, err)
	}
	return hs
}

// mixedQueue returns n open handoffs of sc of every intent and priority,
// many of them created at the same instant, so that the id breaks ties.
func mixedQueue(sc scope, n int) []domain.Handoff {
	intents := []domain.Intent{domain.IntentPark, domain.IntentEscalate}
	out := make([]domain.Handoff, n)
	for i := range out {
		out[i] = sc.handoff(intents[rand.N(2)], priorities[rand.N(len(priorities))], base.Add(time.Duration(rand.N(4))*time.Minute))
	}
	return out
}

// testPages checks one list's pages against its whole: with no changes
// between pages, pages of any size concatenate to exactly the list read at
// once; with handoffs added between pages, each page starts right after the
// last handoff of the page before, so the pages hold every handoff that was
// there at the start exactly once, in order, and an added handoff exactly
// when it sorts after the page it was added behind.
func testPages(t *testing.T, s projections.Store, l list, made func(n int) []domain.Handoff) {
	initial := made(40)
	put(t, s, initial...)
	whole, err := l.read(t.Context(), projections.Page{Limit: projections.MaxPageSize})
	if err != nil {
		t.Fatal(err)
	}
	sorted := slices.SortedFunc(slices.Values(initial), func(a, b domain.Handoff) int {
		if l.before(l.place(a), l.place(b)) {
			return -1
		}
		return 1
	})
	wantHandoffs(t, "the list read at once", whole, sorted)
	for _, size := range []int{1, 3, 40, 41} {
		got, err := readPages(t.Context(), l, size, nil)
		if err != nil {
			t.Fatal(err)
		}
		wantHandoffs(t, fmt.Sprintf("pages of %d", size), got, whole)
	}

	want := slices.Clone(whole)
	got, err := readPages(t.Context(), l, 6, func(after projections.Cursor) error {
		added := made(3)
		put(t, s, added...)
		for _, h := range added {
			if l.before(after, l.place(h)) {
				want = append(want, h)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.SortFunc(want, func(a, b domain.Handoff) int {
		if l.before(l.place(a), l.place(b)) {
			return -1
		}
		return 1
	})
	wantHandoffs(t, "pages with handoffs added between them", got, want)
}

func testQueuePages(t *testing.T, s projections.Store) {
	sc := newScope()
	put(t, s, newScope().handoff(domain.IntentEscalate, domain.PriorityUrgent, base)) // another account's
	testPages(t, s, queueList(s, sc.account, sc.team), func(n int) []domain.Handoff { return mixedQueue(sc, n) })
}

// testAccountQueuePages checks the queue of a whole account: the open
// handoffs of all its teams in one queue, and none of another account's.
func testAccountQueuePages(t *testing.T, s projections.Store) {
	teams := []scope{newScope(), newScope()}
	teams[1].account = teams[0].account
	other := newScope()
	put(t, s, other.handoff(domain.IntentEscalate, domain.PriorityUrgent, base))
	put(t, s, claimed(teams[0].handoff(domain.IntentEscalate, domain.PriorityUrgent, base), base.Add(time.Minute)))
	testPages(t, s, accountQueueList(s, teams[0].account), func(n int) []domain.Handoff {
		hs := mixedQueue(teams[0], n)
		for i := range hs {
			if i%2 == 1 {
				hs[i].TeamID = teams[1].team
			}
		}
		return hs
	})
}

func testHistoryPages(t *testing.T, s projections.Store) {
	sc := newScope()
	session := uuid.New()
	theirs := newScope().handoff(domain.IntentEscalate, domain.PriorityUrgent, base)
	theirs.SessionID = session // another account's session with the same id
	put(t, s, theirs)
	testPages(t, s, historyList(s, sc.account, session), func(n int) []domain.Handoff {
		hs := mixedQueue(sc, n)
		for i := range hs {
			hs[i].SessionID = session
			if i%2 == 0 {
				hs[i] = claimed(hs[i], base.Add(time.Hour))
			}
		}
		return hs
	})
}

// testPageAfterVanishedHandoff checks that a page may start after a
// handoff that has left the list since (claimed off the queue): the cursor
// is a place in the order, not a row.
func testPageAfterVanishedHandoff(t *testing.T, s projections.Store) {
	sc := newScope()
	hs := mixedQueue(sc, 10)
	put(t, s, hs...)
	whole := queue(t, s, sc)
	put(t, s, claimed(whole[4], base.Add(time.Hour)))
	c := projections.QueueCursor(whole[4])
	got, err := s.Queue(t.Context(), sc.account, sc.team, projections.Page{Limit: 10, After: &c})
	if err != nil {
		t.Fatal(err)
	}
	wantHandoffs(t, "the page after a claimed handoff", got, whole[5:])
}
