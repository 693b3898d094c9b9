package commands_test

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/resolutionflow/ledgerd/commands"
	"github.com/resolutionflow/ledgerd/domain"
	"github.com/resolutionflow/ledgerd/eventcodec"
	"github.com/resolutionflow/ledgerd/eventstore"
	"github.com/resolutionflow/ledgerd/shred"
)

// countingLog is a real event store that counts the events its stream
// reads return.
type countingLog struct {
	eventLog
	read atomic.Int64
}

func (c *countingLog) ReadStreamAfter(ctx context.Context, stream string, after int64) ([]eventstore.Event, error) {
	events, err := c.eventLog.ReadStreamAfter(ctx, stream, after)
	c.read.Add(int64(len(events)))
	return events, err
}

// reads runs fn and returns how many events it read from the log.
func (c *countingLog) reads(fn func()) int64 {
	c.read.Store(0)
	fn()
	return c.read.Load()
}

// handBackAndForth makes two users of a team pass a session to each other
// rounds times: one escalates, the other claims, two events a round. It
// returns the users, in the order they began, and the creations.
func handBackAndForth(tb testing.TB, h *commands.Handler, session uuid.UUID, rounds int, each func(round int, created, claimed func())) ([2]domain.Actor, []domain.CreateHandoff) {
	tb.Helper()
	tm := newTeam()
	users := [2]domain.Actor{tm.user(domain.RoleEngineer), tm.user(domain.RoleAdmin)}
	made := make([]domain.CreateHandoff, rounds)
	for i := range rounds {
		holder, claimer := users[i%2], users[(i+1)%2]
		made[i] = create(holder, domain.IntentEscalate, domain.PriorityHigh, at(2*i))
		each(i,
			func() { execute(tb, h, holder, session, made[i]) },
			func() { execute(tb, h, claimer, session, claim(claimer, made[i].HandoffID, at(2*i+1))) })
	}
	return users, made
}

// TestExecute_LongStreamReadsBoundedEvents checks that a command costs the
// same on a long stream as on a short one: each command reads at most
// SnapshotEvery+1 events, the snapshot's own and those after it, and
// decides as on the whole stream.
func TestExecute_LongStreamReadsBoundedEvents(t *testing.T) {
	forEachBackend(t, func(t *testing.T, f *fixture) {
		log := &countingLog{eventLog: f.log}
		h := commands.NewHandler(log, nil)
		session := uuid.New()
		const bound = commands.SnapshotEvery + 1
		var most int64
		users, made := handBackAndForth(t, h, session, 4*commands.SnapshotEvery, func(round int, created, claimed func()) {
			most = max(most, log.reads(created), log.reads(claimed))
		})
		if most > bound {
			t.Errorf("a command on a stream of %d events read up to %d events, want at most %d", 8*commands.SnapshotEvery, most, bound)
		}
		// Decisions on the loaded state are those on the whole stream: the
		// first handoff, claimed long ago, names its claimer.
		var err error
		read := log.reads(func() {
			_, err = h.Execute(t.Context(), users[0], session, claim(users[0], made[0].HandoffID, at(9999)), commands.Trace{})
		})
		alreadyClaimed(users[1].UserID, at(1))(t, err)
		if read > bound {
			t.Errorf("a rejected claim read %d events, want at most %d", read, bound)
		}
	})
}

