package storetest

import (
	"context"
	"fmt"
	"testing"

	"github.com/google/uuid"

	"github.com/resolutionflow/ledgerd/eventcodec"
	"github.com/resolutionflow/ledgerd/eventstore"
)

// testReadAccount checks that ReadAccount reads exactly one account's
// events, whichever of its sessions they belong to, in position order,
// after any position (one of its own or another's) and within a limit.
func testReadAccount(t *testing.T, s eventstore.Store) {
	accounts := [2]uuid.UUID{uuid.New(), uuid.New()}
	sessions := [2]uuid.UUID{uuid.New(), uuid.New()}
	var log [2][]eventstore.Event
	version := map[string]int64{}
	for _, a := range []struct{ account, session, n int }{
		{0, 0, 2}, {1, 0, 1}, {0, 1, 1}, {1, 1, 2}, {0, 0, 1}, {1, 0, 3}, {0, 1, 2},
	} {
		// The same session ids in both accounts: different streams.
		stream := eventcodec.StreamName(accounts[a.account], sessions[a.session])
		recorded := mustAppend(t, s, stream, eventstore.Exact(version[stream]), newEvents("Logged", a.n)...)
		version[stream] += int64(a.n)
		log[a.account] = append(log[a.account], recorded...)
		mustAppend(t, s, fmt.Sprintf("other:%d", len(version)), eventstore.Any, newEvents("Other", 1)...)
	}
	ctx := t.Context()
	for i, account := range accounts {
		mine := log[i]
		got, err := s.ReadAccount(ctx, account, 0, 100)
		if err != nil {
			t.Fatalf("read account %d: %v", i, err)
		}
		assertSameEvents(t, fmt.Sprintf("account %d", i), got, mine)
		for k, e := range mine {
			page, err := s.ReadAccount(ctx, account, e.Position, 2)
			if err != nil {
				t.Fatalf("read account %d after %d: %v", i, e.Position, err)
			}
			assertSameEvents(t, fmt.Sprintf("account %d after %d limit 2", i, e.Position), page, mine[k+1:min(k+3, len(mine))])
		}
		// After a position of the other account's, the next of its own.
		theirs := log[1-i][2].Position
		page, err := s.ReadAccount(ctx, account, theirs, 1)
		if err != nil {
			t.Fatalf("read account %d after %d: %v", i, theirs, err)
		}
		for _, e := range mine {
			if e.Position > theirs {
				assertSameEvents(t, fmt.Sprintf("account %d after another's position", i), page, []eventstore.Event{e})
				break
			}
		}
	}
	none, err := s.ReadAccount(ctx, uuid.New(), 0, 100)
	if err != nil || len(none) != 0 {
		t.Fatalf("read an account without events = %d events, %v; want none", len(none), err)
	}
}

// testTailingReadAccount checks that a reader tailing one account's
// events while both accounts' writers append skips none of them.
func testTailingReadAccount(t *testing.T, s eventstore.Store) {
	accounts := [2]uuid.UUID{uuid.New(), uuid.New()}
	read := func(ctx context.Context, after int64, limit int) ([]eventstore.Event, error) {
		return s.ReadAccount(ctx, accounts[0], after, limit)
	}
	testTailing(t, s, read, func(w int) string { return eventcodec.StreamName(accounts[w%2], uuid.New()) }, func(w int) bool { return w%2 == 0 })
}
