package pgstore_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/resolutionflow/ledgerd/eventstore"
	"github.com/resolutionflow/ledgerd/eventstore/pgstore"
	"github.com/resolutionflow/ledgerd/internal/ratiobench"
)

// benchData, the appended event's data, is the baseline's row payload.
var benchData = []byte(ratiobench.BaselineEvent)

// benchWrapped is the size of a wrapped data key: a nonce, 32 bytes and
// a tag.
var benchWrapped = make([]byte, 12+32+16)

var benchMeta = eventstore.Metadata{
	ActorID: "9a1b2c3d-4e5f-4a6b-8c7d-0e1f2a3b4c5d", AccountID: "1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d",
	TeamID: "2b3c4d5e-6f7a-4b8c-9d0e-1f2a3b4c5d6e", Role: "engineer", RequestID: "01JDJ0000000000000000000",
}

// benchMetaJSON is benchMeta as the store writes it, for the unchained
// form's plain INSERT.
var benchMetaJSON = benchMeta.AppendJSON(nil)

// BenchmarkAppend compares the ledger's append (one event per transaction)
// with the baseline, a plain single-row INSERT into a table with
// UNIQUE(stream, version), on the same server in the same run, from 1 and
// from 16 writers. The two run in alternating slices and the baseline-ratio
// metric is the append's throughput over the baseline's (the target at 16
// writers is at least 0.8). It measures three forms of the append:
// AppendNoReadBack to a new stream, which the command handler uses for a
// session's first handoff; Append to a new stream, which also reads back
// the positions the events got; and AppendNoReadBack after the last event of a
// stream ("chained", each writer on a stream of its own), giving the hash
// of the event it follows (eventstore.AfterHash) as the command handler
// does, and reading back the new event's. "quick-keyed" is "quick" with
// the session's new data key inserted by the same statement, as the
// command handler appends a session's first handoff (issue 15): its ratio
// beside "quick"'s is the key's cost. "unchained" is the same row as
// "chained", written by a plain INSERT after its stream's last version
// with zero hashes and no check of the event it follows: the append
// without the hash chain, so that "chained" beside it is the chain's cost,
// measured in the same run.
func BenchmarkAppend(b *testing.B) {
	pool := openPool(b)
	baseline := ratiobench.PostgresBaseline(b, pool)
	store := pgstore.New(pool)
	prefix := ulid.Make().String()
	var n atomic.Int64
	newStream := func() string { return fmt.Sprintf("%s-%d", prefix, n.Add(1)) }
	newEvents := func() []eventstore.NewEvent {
		return []eventstore.NewEvent{{Type: "HandoffEscalated", Data: benchData, Metadata: benchMeta}}
	}
	// Each worker's own stream's last event, for appends that follow it
	// and give its hash, as the command handler does.
	var (
		tips      [16]eventstore.Event
		unchained [16]int64
	)
	zero := make([]byte, 32)
	forms := []struct {
		name string
		op   ratiobench.Op
	}{
		{"quick", func(ctx context.Context, _ int) error {
			return store.AppendNoReadBack(ctx, newStream(), eventstore.NoStream, newEvents())
		}},
		{"quick-keyed", func(ctx context.Context, _ int) error {
			key := eventstore.KeyChange{Create: &eventstore.DataKey{ID: "0123456789abcdef", Wrapped: benchWrapped, MasterKeyID: "fedcba9876543210"}}
			_, err := store.AppendKeyed(ctx, newStream(), eventstore.NoStream, key, newEvents(), false)
			return err
		}},
		{"read-back", func(ctx context.Context, _ int) error {
			_, err := store.Append(ctx, newStream(), eventstore.NoStream, newEvents())
			return err
		}},
		{"chained", func(ctx context.Context, w int) error {
			opts := []eventstore.AppendOption{}
			if tips[w].Version > 0 {
				opts = append(opts, eventstore.AfterHash(tips[w].Hash))
			}
			recorded, err := store.Append(ctx, fmt.Sprintf("%s-chain-%d", prefix, w), eventstore.Exact(tips[w].Version), newEvents(), opts...)
			if err == nil {
				tips[w] = recorded[0]
			}
			return err
		}},
		{"unchained", func(ctx context.Context, w int) error {
			e := newEvents()[0]
			_, err := pool.Exec(ctx, `INSERT INTO events (id, stream, version, type, data, metadata, recorded_at, prev_hash, hash)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)`, ulid.Make().String(), fmt.Sprintf("%s-unchained-%d", prefix, w), unchained[w]+1,
				e.Type, []byte(e.Data), benchMetaJSON, eventstore.RecordTime(time.Now()), zero)
			if err == nil {
				unchained[w]++
			}
			return err
		}},
	}
	for _, writers := range []int{1, 16} {
		if int(pool.Config().MaxConns) < writers {
			b.Fatalf("pool has %d connections, need %d", pool.Config().MaxConns, writers)
		}
		for _, form := range forms {
			b.Run(fmt.Sprintf("%s/writers=%d", form.name, writers), func(b *testing.B) {
				b0, _ := store.Batched()
				ratiobench.Run(b, writers, baseline, form.op, nil)
				b1, _ := store.Batched()
				b.ReportMetric(float64(b1-b0)/float64(b.N), "batched/op")
			})
		}
	}
}
