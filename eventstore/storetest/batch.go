package storetest

import (
	"encoding/json"
	"errors"
	"fmt"
	"testing"

	"github.com/oklog/ulid/v2"

	"github.com/resolutionflow/ledgerd/eventstore"
)

// batchRounds is how many times testBatchWithConflictingRows releases its
// appends together; a store that batches appends gathers some of them in
// each round.
const batchRounds = 12

// testBatchWithConflictingRows releases, all at once, appends that a store
// which writes concurrent appends together (group commit) puts in one
// batch: appends to new streams of their own, which must all succeed;
// appends racing for the first versions of one stream, one or two events
// each and each creating the stream's data key, of which exactly one wins
// whole, with its key, and the others get the typed conflict; two appends giving the same event id, of which one fails with
// an error that is not a conflict; an append whose data is not JSON; and
// appends after the last event of a stream with and without the previous
// hash (eventstore.AfterHash), one of them given a wrong hash. No append
// may fail because of another one in its batch, and none may be written
// in part.
func testBatchWithConflictingRows(t *testing.T, s eventstore.Store) {
	ctx := t.Context()
	var tips []eventstore.Event
	for i := range 3 {
		tips = append(tips, mustAppend(t, s, fmt.Sprintf("batch-tip-%d", i), eventstore.NoStream, newEvents("Tip", 1)...)[0])
	}
	for round := range batchRounds {
		contested := fmt.Sprintf("batch-contested-%d", round)
		sharedID := ulid.Make().String()
		type op struct {
			name string
			run  func() ([]eventstore.Event, error)
		}
		var ops []op
		for i := range 6 {
			stream := fmt.Sprintf("batch-own-%d-%d", round, i)
			ops = append(ops, op{"own", func() ([]eventstore.Event, error) {
				return s.Append(ctx, stream, eventstore.NoStream, newEvents("Own", 1+i%2))
			}})
		}
		// Each contested append also creates the stream's data key in the
		// same write: only the winner's may be left.
		for i := range 4 {
			key := eventstore.KeyChange{Create: &eventstore.DataKey{ID: fmt.Sprintf("key-%d-%d", round, i), Wrapped: []byte{byte(i)}, MasterKeyID: "master"}}
			ops = append(ops, op{"contested", func() ([]eventstore.Event, error) {
				return s.AppendKeyed(ctx, contested, eventstore.NoStream, key, newEvents("Contested", 1+i%2), true)
			}})
		}
		for i := range 2 {
			stream := fmt.Sprintf("batch-id-%d-%d", round, i)
			ops = append(ops, op{"shared-id", func() ([]eventstore.Event, error) {
				return s.Append(ctx, stream, eventstore.NoStream, []eventstore.NewEvent{{ID: sharedID, Type: "SharedID", Data: json.RawMessage(`{}`)}})
			}})
		}
		ops = append(ops, op{"bad-json", func() ([]eventstore.Event, error) {
			return s.Append(ctx, fmt.Sprintf("batch-bad-%d", round), eventstore.NoStream, []eventstore.NewEvent{{Type: "Bad", Data: json.RawMessage(`{"unterminated": `)}})
		}})
		tip0, tip1, tip2 := tips[0], tips[1], tips[2]
		ops = append(ops,
			op{"after-hash", func() ([]eventstore.Event, error) {
				return s.Append(ctx, tip0.Stream, eventstore.Exact(tip0.Version), newEvents("After", 1+round%2), eventstore.AfterHash(tip0.Hash))
			}},
			op{"after-version", func() ([]eventstore.Event, error) {
				return s.Append(ctx, tip1.Stream, eventstore.Exact(tip1.Version), newEvents("After", 1))
			}},
			op{"wrong-hash", func() ([]eventstore.Event, error) {
				return s.Append(ctx, tip2.Stream, eventstore.Exact(tip2.Version), newEvents("Wrong", 1), eventstore.AfterHash(eventstore.Hash{1}))
			}},
		)
		results := race(len(ops), func(w int) ([]eventstore.Event, error) { return ops[w].run() })
		var contestedWins, sharedWins int
		for w, r := range results {
			switch name := ops[w].name; name {
			case "own", "after-hash", "after-version":
				if r.err != nil {
					t.Fatalf("round %d: %s append failed: %v", round, name, r.err)
				}
				switch name {
				case "after-hash":
					tips[0] = r.events[len(r.events)-1]
				case "after-version":
					tips[1] = r.events[0]
				}
			case "contested":
				if r.err != nil {
					assertConflict(t, r.err, contested, eventstore.NoStream)
					continue
				}
				contestedWins++
				stored := mustReadStream(t, s, contested)
				if want := fmt.Sprintf("key-%d-%d", round, w-6); len(stored) == 0 || stored[0].DataKey == nil || stored[0].DataKey.ID != want {
					t.Errorf("round %d: contested stream's data key = %+v, want the winner's %s", round, stored[0].DataKey, want)
				}
				for i := range stored {
					stored[i].DataKey = nil
				}
				assertSameEvents(t, "contested stream", stored, r.events)
			case "shared-id":
				if r.err == nil {
					sharedWins++
				} else if errors.Is(r.err, eventstore.ErrConflict) {
					t.Errorf("round %d: append reusing an event id: err = %v, want an error that is not a conflict", round, r.err)
				}
			case "bad-json":
				if r.err == nil {
					t.Errorf("round %d: append of data that is not JSON succeeded", round)
				}
			case "wrong-hash":
				assertConflict(t, r.err, tip2.Stream, eventstore.Exact(tip2.Version))
			}
		}
		if contestedWins != 1 || sharedWins != 1 {
			t.Fatalf("round %d: %d contested appends and %d appends sharing an event id succeeded, want 1 of each", round, contestedWins, sharedWins)
		}
	}
	log := ReadLog(t, s, 0)
	assertStreamsInLogOrder(t, log)
	AssertChained(t, log)
	for _, e := range log {
		if e.Type == "Bad" || e.Type == "Wrong" {
			t.Errorf("the log holds %q event %s from a failed append", e.Type, e.ID)
		}
	}
	if n := len(mustReadStream(t, s, tips[2].Stream)); n != 1 {
		t.Errorf("stream %q has %d events, want only its first", tips[2].Stream, n)
	}
}