// TestExecute_UnusableSnapshotFallsBack checks that a snapshot that does not
// fit its stream is never used: the command folds the whole stream,
// decides as it should, and saves a good snapshot in its place.
func TestExecute_UnusableSnapshotFallsBack(t *testing.T) {
	forEachBackend(t, func(t *testing.T, f *fixture) {
		h := f.handler()
		session := uuid.New()
		rounds := commands.SnapshotEvery/2 + 2
		users, made := handBackAndForth(t, h, session, rounds, func(_ int, created, claimed func()) { created(); claimed() })
		account := users[0].AccountID
		stream := eventcodec.StreamName(account, session)
		good, found, err := f.log.Snapshot(t.Context(), stream)
		if err != nil || !found {
			t.Fatalf("no snapshot after %d events: %v", 2*rounds, err)
		}
		events := f.readStream(t, account, session)
		// The state of the session before its first event: were it used,
		// the commands below would be decided wrongly.
		empty, err := eventcodec.EncodeSnapshot(domain.NewSession(account, session))
		if err != nil {
			t.Fatal(err)
		}
		other := domain.NewSession(account, uuid.New())
		other.Version = good.Version
		otherSession, err := eventcodec.EncodeSnapshot(other)
		if err != nil {
			t.Fatal(err)
		}
		bad := map[string]eventstore.Snapshot{
			"not JSON":          {Data: []byte("\x00garbage")},
			"another format":    {Data: []byte(`{"format": 99}`)},
			"another session":   {Data: otherSession},
			"another version":   {Data: empty},
			"another event":     {EventID: events[good.Version].ID},
			"beyond the stream": {Version: int64(len(events)) + 5, EventID: events[len(events)-1].ID},
		}
		for name, change := range bad {
			t.Run(name, func(t *testing.T) {
				snap := good
				if change.Data != nil {
					snap.Data = change.Data
				}
				if change.EventID != "" {
					snap.EventID = change.EventID
				}
				if change.Version != 0 {
					snap.Version = change.Version
				}
				if err := f.log.SaveSnapshot(t.Context(), snap); err != nil {
					t.Fatal(err)
				}
				_, err := h.Execute(t.Context(), users[1], session, claim(users[1], made[0].HandoffID, at(9999)), commands.Trace{})
				alreadyClaimed(users[1].UserID, at(1))(t, err)
				holder := users[rounds%2]
				_, err = h.Execute(t.Context(), users[1-rounds%2], session, create(users[1-rounds%2], domain.IntentPark, domain.PriorityLow, at(9999)), commands.Trace{})
				rejectedWith(domain.ENOTFOUND, domain.MsgSessionNotFound)(t, err)
				c := create(holder, domain.IntentPark, domain.PriorityLow, at(9999))
				execute(t, h, holder, session, c)
				execute(t, h, holder, session, withdraw(holder, c.HandoffID, at(9999)))
				// The creation folded the whole stream and saved a good
				// snapshot, from which the withdrawal loaded.
				now, found, err := f.log.Snapshot(t.Context(), stream)
				latest := f.readStream(t, account, session)
				if err != nil || !found || now.Version != int64(len(latest))-1 || now.EventID != latest[now.Version-1].ID {
					t.Errorf("snapshot after the commands: version %d event %s (found %v, %v); want that of the creation, version %d",
						now.Version, now.EventID, found, err, len(latest)-1)
				}
			})
		}
	})
}

// TestExecute_ConcurrentClaimsOnASnapshotLoadedSession races claimers on
// the open handoff of a session long enough to load from a snapshot, with
// snapshots saved during the race: exactly one claim wins, and every other
// claimer gets "Handoff already claimed" naming the winner.
func TestExecute_ConcurrentClaimsOnASnapshotLoadedSession(t *testing.T) {
	forEachBackend(t, func(t *testing.T, f *fixture) {
		h := f.handler()
		session := uuid.New()
		// One event short of a new snapshot, so that the winning claim
		// saves one while the losers reload.
		users, _ := handBackAndForth(t, h, session, commands.SnapshotEvery-1, func(_ int, created, claimed func()) { created(); claimed() })
		holder := users[(commands.SnapshotEvery-1)%2]
		escalated := create(holder, domain.IntentEscalate, domain.PriorityUrgent, at(9000))
		execute(t, h, holder, session, escalated)
		tm := team{account: holder.AccountID, id: holder.TeamID}
		claims := make([]domain.ClaimHandoff, racers)
		for i := range claims {
			claims[i] = claim(tm.user(domain.RoleEngineer), escalated.HandoffID, at(9001).Add(time.Duration(i)*time.Microsecond))
		}
		outcomes := race(racers, func(i int) (commands.Result, error) {
			return h.Execute(t.Context(), claims[i].Actor, session, claims[i], commands.Trace{})
		})
		won := claims[winner(t, outcomes)]
		for _, o := range outcomes {
			if o.err != nil {
				alreadyClaimed(won.Actor.UserID, won.At)(t, o.err)
			}
		}
		events := f.readStream(t, tm.account, session)
		if len(events) != 2*commands.SnapshotEvery {
			t.Errorf("stream has %d events, want %d", len(events), 2*commands.SnapshotEvery)
		}
		snap, found, err := f.log.Snapshot(t.Context(), eventcodec.StreamName(tm.account, session))
		if err != nil || !found || snap.Version != int64(len(events)) || snap.EventID != events[len(events)-1].ID {
			t.Errorf("snapshot after the race: version %d (found %v, %v), want the winning claim's, version %d", snap.Version, found, err, len(events))
		}
	})
}

// TestExecute_SnapshotHoldsSealedNotes checks that a snapshot holds its
// open handoff's notes sealed under the session's data key, never in
// plaintext, and that a command decided on it answers with the notes as
// they were.
func TestExecute_SnapshotHoldsSealedNotes(t *testing.T) {
	forEachBackend(t, func(t *testing.T, f *fixture) {
		keys := testKeyring(t)
		h := commands.NewHandler(shred.NewStore(f.log, keys), nil, commands.WithKeyring(keys))
		tm := newTeam()
		engineer, admin := tm.user(domain.RoleEngineer), tm.user(domain.RoleAdmin)
		session := uuid.New()
		// A snapshot is saved by the command that takes the stream
		// SnapshotEvery past the last one. The erasure (one event, which
		// saves a snapshot) between an escalation and its withdrawal puts
		// creations on even versions, so that the creation at version
		// SnapshotEvery+2 saves the next one, its handoff open.
		first := create(engineer, domain.IntentEscalate, domain.PriorityHigh, at(0))
		execute(t, h, engineer, session, first)
		if _, err := h.Erase(t.Context(), admin, session, "test", commands.Trace{}); err != nil {
			t.Fatal(err)
		}
		execute(t, h, engineer, session, withdraw(engineer, first.HandoffID, at(1)))
		users := [2]domain.Actor{engineer, admin}
		const rounds = (commands.SnapshotEvery - 2) / 2
		for i := range rounds {
			holder, claimer := users[i%2], users[(i+1)%2]
			made := create(holder, domain.IntentEscalate, domain.PriorityHigh, at(2+2*i))
			execute(t, h, holder, session, made)
			execute(t, h, claimer, session, claim(claimer, made.HandoffID, at(3+2*i)))
		}
		const notes = "Jane Roe's VPN, host vpn-7"
		holder, claimer := users[rounds%2], users[(rounds+1)%2]
		last := create(holder, domain.IntentEscalate, domain.PriorityHigh, at(1000))
		last.Notes = notes
		execute(t, h, holder, session, last)
		snap, found, err := f.log.Snapshot(t.Context(), eventcodec.StreamName(tm.account, session))
		if err != nil || !found || snap.Version != commands.SnapshotEvery+2 {
			t.Fatalf("snapshot = version %d, found %v, %v; want one at version %d", snap.Version, found, err, commands.SnapshotEvery+2)
		}
		if strings.Contains(string(snap.Data), "Jane Roe") || !strings.Contains(string(snap.Data), "sealed:") {
			t.Fatalf("the snapshot holds the open handoff's notes unsealed: %s", snap.Data)
		}
		res := execute(t, h, claimer, session, claim(claimer, last.HandoffID, at(1001)))
		if res.Handoff.Notes != notes || res.Handoff.NotesErased {
			t.Fatalf("a claim decided on the snapshot answered %+v, want the notes", res.Handoff)
		}
	})
}

// testKeyring returns a keyring of a new master key.
func testKeyring(tb testing.TB) *shred.Keyring {
	tb.Helper()
	keys, err := shred.NewScratchKeyring()
	if err != nil {
		tb.Fatal(err)
	}
	return keys
}
